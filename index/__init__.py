"""The searchable store: the SQLAlchemy catalog (point of truth), the FAISS index derived from it, the stored-vector
format, planning of incremental runs and the writer's lock. ``vtr.Library`` (vtr/library.py) is the entry class;
``vtr.index.store.LibraryStore`` is the store one index at a time."""
