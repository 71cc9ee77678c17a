"""The stored-vector format: what a video segment and a text query become in the FAISS index.

A segment's stored vector is ``[m, sqrt(1 - |m|^2), 0...]`` with ``m`` the mean of the L2-normalised per-frame
features, and a text query is ``[q, 0, 0...]`` with ``q`` its normalised feature: both are unit vectors and their
inner product is ``q . m``, exactly the official score (mean over frames of per-frame cosine), so FAISS's
cosine search ranks like the paper's dual encoder. The padding (:data:`EXTRA_DIMS` = 64, so 512-d features give
576-d vectors) keeps the width divisible by the usual PQ sizes (``PQ8/16/32/48/64/96``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EXTRA_DIMS", "index_vectors", "query_vectors", "stored_width"]

EXTRA_DIMS = 64


def stored_width(embed_dim: int) -> int:
    """Width of the stored vectors of a model whose features are ``embed_dim`` wide."""
    return int(embed_dim) + EXTRA_DIMS


def _as_float32(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (any device / dtype)
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def index_vectors(frame_embeds: Any) -> np.ndarray:
    """[S, T, D] per-frame features (array or tensor) -> [S, D + EXTRA_DIMS] unit vectors whose inner product with
    :func:`query_vectors` is the official frame-mean cosine."""
    m = _normalise(_as_float32(frame_embeds)).mean(1)
    rest = np.sqrt(np.clip(1.0 - np.square(m).sum(-1, keepdims=True), 0.0, None))
    pad = np.zeros((m.shape[0], EXTRA_DIMS - 1), np.float32)
    return np.concatenate([m, rest, pad], axis=-1).astype(np.float32, copy=False)


def query_vectors(text_embeds: Any) -> np.ndarray:
    """[Q, D] text features (array or tensor) -> [Q, D + EXTRA_DIMS] unit queries (zeros in the extra dims)."""
    q = _normalise(_as_float32(text_embeds))
    return np.concatenate([q, np.zeros((q.shape[0], EXTRA_DIMS), np.float32)], axis=-1)
