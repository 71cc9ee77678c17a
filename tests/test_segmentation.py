"""Long videos by default (issue 20) and bounded window decoding (issue 21, item 2).

The end-to-end checks use a *constructed* model (:class:`PaletteModel`) rather than a trained one: a learned
model that tells vtr-shapes events apart takes many minutes on this 2-core CPU. Its video tower measures, in
each decoded frame, the share of pixels close to each vtr-shapes colour (the backgrounds are dim and
desaturated, the shapes bright); its text tower is the one-hot of the colour words of the query. So the score of
a window is how much of the queried colour its sampled frames show, computed from the pixels that the windowing
actually decoded: a window that is misplaced in time, a chunk joined to the wrong video, or a collapse that keeps
the wrong window all fail these tests, as they would with a learned model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vtr.collapse import collapse_windows
from vtr.data.decode import probe_video, read_frames
from vtr.data.synth import COLORS, generate_world
from vtr.data.transforms import eval_transform
from vtr.data.video_writer import write_video
from vtr.errors import ConfigError
from vtr.library import Library, SearchHit
from vtr.segmentation import SegmentPolicy, default_policy, requested_policy, settle_policy

PALETTE = list(COLORS)
TARGET = "purple"  # the event colour: shown only by the target clip of the long video
FPS = 8
SIZE = 64


# --------------------------------------------------------------------------- the constructed model


class PaletteModel(torch.nn.Module):
    """Per frame: share of pixels near each palette colour (+1 constant dim); text: one-hot of colour words."""

    def __init__(self, num_frames: int = 8, img_size: int = 64) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(num_frames=num_frames, img_size=img_size, embed_dim=len(PALETTE) + 1)
        self.register_buffer("colors", torch.tensor([COLORS[c] for c in PALETTE], dtype=torch.float32))
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # Library reads the dtype from the parameters
        self.weights_sha256 = "0" * 64

    def encode_video(self, video: torch.Tensor) -> SimpleNamespace:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
        rgb = (video.float() * std + mean) * 255  # [B, T, 3, H, W]
        dist = (rgb.unsqueeze(2) - self.colors.view(1, 1, -1, 3, 1, 1)).norm(dim=3)  # [B, T, P, H, W]
        share = (dist < 60).float().mean(dim=(-1, -2))  # [B, T, P]
        feats = torch.cat([share.sqrt(), torch.full_like(share[..., :1], 0.05)], dim=-1)
        return SimpleNamespace(embeds=feats)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        ids = torch.tensor([[float(c in t.lower().split()) for c in PALETTE] + [0.0] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones(len(texts), 1)}

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(embeds=input_ids.float())


def palette_library(home: Path, **kw) -> Library:
    lib = Library(home=home, model="palette", device="cpu", **kw)
    lib._model = PaletteModel()
    lib._model_identity = lambda: ("palette", "0" * 64)  # no model directory: the identity the index records
    return lib


# --------------------------------------------------------------------------- the long video


def _colours(record: dict) -> set[str]:
    out = {e["color"] for e in record["events"]} | {e.get("to_color") for e in record["events"]}
    if record["distractor"]:
        out.add(record["distractor"]["color"])
    return out - {None}


def _frames(path: Path) -> np.ndarray:
    """All frames of a clip, nearest-resized to SIZE x SIZE."""
    n = probe_video(path).num_frames
    frames = read_frames(path, n, "middle").frames
    ys = np.arange(SIZE) * frames.shape[1] // SIZE
    xs = np.arange(SIZE) * frames.shape[2] // SIZE
    return frames[:, ys][:, :, xs]


@pytest.fixture(scope="module")
def library_dir(tmp_path_factory) -> SimpleNamespace:
    """A 3-minute video of concatenated vtr-shapes clips, the TARGET clip (shown twice) from 2:01, 3 short clips."""
    root = tmp_path_factory.mktemp("long")
    world = generate_world(root / "world", num_videos=120, seed=5, test_fraction=0.1, workers=0)
    records = [r for split in ("train", "test") for r in json.loads((root / "world" / f"{split}.json").read_text())]
    still = {"move", "grow", "shrink"}  # the shape is on screen for the whole clip
    target = next(r for r in records if _colours(r) == {TARGET} and len(r["events"]) == 1
                  and r["events"][0]["action"] in still and r["num_frames"] >= 24)
    fillers = [r for r in records if TARGET not in _colours(r)]
    clip = {r["video"]: _frames(world.videos_dir / r["video"]) for r in [target, *fillers]}
    start = 121 * FPS  # the target's first frame: its ~6-8 s fit inside the window [120, 130)
    parts, t, j = [], 0, 0
    while t < 180 * FPS:
        if t == start:
            parts += [clip[target["video"]]] * 2
            t += 2 * len(clip[target["video"]])
            event_s = (start + len(clip[target["video"]])) / FPS  # the middle of the two showings
            continue
        frames = clip[fillers[j % len(fillers)]["video"]]
        j += 1
        if t < start < t + len(frames):
            frames = frames[:start - t]
        parts.append(frames)
        t += len(frames)
    folder = root / "videos"
    long_path = write_video(folder / "long.mp4", np.concatenate(parts), fps=FPS)
    shorts = [write_video(folder / f"short_{i}.mp4", clip[fillers[-1 - i]["video"]], fps=FPS) for i in range(3)]
    return SimpleNamespace(folder=folder, long=long_path, shorts=shorts, event_s=event_s,
                           duration=probe_video(long_path).duration, world=world)


# --------------------------------------------------------------------------- policy


def test_default_policy_follows_the_model_clip():
    assert default_policy(8) == SegmentPolicy(10.0, 5.0, 30.0)  # 8 frames, 1.25 s apart: the official models
    assert default_policy(4) == SegmentPolicy(5.0, 2.5, 15.0)
    p = default_policy(8)
    assert p.windows(29.0) == [(0.0, 29.0)]  # short clips stay whole
    assert p.windows(31.0) == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 25.0), (20.0, 30.0), (25.0, 31.0)]
    assert requested_policy(None, None, p) is None
    assert requested_policy(0, None, p).whole_videos and requested_policy(0, None, p).windows(3600) == [(0, 3600)]
    assert requested_policy(4, 2, p) == SegmentPolicy(4, 2, 4)
    assert requested_policy(None, 2.5, p) == SegmentPolicy(10, 2.5, 30)
    with pytest.raises(ConfigError, match="--stride"):
        requested_policy(4, 8, p)  # gaps between windows
    with pytest.raises(ConfigError, match="frame interval"):
        SegmentPolicy(0.05, 0.05, 0.05).windows(60.0, fps=8.0)


def test_settle_policy_never_mixes():
    d, whole, custom = default_policy(8), SegmentPolicy(0, 0, 0), SegmentPolicy(4, 2, 4)
    assert settle_policy("x", None, None, d, has_vectors=False) == d  # a new index: the default
    assert settle_policy("x", d, None, d, has_vectors=True) == d  # re-runs: what was recorded
    assert settle_policy("x", custom, None, d, has_vectors=True) == custom  # even when it is not the default
    assert settle_policy("x", d, whole, d, has_vectors=False) == whole  # an empty index takes any policy
    with pytest.raises(ConfigError, match="--reindex") as err:
        settle_policy("x", d, whole, d, has_vectors=True)
    assert "\n" not in str(err.value)
    # an index built before policies were recorded: single-segment videos were whole videos
    assert settle_policy("x", None, None, d, has_vectors=True) == whole
    with pytest.raises(ConfigError, match="--segment"):
        settle_policy("x", None, None, d, has_vectors=True, legacy_windows=True)
    assert settle_policy("x", None, custom, d, has_vectors=True, legacy_windows=True) == custom


# --------------------------------------------------------------------------- collapsing


def test_collapse_keeps_the_best_window_of_each_moment():
    def hit(score, path, a, b):
        return SearchHit(0, score, path, a, b)

    hits = [hit(0.9, "a", 10, 20), hit(0.8, "a", 5, 15), hit(0.7, "b", 0, 3), hit(0.6, "a", 15, 25),
            hit(0.5, "a", 100, 110), hit(0.4, "a", 20, 30), hit(0.3, "c", 0, 10), hit(0.2, "c", 10, 20)]
    out = collapse_windows(hits)
    assert [(h.rank, h.path, h.start_s, h.end_s, h.score, h.windows) for h in out] == [
        (1, "a", 10, 20, 0.9, 4),  # 5-15, 10-20, 15-25, 20-30 are one run; its best window is kept
        (2, "b", 0, 3, 0.7, 1),
        (3, "a", 100, 110, 0.5, 1),  # far from the first run: another moment of the same video
        (4, "c", 0, 10, 0.3, 2),  # touching windows (stride == window) are neighbours too
    ]
    assert collapse_windows([]) == []


# --------------------------------------------------------------------------- end to end


def test_long_video_is_split_by_default_and_the_event_is_found(library_dir, tmp_path):
    lib = palette_library(tmp_path / "h")
    report = lib.index([library_dir.folder], workers=2, progress=False, max_windows=5)  # chunks from 2 processes
    policy = default_policy(8)
    expected = len(policy.windows(library_dir.duration))
    assert library_dir.duration > 170 and expected > 30
    assert report.indexed == 4 and not report.failed
    assert report.segments == expected + 3  # the long video in windows, each short clip one segment
    status = lib.status()
    assert status["segmentation"]["window_s"] == 10.0 and status["segmentation"]["whole_up_to_s"] == 30.0
    assert status["segments"] == status["vectors"] == expected + 3

    first = lib.search(f"a {TARGET} shape", k=3)[0][0]
    assert first.path == str(library_dir.long)
    assert first.start_s <= library_dir.event_s <= first.end_s  # the window holds the event
    assert first.end_s - first.start_s == pytest.approx(10.0) and first.windows >= 2

    windows = lib.search(f"a {TARGET} shape", k=50, all_windows=True)[0]
    assert (windows[0].start_s, windows[0].end_s, windows[0].score) == (first.start_s, first.end_s, first.score)
    near = [h for h in windows if h.path == first.path and h.start_s <= first.end_s and h.end_s >= first.start_s]
    assert len(near) >= 2  # the neighbouring windows that the collapsed hit stands for
    collapsed = lib.search(f"a {TARGET} shape", k=50)[0]
    assert len(collapsed) < len(windows)
    assert len({(h.path, h.start_s) for h in collapsed}) == len(collapsed)


def test_changed_policy_needs_reindex(library_dir, tmp_path):
    home = tmp_path / "h"
    shorts = library_dir.shorts
    palette_library(home).index([*shorts, library_dir.long], workers=0, progress=False)
    with pytest.raises(ConfigError, match="--reindex") as err:
        palette_library(home).index([library_dir.long], segment=0, workers=0, progress=False)
    assert "\n" not in str(err.value) and "10 s windows" in str(err.value)
    lib = palette_library(home)
    assert lib.status()["segmentation"]["window_s"] == 10.0  # unchanged by the refused run
    report = lib.index([*shorts, library_dir.long], segment=0, reindex=True, workers=0, progress=False)
    assert report.indexed == 4 and report.segments == 4  # whole videos now
    again = palette_library(home).index([library_dir.long], workers=0, progress=False)  # no options: recorded
    assert again.segmentation["window_s"] == 0 and lib.status()["segments"] == 4


def test_window_shorter_than_a_frame_is_refused(library_dir, tmp_path):
    lib = palette_library(tmp_path / "h")
    with pytest.raises(ConfigError, match="frame interval") as err:
        lib.index([library_dir.long], segment=0.05, workers=0, progress=False)  # 8 fps: 0.125 s per frame
    assert "\n" not in str(err.value)
    assert lib.status()["segments"] == 0


def test_a_video_failing_midway_is_committed_not_at_all(library_dir, tmp_path, monkeypatch):
    import vtr.data.clips as clips
    from vtr.errors import VideoDecodeError

    real = clips.read_frames

    def failing(path, *a, window=None, **kw):
        if Path(path).name == "long.mp4" and window is not None and window[0] >= 100:
            raise VideoDecodeError(path, "corrupt", "planted failure")
        return real(path, *a, window=window, **kw)

    monkeypatch.setattr(clips, "read_frames", failing)
    lib = palette_library(tmp_path / "h")
    report = lib.index([library_dir.folder], workers=0, progress=False, max_windows=4, batch_size=4)
    assert report.indexed == 3 and [f["reason"] for f in report.failed] == ["corrupt"]
    status = lib.status()
    assert status["segments"] == status["vectors"] == status["faiss_vectors"] == 3  # none of long.mp4's windows
    assert status["videos"]["failed"] == 1


@pytest.mark.slow  # ~15 s on a quiet 2-core CPU (two CLI start-ups); the in-process refusal is tested above
def test_cli_refuses_a_policy_change_in_one_line(library_dir, tmp_path):
    """Through the command line: index status shows the policy, `--segment 0` on it is refused (exit 2)."""
    from vtr.model.registry import save_model_dir
    from vtr.model.retrieval import build_model, config_for

    torch.manual_seed(0)
    model = build_model(config_for("videomamba_t16_minilm", img_size=32, num_frames=2, vision={"depth": 1}))
    model_dir = save_model_dir(model, tmp_path / "model")
    home = tmp_path / "h"
    Library(home=home, model=str(model_dir), device="cpu").index(library_dir.shorts, workers=0, progress=False)
    env = {**os.environ, "VTR_HOME": str(home), "COLUMNS": "500"}  # rich wraps at 80 columns in a pipe

    def vtr(*args):
        return subprocess.run([sys.executable, "-m", "vtr.cli.app", *args], capture_output=True, text=True, env=env,
                              timeout=300)

    refused = vtr("index", str(library_dir.shorts[0]), "--model", str(model_dir), "--segment", "0", "--workers", "0")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--reindex" in lines[0] and "2.5 s windows" in lines[0], refused.stderr
    status = vtr("index", "status")
    assert status.returncode == 0 and "segmentation: 2.5 s windows every 1.25 s" in status.stdout


# --------------------------------------------------------------------------- bounded memory (issue 21, item 2)

_PEAK = """
import resource, sys, torch
torch.set_num_threads(1)
from vtr.data.clips import ClipDataset, ClipRequest, clip_loader
from vtr.segmentation import SegmentPolicy

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

