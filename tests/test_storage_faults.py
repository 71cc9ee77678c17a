"""Storage faults: damaged catalogs and `vtr index repair`, read-only homes, a full disk, stale temp files, a
dead writer's lock. Each fault ends in one line on stderr (never a traceback) and leaves the library usable."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model_dir

from vtr.cli.app import app
from vtr.cli.errors import run_cli
from vtr.data.synth import generate_world
from vtr.errors import CatalogCorruptError, ReadOnlyHomeError, StorageError
from vtr.index.lock import FileLock
from vtr.index.repair import SAFETY_COPY, repair
from vtr.index.store import LibraryStore
from vtr.library import Library

QUERIES = ["a red circle moves left", "a blue square grows", "a green triangle appears"]
DAMAGES = ["truncated", "page_overwritten", "header_zeroed", "bytes_flipped"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny model, a 12-clip world, and a home indexed from it (with its safety copy), searched once."""
    root = tmp_path_factory.mktemp("faults")
    world = generate_world(root / "world", num_videos=12, seed=3)
    model_dir = tiny_model_dir(root / "model")
    home = root / "home"
    with Library(home=home, model=str(model_dir), device="cpu") as lib:
        lib.index([world.videos_dir], workers=0, progress=False)
        answers = answer(lib)
    return root, world, model_dir, home, answers


def answer(lib: Library) -> list[list[tuple[str, float]]]:
    return [[(h.path, round(h.score, 5)) for h in row] for row in lib.search(QUERIES, k=5)]


