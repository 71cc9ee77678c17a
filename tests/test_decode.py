"""Decoding: decord and PyAV agree, decord falls back to PyAV, and every bad file raises VideoDecodeError."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vtr.data import decode
from vtr.data.decode import probe_video, read_frames, read_image
from vtr.errors import ConfigError, VideoDecodeError

needs_decord = pytest.mark.skipif(not decode.decord_available(), reason="decord is not installed")
BACKENDS = [pytest.param("decord", marks=needs_decord), "pyav"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_probe(clip_video: Path, backend: str) -> None:
    info = probe_video(clip_video, backend=backend)
    assert (info.num_frames, info.fps, info.duration) == (24, 8.0, 3.0)
    assert (info.width, info.height) == (64, 48)
    assert info.backend == backend and info.path == str(clip_video)


@pytest.mark.parametrize("backend", BACKENDS)
def test_read_frames_middle(clip_video: Path, backend: str, read_ids) -> None:
    clip = read_frames(clip_video, 8, "middle", backend=backend)
    assert clip.indices == [1, 4, 7, 10, 13, 16, 19, 22]
    assert clip.frames.shape == (8, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert read_ids(clip.frames) == clip.indices  # the decoded frames are the requested ones
    assert (clip.vlen, clip.fps, clip.duration) == (24, 8.0, 3.0)
    assert clip.timestamps == [i / 8 for i in clip.indices]
    assert clip.backend == backend


@needs_decord
@pytest.mark.parametrize("strategy", ["middle", "uniform"])
def test_decord_and_pyav_decode_the_same_frames(clip_video: Path, strategy: str) -> None:
    a = read_frames(clip_video, 12, strategy, backend="decord")
    b = read_frames(clip_video, 12, strategy, backend="pyav")
    assert a.indices == b.indices
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1


def test_repeated_indices_of_a_short_video(clip_video: Path, read_ids) -> None:
    clip = read_frames(clip_video, 30, "middle")  # 24 frames < 30: padded with the last index
    assert clip.indices[-7:] == [23] * 7
    assert read_ids(clip.frames) == clip.indices


def test_rand_is_reproducible(clip_video: Path, read_ids) -> None:
    a = read_frames(clip_video, 4, "rand", rng=np.random.default_rng(3))
    b = read_frames(clip_video, 4, "rand", rng=np.random.default_rng(3))
    assert a.indices == b.indices and np.array_equal(a.frames, b.frames)
    assert read_ids(a.frames) == a.indices


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_seconds_trims(long_video: Path, backend: str, read_ids) -> None:
    clip = read_frames(long_video, 8, "middle", max_seconds=5, backend=backend)  # 10 s video, 16 fps
    assert clip.vlen == 160 and clip.duration == 10.0
    # first 80 frames: edges int(linspace(0, 80, 9)) = 0,10,...,80 -> middles 4, 14, ..., 74
    assert clip.indices == [4, 14, 24, 34, 44, 54, 64, 74]
    assert read_ids(clip.frames) == clip.indices


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window", [(2.0, 4.0), (8.0, 10.0), (9.5, 30.0)])
def test_window(long_video: Path, backend: str, window: tuple[float, float], read_ids) -> None:
    clip = read_frames(long_video, 4, "middle", window=window, backend=backend)
    first, stop = int(window[0] * 16), min(160, int(window[1] * 16))
    assert all(first <= i < stop for i in clip.indices)
    assert read_ids(clip.frames) == clip.indices  # PyAV seeks for late windows and must land right


def test_pyav_seek_path_matches_sequential(
    long_video: Path, monkeypatch: pytest.MonkeyPatch, read_ids
) -> None:
    sequential = read_frames(long_video, 6, "middle", window=(3.0, 9.0), backend="pyav")
    monkeypatch.setattr(decode, "PYAV_SEEK_MIN_FRAMES", 0)
    seeked = read_frames(long_video, 6, "middle", window=(3.0, 9.0), backend="pyav")
    assert seeked.indices == sequential.indices
    assert np.array_equal(seeked.frames, sequential.frames)
    assert read_ids(seeked.frames) == seeked.indices


def test_pyav_clean_early_end_repeats_last_frame(clip_video: Path, read_ids) -> None:
    # A header that promises more frames than the stream holds (no decode error): the frames past the
    # end repeat the last decoded one instead of failing the whole clip.
    source = decode._PyAVSource(str(clip_video))
    try:
        assert read_ids(source.get([22, 29, 31])) == [22, 23, 23]
        assert read_ids(source.get([0, 5])) == [0, 5]  # a second call starts from the top again
    finally:
        source.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_at_decode(clip_video: Path, backend: str) -> None:
    clip = read_frames(clip_video, 3, backend=backend, size=(24, 32))
    assert clip.frames.shape == (3, 24, 32, 3)


@needs_decord
def test_fallback_to_pyav_when_decord_fails(clip_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = read_frames(clip_video, 8, backend="decord")

    class Broken:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("simulated decord failure")

    monkeypatch.setattr(decode, "_DecordSource", Broken)
    clip = read_frames(clip_video, 8)
    assert clip.backend == "pyav"
    assert clip.indices == expected.indices
    assert np.abs(clip.frames.astype(int) - expected.frames.astype(int)).max() <= 1
    # asked for decord only, the failure is classified (the file itself is fine -> corrupt per decord)
    with pytest.raises(VideoDecodeError) as info:
        read_frames(clip_video, 8, backend="decord")
    assert info.value.reason == "corrupt" and "simulated" in info.value.detail


def test_fallback_when_decord_is_missing(clip_video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "_import_decord", lambda: None)
    assert read_frames(clip_video, 2).backend == "pyav"
    assert probe_video(clip_video).backend == "pyav"
    with pytest.raises(ConfigError):
        read_frames(clip_video, 2, backend="decord")


def test_unknown_backend_and_bad_arguments(clip_video: Path) -> None:
    with pytest.raises(ConfigError):
        read_frames(clip_video, backend="opencv")
    with pytest.raises(ValueError):
        read_frames(clip_video, 0)
    with pytest.raises(ValueError):
        read_frames(clip_video, 4, "bogus")


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_utf8_file_name(clip_video: Path, tmp_path: Path, backend: str, read_ids) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"clip_\xff\xfe name.mp4")
    try:
        shutil.copyfile(os.fsencode(clip_video), raw)
    except OSError as exc:  # a filesystem that insists on UTF-8 names
        pytest.skip(f"cannot create a non-UTF-8 file name here: {exc}")
    for path in (raw, os.fsdecode(raw)):
        clip = read_frames(path, 4, backend=backend)
        assert clip.backend == backend and read_ids(clip.frames) == clip.indices
        assert probe_video(path, backend=backend).num_frames == 24


# ------------------------------------------------------------------ bad files

BAD_CASES = [
    ("empty", "empty"),
    ("text", "no_video_stream"),  # a text file renamed .mp4
    ("audio_m4a", "no_video_stream"),
    ("audio_mp4", "no_video_stream"),
    ("trunc30", "corrupt"),  # moov atom (at the end) cut off: container cannot be opened
    ("trunc90", "corrupt"),  # moov cut: the container opens with no streams
    ("faststart_trunc30", "corrupt"),  # index intact, media data cut: decoding fails
    ("faststart_trunc90", "corrupt"),
    ("garbled", "corrupt"),  # random bytes over the media data
    ("no_frames", "no_frames"),  # an AVI whose video stream has no frames
]


@pytest.mark.parametrize("backend", ["auto", pytest.param("decord", marks=needs_decord), "pyav"])
@pytest.mark.parametrize(("name", "reason"), BAD_CASES)
def test_bad_files(bad_files: dict[str, Path], name: str, reason: str, backend: str) -> None:
    with pytest.raises(VideoDecodeError) as info:
        read_frames(bad_files[name], 8, backend=backend)
    assert info.value.reason == reason, info.value
    assert info.value.path == str(bad_files[name])


@pytest.mark.parametrize(("name", "reason"), BAD_CASES)
def test_bad_files_probe(bad_files: dict[str, Path], name: str, reason: str) -> None:
    if name.startswith("faststart_trunc"):
        pytest.skip("header and first frame are intact: only a full read sees the missing data")
    with pytest.raises(VideoDecodeError) as info:
        probe_video(bad_files[name])
    assert info.value.reason == reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError) as info:
        read_frames(tmp_path / "nope.mp4")
    assert info.value.reason == "missing"
    assert "nope.mp4" in str(info.value)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError) as info:
        read_frames(tmp_path)
    assert info.value.reason == "unreadable"


def test_no_read_permission_is_checked_with_os_access(
    clip_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access
    monkeypatch.setattr(
        decode.os, "access", lambda p, mode: False if str(p) == str(clip_video) else real_access(p, mode)
    )
    with pytest.raises(VideoDecodeError) as info:
        read_frames(clip_video)
    assert info.value.reason == "unreadable"


def test_no_read_permission_chmod(clip_video: Path, tmp_path: Path) -> None:
    path = tmp_path / "locked.mp4"
    shutil.copyfile(clip_video, path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not stop reads")
        with pytest.raises(VideoDecodeError) as info:
            read_frames(path)
        assert info.value.reason == "unreadable"
    finally:
        path.chmod(0o644)


# ------------------------------------------------------------------ images


def test_read_image(image_file: Path) -> None:
    frames = read_image(image_file)
    assert frames.shape == (1, 40, 60, 3) and frames.dtype == np.uint8
    assert frames[0, 0, 0].tolist() == [200, 0, 0] and frames[0, 0, 59].tolist() == [200, 100, 0]


def test_read_image_bad(bad_files: dict[str, Path], tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    shutil.copyfile(bad_files["text"], fake)
    with pytest.raises(VideoDecodeError) as info:
        read_image(fake)
    assert info.value.reason == "no_video_stream"
    with pytest.raises(VideoDecodeError) as info:
        read_image(tmp_path / "missing.png")
    assert info.value.reason == "missing"


def test_decord_width_bug_falls_back_to_pyav(narrow_video: Path, read_ids) -> None:
    # decord 0.6 fails on some frame widths (16, 24, 48, 72 px seen: "DECORDArrayCopyFromTo: The size
    # must exactly match"); "auto" must still decode such a file, through PyAV if need be.
    clip = read_frames(narrow_video, 4)
    assert clip.frames.shape == (4, 32, 48, 3)
    assert read_ids(clip.frames) == clip.indices
