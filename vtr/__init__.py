"""vtr: video-text retrieval with VideoMamba and BERT."""

from vtr.home import set_offline as _set_offline

__version__ = "0.1.0"

_set_offline()


def __getattr__(name: str):
    # Heavy entry points load on first use, so `import vtr` (and `vtr --help`) stays fast.
    if name == "create_model":
        from vtr.model.registry import create_model

        return create_model
    if name == "list_models":
        from vtr.model.retrieval import list_models

        return list_models
    raise AttributeError(f"module 'vtr' has no attribute {name!r}")