out = []
for path in sys.argv[1:]:
    ds = ClipDataset([ClipRequest(path)], 8, 160, probe=True, policy=SegmentPolicy(0.5, 0.5, 0.5),
                     dtype=torch.float16, max_windows=8)
    windows = biggest = 0
    for group in clip_loader(ds, 0, pin_memory=False):
        biggest = max(biggest, len(group["video"]))
        windows += sum(len(it["windows"]) for it in group["items"])
        del group
    out.append((windows, biggest, peak_mb()))
print(out)
"""


def test_decoding_memory_does_not_grow_with_video_length(tmp_path):
    """Peak RSS of decoding an 80-window video stays within a fixed bound of a 16-window one.

    All windows at once (the old loader) would hold 80 x 8 x 3 x 160 x 160 floats (~200 MB as float32, plus the
    stacked copy and the float16 one); in chunks of 8 windows the clips in memory never exceed ~40 MB.
    """
    rng = np.random.default_rng(0)
    short = write_video(tmp_path / "short.mp4", rng.integers(0, 255, (64, 64, 64, 3), dtype=np.uint8), fps=FPS)
    long = write_video(tmp_path / "long.mp4", rng.integers(0, 255, (320, 64, 64, 3), dtype=np.uint8), fps=FPS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", _PEAK, str(short), str(long)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    (n_short, big_short, peak_short), (n_long, big_long, peak_long) = eval(run.stdout.strip().splitlines()[-1])
    assert (n_short, n_long) == (16, 80)
    assert big_short <= 8 and big_long <= 8  # no loader item holds more than one chunk's clips
    assert peak_long - peak_short < 60, (peak_short, peak_long)  # MB; all at once adds ~400 MB (notes/issue-20.md)


def test_whole_clip_item_joins_its_chunks(library_dir):
    """``ClipDataset[i]`` (evaluation's path) gives all windows of a video, in order, whatever the chunk size."""
    from vtr.data.clips import ClipDataset, ClipRequest

    policy = SegmentPolicy(20.0, 20.0, 20.0)
    a = ClipDataset([ClipRequest(str(library_dir.long))], 2, 32, probe=True, policy=policy, max_windows=3)[0]
    b = ClipDataset([ClipRequest(str(library_dir.long))], 2, 32, probe=True, policy=policy, max_windows=100)[0]
    assert a["windows"] == b["windows"] == policy.windows(library_dir.duration) and len(a["windows"]) >= 9
    torch.testing.assert_close(a["video"], b["video"])
    clip = eval_transform(read_frames(library_dir.long, 2, "middle", window=a["windows"][4]).frames, 32)
    torch.testing.assert_close(a["video"][4], clip)


def test_progress_counts_segments_and_estimates_the_rest():
    from vtr.index_progress import IndexProgress

    bar = IndexProgress(4, enable=False)
    assert bar.estimated_total() == 4  # nothing probed yet: one segment a video
    bar.video_seen(36)  # a long video
    assert bar.estimated_total() == 36 * 4
    bar.video_seen(0)  # a failure
    bar.video_seen(1)
    assert bar.estimated_total() == 37 + round(37 / 3)
    bar.segments_done(37)
    bar.video_done()
    assert bar.segments == 37 and bar.videos_done == 1
    bar.close()
