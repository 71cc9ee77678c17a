"""Write uint8 frames to an H.264 mp4 with PyAV (used by the synthetic world and by tests)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18, threads: int = 1) -> Path:
    """Encode ``frames`` ([T, H, W, 3] uint8 RGB, even H and W) as H.264/yuv420p in an mp4 file.

    libx264's output depends on its thread count; the default of one thread makes the bytes identical on
    every machine (the synthetic world is deterministic for a seed).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {h}x{w}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": str(crf), "threads": str(threads)}
        for frame in frames:
            vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vframe):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
