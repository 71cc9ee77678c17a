"""The towers: VideoMamba (with its selective-scan backends), the BERT text encoder, the CLIP teacher, and
checkpoint import. Imports nothing from ``vtr.model`` (the recipe sits above the towers).

The names people import load on first use (``import vtr.encoders`` stays light)::

    from vtr.encoders import create_video_encoder, create_text_encoder, list_video_encoders
"""

from __future__ import annotations

_LAZY = {
    "create_video_encoder": "vtr.encoders.videomamba",
    "list_video_encoders": "vtr.encoders.videomamba",
    "VideoMamba": "vtr.encoders.videomamba",
    "VideoMambaConfig": "vtr.encoders.videomamba",
    "create_text_encoder": "vtr.encoders.bert",
    "list_text_encoders": "vtr.encoders.bert",
    "TextEncoder": "vtr.encoders.bert",
    "create_clip_teacher": "vtr.encoders.clip_teacher",
    "load_video_encoder": "vtr.encoders.checkpoint",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vtr.encoders' has no attribute {name!r}")
