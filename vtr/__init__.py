"""vtr: video-text retrieval with VideoMamba and BERT.

The names people import: ``vtr.Library`` (index and search a video library), ``vtr.create_model`` /
``vtr.list_models`` (the model registry). They load on first use, so ``import vtr`` (and ``vtr --help``) stays fast.
"""

from vtr.runtime import set_offline as _set_offline

__version__ = "0.1.0"
__all__ = ["Library", "create_model", "list_models"]

_set_offline()


def __getattr__(name: str):
    if name == "Library":
        from vtr.library import Library

        return Library
    if name == "create_model":
        from vtr.model.registry import create_model

        return create_model
    if name == "list_models":
        from vtr.model.retrieval import list_models

        return list_models
    raise AttributeError(f"module 'vtr' has no attribute {name!r}")
