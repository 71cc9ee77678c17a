"""vtr: video-text retrieval with VideoMamba and BERT."""

from vtr.home import set_offline as _set_offline

__version__ = "0.1.0"

_set_offline()
