"""Content hashes of files (checkpoints, annotations, indexed videos, FAISS files)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike | bytes, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-sized blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
