"""vtr: video-text retrieval with VideoMamba and BERT."""

__version__ = "0.1.0"
