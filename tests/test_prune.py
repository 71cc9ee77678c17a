"""--prune never deletes an index because a folder is missing or unreadable; mass prunes need --yes; re-index
reports known failures and missing files; the model is not loaded when there is nothing to encode."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vtr.data.video_writer import write_video
from vtr.errors import PruneRefusedError
from vtr.index.plan import PRUNE_GUARD_MIN, check_prune_share, is_gone
from vtr.library import Library
from vtr.model.registry import save_model_dir
from vtr.model.retrieval import build_model, config_for

N_VIDEOS = 12


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(config_for("videomamba_t16_minilm", img_size=32, num_frames=2, vision={"depth": 1}))
    return save_model_dir(model, tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    for i in range(N_VIDEOS):
        write_video(folder / f"v{i:02d}.mp4", rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
    return folder


@pytest.fixture
def indexed(tmp_path, model_dir, videos):
    """A fresh copy of the videos, indexed into a fresh home: (library, folder, home)."""
    folder = tmp_path / "drive" / "videos"
    shutil.copytree(videos, folder)
    home = tmp_path / "home"
    lib = Library(home=home, model=str(model_dir), device="cpu")
    assert lib.index([folder], workers=0, progress=False).indexed == N_VIDEOS
    return lib, folder, home


def vectors(home: Path) -> int:
    with Library(home=home, device="cpu") as lib:
        return lib.status()["vectors"]


def test_missing_root_with_prune_keeps_everything_exit_2(indexed):
    lib, folder, home = indexed
    unplugged = folder.parent.with_name("elsewhere")
    folder.parent.rename(unplugged)  # the drive is gone: every file of the index is "missing"
    env = {**os.environ, "VTR_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "vtr.cli.app", "index", str(folder), "--prune", "--workers", "0"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("error:") == 1 and "does not exist" in out.stderr
    assert "nothing was pruned" in out.stderr and "Traceback" not in out.stderr
    assert vectors(home) == N_VIDEOS
    # the same from Python, and with --yes too: a missing root is never "all files deleted"
    with pytest.raises(PruneRefusedError, match="does not exist"):
        lib.index([folder], workers=0, progress=False, prune=True, yes=True)
    assert vectors(home) == N_VIDEOS


def test_unreadable_root_with_prune_keeps_everything(indexed, monkeypatch):
    lib, folder, home = indexed
    real_scandir = os.scandir

    def scandir(path=".", *a):  # what an unreadable folder (or a dead network share) does
        if os.fspath(path) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path, *a)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(PruneRefusedError, match="cannot be listed"):
        lib.index([folder], workers=0, progress=False, prune=True)
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert vectors(home) == N_VIDEOS


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_root_by_permissions(indexed):
    lib, folder, home = indexed
    folder.chmod(0)
    try:
        with pytest.raises(PruneRefusedError):
            lib.index([folder], workers=0, progress=False, prune=True)
    finally:
        folder.chmod(0o755)
    assert vectors(home) == N_VIDEOS


def test_mass_prune_needs_yes_and_says_how_many(indexed):
    lib, folder, home = indexed
    files = sorted(folder.glob("*.mp4"))
    for f in files[:9]:  # 9 of 12 gone (an emptied mount point looks like this)
        f.unlink()
    with pytest.raises(PruneRefusedError, match=r"remove 9 of the index's 12 videos \(75%\).*--yes"):
        lib.index([folder], workers=0, progress=False, prune=True)
    assert vectors(home) == N_VIDEOS
    report = lib.index([folder], workers=0, progress=False, prune=True, yes=True)
    assert report.pruned == 9 and vectors(home) == 3


def test_prune_share_rule():
    check_prune_share(PRUNE_GUARD_MIN - 1, PRUNE_GUARD_MIN - 1)  # small prunes pass: all of a tiny index
    check_prune_share(50, 100)  # half passes
    with pytest.raises(PruneRefusedError, match="51 of the index's 100"):
        check_prune_share(51, 100)
    check_prune_share(51, 100, yes=True)


def test_only_certainly_missing_files_count_as_deleted(tmp_path, monkeypatch):
    f = tmp_path / "a.mp4"
    f.write_bytes(b"x")
    assert not is_gone(str(f)) and is_gone(str(tmp_path / "b.mp4"))
    assert is_gone(str(f / "under-a-file.mp4"))  # ENOTDIR: gone
    real_lstat = os.lstat

    def lstat(path, *a, **kw):
        if os.fsdecode(path).startswith(str(tmp_path / "locked")):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_lstat(path, *a, **kw)

    monkeypatch.setattr(os, "lstat", lstat)
    assert not is_gone(str(tmp_path / "locked" / "c.mp4"))  # cannot look: kept, not pruned


def test_reindex_reports_known_failures_and_missing_files(indexed):
    from vtr.cli.report import index_summary

    lib, folder, home = indexed
    for name in ("bad1.mp4", "bad2.mp4"):
        (folder / name).write_text("not a video")
    first = lib.index([folder], workers=0, progress=False)
    assert len(first.failed) == 2 and first.unchanged == N_VIDEOS
    sorted(folder.glob("v*.mp4"))[0].unlink()
    again = lib.index([folder], workers=0, progress=False)
    assert again.failed == [] and again.unchanged == N_VIDEOS - 1
    assert sorted(Path(f["path"]).name for f in again.known_failures) == ["bad1.mp4", "bad2.mp4"]
    assert {f["reason"] for f in again.known_failures} == {"no_video_stream"}
    assert again.missing == 1
    summary, hint = index_summary(again)
    assert f"unchanged {N_VIDEOS - 1}, failed 2 (2 known" in summary and "--retry-failed" in summary
    assert hint.startswith("1 indexed file is missing on disk") and "--prune" in hint
    doc = again.to_dict()
    assert (doc["failed"], doc["failed_before"], doc["missing"]) == (2, 2, 1)


def test_model_not_loaded_when_nothing_to_encode(indexed, monkeypatch):
    lib, folder, home = indexed
    import vtr.model.registry as registry

    def no_loading(*a, **kw):
        raise AssertionError("the model was loaded with nothing to encode")

    monkeypatch.setattr(registry, "create_model", no_loading)
    fresh = Library(home=home, model=lib.model_ref, device="cpu")
    report = fresh.index([folder], workers=0, progress=False)
    assert report.indexed == 0 and report.unchanged == N_VIDEOS and fresh._model is None