def search_answers(home: Path, model_dir: Path) -> list[list[tuple[str, float]]]:
    with Library(home=home, model=str(model_dir), device="cpu") as lib:
        return answer(lib)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `vtr ARGS` in-process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = run_cli(app, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def damage(db: Path, kind: str) -> None:
    data = bytearray(db.read_bytes())
    page = 4096
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "page_overwritten":
        data[2 * page : 3 * page] = np.random.default_rng(0).integers(0, 256, page, dtype=np.uint8).tobytes()
    elif kind == "header_zeroed":
        data[:100] = bytes(100)
    elif kind == "bytes_flipped":
        for i in range(page, len(data), 997):
            data[i] ^= 0xFF
    db.write_bytes(bytes(data))


def copy_home(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.lock", "*-wal", "*-shm"))
    return dst


# --------------------------------------------------------------------------- damaged catalogs


@pytest.mark.parametrize("kind", DAMAGES)
def test_damaged_catalog_is_one_line_and_repair_restores(built, tmp_path, capsys, kind):
    root, world, model_dir, home, answers = built
    h = copy_home(home, tmp_path / "home")
    assert (h / SAFETY_COPY).exists()
    damage(h / "catalog.db", kind)
    model, cpu = ["--model", str(model_dir)], ["--device", "cpu"]
    writer = [["index", str(world.videos_dir), *model, *cpu, "--workers", "0"]] if kind == "truncated" else []
    for args in (["search", QUERIES[0], *model, *cpu], ["index", "status"], *writer):
        code, _, err = cli(capsys, *args, "--home", str(h))
        assert code == CatalogCorruptError.exit_code, (args, err)
        assert_one_line(err)
        assert "vtr index repair" in err and str(h / "catalog.db") in err
    code, out, err = cli(capsys, "index", "repair", "--home", str(h), "--device", "cpu", "--workers", "0")
    assert code == 0, err
    assert "restored the catalog from its safety copy" in out and "re-indexed 0" in out
    assert search_answers(h, model_dir) == answers  # the last good state, answered as before the damage
    assert list(h.glob("catalog.db.damaged-*"))  # the damaged file is kept aside, not deleted


def test_repair_reindexes_only_what_changed_and_rebuilds_without_a_copy(built, tmp_path, capsys):
    root, world, model_dir, home, answers = built
    videos = tmp_path / "videos"
    shutil.copytree(world.videos_dir, videos)
    h = tmp_path / "home"
    with Library(home=h, model=str(model_dir), device="cpu") as lib:
        lib.index([videos], workers=0, progress=False)
    changed = sorted(videos.glob("*.mp4"))[0]
    shutil.copyfile(sorted(videos.glob("*.mp4"))[1], changed)  # new content since the safety copy
    damage(h / "catalog.db", "page_overwritten")
    report = repair(h, device="cpu", workers=0, progress=False)
    assert report.restored_from and [(r.indexed, r.unchanged, r.error) for r in report.indexes] == [(1, 11, "")]
    with Library(home=h, model=str(model_dir), device="cpu") as lib:
        twins = lib.search_video(changed, k=2)  # re-embedded: now the twin of the file it was copied from
        after = answer(lib)
    assert {t.path for t in twins} == {str(changed), str(sorted(videos.glob("*.mp4"))[1])}
    assert twins[0].score == pytest.approx(twins[1].score, abs=1e-5)
    # no safety copy, and a catalog that cannot be read at all: repair needs the video folders, and says so
    (h / SAFETY_COPY).unlink()
    damage(h / "catalog.db", "header_zeroed")
    code, _, err = cli(capsys, "index", "repair", "--home", str(h), "--device", "cpu")
    assert code == 2 and "no usable safety copy" in err
    assert_one_line(err)
    code, out, err = cli(capsys, "index", "repair", str(videos), "--home", str(h), "--model", str(model_dir),
                         "--device", "cpu", "--workers", "0")
    assert code == 0, err
    assert "no safety copy: rebuilt the catalog by re-indexing" in out and "re-indexed 12" in out
    assert [sorted(row) for row in search_answers(h, model_dir)] == [sorted(row) for row in after]


# --------------------------------------------------------------------------- read-only home


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` made read-only: a read-only bind mount (root), else no write permission; skip if neither."""
    if os.geteuid() == 0:
        ok = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
        ok = ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True).returncode == 0
        if not ok:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip("cannot make a read-only mount here")
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(path)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def test_read_only_home_searches_and_refuses_to_index(built, tmp_path, capsys):
    root, world, model_dir, home, answers = built
    h = copy_home(home, tmp_path / "home")
    with read_only(h):
        assert search_answers(h, model_dir) == answers
        code, out, err = cli(capsys, "index", "status", "--home", str(h))
        assert code == 0 and "vectors" in out, err
        code, out, err = cli(capsys, "index", "list", "--home", str(h))
        assert code == 0 and out.startswith("default: "), err
        code, _, err = cli(capsys, "index", str(world.videos_dir), "--home", str(h), "--model", str(model_dir),
                           "--device", "cpu")
        assert code == ReadOnlyHomeError.exit_code and "read-only" in err
        assert_one_line(err)
        with pytest.raises(ReadOnlyHomeError):
            LibraryStore.open(h, model_name="m", dim=8, device="cpu")


# --------------------------------------------------------------------------- full disk


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "8m"):
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; return the filler (delete it to free the space)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
    return filler


def test_disk_full_is_one_line_consistent_and_resumable(built, tmp_path, capsys, monkeypatch):
    root, world, model_dir, home, answers = built
    videos = sorted(world.videos_dir.glob("*.mp4"))
    first, rest = tmp_path / "first", tmp_path / "rest"
    first.mkdir()
    rest.mkdir()
    for i, v in enumerate(videos):
        shutil.copy(v, (first if i < 6 else rest) / v.name)
    args = ["--model", str(model_dir), "--device", "cpu", "--workers", "0", "--batch-size", "2"]
    with tiny_tmpfs(tmp_path / "disk") as mounted:
        h = tmp_path / "disk" / "home"
        code, _, err = cli(capsys, "index", str(first), "--home", str(h), *args)
        assert code == 0, err
        if mounted:
            filler = fill(tmp_path / "disk")
        else:  # no tmpfs here: the disk fills at the FAISS save
            from vtr.index.vector_index import VectorIndex

            def full(self, path):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

            monkeypatch.setattr(VectorIndex, "save", full)
        code, _, err = cli(capsys, "index", str(rest), "--home", str(h), *args)
        assert code == StorageError.exit_code and "no space left" in err, err
        assert_one_line(err)
        if mounted:
            filler.unlink()
        else:
            monkeypatch.undo()
        assert not list((h / "indexes").glob(".*.tmp")) and not list(h.glob(".*.tmp"))  # nothing half-written
        with LibraryStore.open(h, read_only=True, device="cpu") as store:  # consistent: FAISS agrees with catalog
            assert store.ntotal == store.status().vectors >= 6
        code, out, err = cli(capsys, "index", str(first), str(rest), "--home", str(h), *args)
        assert code == 0, err
        names = [[(Path(p).name, score) for p, score in row] for row in search_answers(h, model_dir)]
        assert names == [[(Path(p).name, score) for p, score in row] for row in answers]


# --------------------------------------------------------------------------- temp files and locks


def test_stale_temp_files_go_at_the_next_open(tmp_path):
    home = tmp_path / "home"
    LibraryStore.open(home, model_name="m", dim=8, device="cpu").close()
    folder = home / "indexes"
    stale = [folder / ".default.faiss.k2j4x9_a.tmp", folder / ".default.faiss.zz81qq0p.tmp"]
    other = folder / ".default.v2.faiss.abcdefgh.tmp"  # another index's (maybe live) save
    for p in [*stale, other]:
        p.write_bytes(b"x" * 1000)
    LibraryStore.open(home, read_only=True, device="cpu").close()  # readers never delete
    assert all(p.exists() for p in stale)
    LibraryStore.open(home, model_name="m", dim=8, device="cpu").close()
    assert not any(p.exists() for p in stale) and other.exists()


def test_dead_writers_children_do_not_hold_the_lock(tmp_path):
    lock_path, pid_file = tmp_path / "indexes" / "default.lock", tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import multiprocessing as mp, os, signal, time
        from pathlib import Path
        from vtr.index.lock import FileLock

        def child():
            time.sleep(60)

        lock = FileLock(Path({str(lock_path)!r}), 0, "index")
        worker = mp.get_context("fork").Process(target=child)  # like a DataLoader decode worker
        worker.start()
        Path({str(pid_file)!r}).write_text(str(worker.pid))
        os.kill(os.getpid(), signal.SIGKILL)  # the writer dies; its worker lives on
    """)
    subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    child = int(pid_file.read_text())
    try:
        state = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0]
        assert state in "RSD"  # the orphaned worker is alive...
        t0 = time.monotonic()
        lock = FileLock(lock_path, 0.0, "index")  # ...and does not hold the writer's lock
        assert time.monotonic() - t0 < 1.0
        lock.release()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
