"""Shared fixtures: small synthetic videos (written once per session) and broken files of every kind."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from pg_server import pg_server, pg_url  # noqa: F401  (fixtures: a throw-away PostgreSQL server)

from vtr.data.video_writer import write_video


@pytest.fixture
def one_thread():
    """One torch thread for the test: on the shared 2-core machine, threads that wait on each other make small
    ops many times slower (training steps, many tiny sampling calls)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_faiss_thread():
    """FAISS's OpenMP threads busy-wait: on a shared, loaded CPU k-means gets 100x slower (7 s vs 0.05 s)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def tiny_model(depth: int = 2, seed: int = 0, img_size: int = 64, num_frames: int = 4):
    """The small retrieval model of the index/search/eval tests: VideoMamba-Ti cut to ``depth`` layers at
    ``img_size`` px, the packaged MiniLM text tower (random heads, seeded)."""
    from vtr.model.retrieval import build_model, config_for

    torch.manual_seed(seed)
    return build_model(config_for("videomamba_t16_minilm", img_size=img_size, num_frames=num_frames,
                                  vision={"depth": depth}))


def tiny_model_dir(path: Path, depth: int = 2, seed: int = 0) -> Path:
    """:func:`tiny_model` saved as a vtr model directory at ``path``."""
    from vtr.model.registry import save_model_dir

    return save_model_dir(tiny_model(depth, seed), path)


def id_frames(num: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Gray frames whose index is readable back after lossy coding (see :func:`frame_ids`).

    The left half holds ``index % 16`` and the right half ``index // 16`` as gray levels ``16 * k + 8``.
    """
    frames = np.empty((num, height, width, 3), np.uint8)
    for t in range(num):
        frames[t, :, : width // 2] = 16 * (t % 16) + 8
        frames[t, :, width // 2 :] = 16 * (t // 16) + 8
    return frames


def frame_ids(frames: np.ndarray) -> list[int]:
    """Read back the index painted by :func:`id_frames` into each of ``frames`` ([T, H, W, 3])."""
    w = frames.shape[2]
    inner = max(1, w // 8)
    left = frames[:, :, inner : w // 2 - inner].astype(np.float64).mean(axis=(1, 2, 3))
    right = frames[:, :, w // 2 + inner : w - inner].astype(np.float64).mean(axis=(1, 2, 3))
    low = np.round((left - 8) / 16).astype(int)
    high = np.round((right - 8) / 16).astype(int)
    return [int(h * 16 + lo) for lo, h in zip(low, high, strict=True)]


def _remux_faststart(src: Path, dst: Path) -> Path:
    """Copy ``src``'s video packets into ``dst`` with the moov atom at the front (``+faststart``)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)
    return dst


def _write_audio_only(path: Path, codec: str = "aac") -> Path:
    """A short silent mono audio file with no video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=16000)
        stream.layout = "mono"
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            frame.pts = i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write_no_frames_avi(path: Path) -> Path:
    """An AVI whose video stream has no frames at all."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def clip_video(media_dir: Path) -> Path:
    """24 frames, 64x48, 8 fps (3 s); frame ``t`` shows id ``t``."""
    return write_video(media_dir / "clip.mp4", id_frames(24), fps=8)


@pytest.fixture(scope="session")
def long_video(media_dir: Path) -> Path:
    """160 frames, 64x32, 16 fps (10 s), a keyframe every 16 frames; frame ``t`` shows id ``t``."""
    path = media_dir / "long.mp4"
    frames = id_frames(160, height=32, width=64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18", "g": "16", "keyint_min": "16"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def narrow_video(media_dir: Path) -> Path:
    """12 frames, 48x32 (a width decord 0.6 cannot convert), 8 fps; frame ``t`` shows id ``t``."""
    return write_video(media_dir / "narrow.mp4", id_frames(12, height=32, width=48), fps=8)


@pytest.fixture(scope="session")
def image_file(media_dir: Path) -> Path:
    """A 40x60 RGB PNG."""
    from PIL import Image

    array = np.zeros((40, 60, 3), np.uint8)
    array[..., 0] = 200
    array[:, 30:, 1] = 100
    path = media_dir / "still.png"
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="session")
def bad_files(media_dir: Path, clip_video: Path) -> dict[str, Path]:
    """Broken inputs by name. Plain mp4s from :func:`write_video` keep the moov atom at the end."""
    bad = media_dir / "bad"
    bad.mkdir()
    data = clip_video.read_bytes()
    faststart = _remux_faststart(clip_video, bad / "faststart.mp4").read_bytes()
    files = {
        "empty": bad / "empty.mp4",
        "text": bad / "text.mp4",
        "trunc30": bad / "trunc30.mp4",
        "trunc90": bad / "trunc90.mp4",
        "faststart_trunc30": bad / "faststart_trunc30.mp4",
        "faststart_trunc90": bad / "faststart_trunc90.mp4",
        "garbled": bad / "garbled.mp4",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is a caption file, not a video\n" * 20)
    files["trunc30"].write_bytes(data[: int(len(data) * 0.3)])
    files["trunc90"].write_bytes(data[: int(len(data) * 0.9)])
    files["faststart_trunc30"].write_bytes(faststart[: int(len(faststart) * 0.3)])
    files["faststart_trunc90"].write_bytes(faststart[: int(len(faststart) * 0.9)])
    garbled = bytearray(data)
    noise = np.random.default_rng(1).integers(0, 256, len(data) // 2 - 200, np.uint8)
    garbled[200 : len(data) // 2] = noise.tobytes()
    files["garbled"].write_bytes(bytes(garbled))
    files["audio_m4a"] = _write_audio_only(bad / "audio.m4a")
    files["audio_mp4"] = _write_audio_only(bad / "audio.mp4")
    files["no_frames"] = _write_no_frames_avi(bad / "no_frames.avi")
    return files


@pytest.fixture(scope="session")
def read_ids():
    """The :func:`frame_ids` helper, as a fixture (so test modules need not import conftest)."""
    return frame_ids
