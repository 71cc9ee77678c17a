"""Indexing engines other than the local one (``vtr index --engine ...``): :mod:`vtr.engines.ray_engine`."""
