"""Bad arguments and unexpected failures of the `vtr` command: one line on stderr, an exit code, no traceback.

Run in-process (vtr.cli.errors.run_cli, what `vtr` runs): every case is refused at parse time, before any
model or index is opened, so the whole table takes a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vtr.cli.app import app
from vtr.cli.errors import run_cli
from vtr.errors import INTERNAL_ERROR_EXIT


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Path:
    """A folder with odd paths: a FIFO, a self-looping and a broken symlink, a non-UTF-8 text, a plain file."""
    root = tmp_path_factory.mktemp("odd")
    os.mkfifo(root / "fifo")
    (root / "loop").symlink_to(root / "loop")
    (root / "broken").symlink_to(root / "nowhere")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (root / "file").write_text("not a folder")
    (root / "folder").mkdir()
    return root


# (arguments, exit code, what the one line must name); {odd} is the folder above
CASES = [
    (["search", "-k", "0", "x"], 2, "'-k'"),
    (["search", "-k", "-1", "x"], 2, "'-k'"),
    (["search", "--nprobe", "0", "x"], 2, "'--nprobe'"),
    (["search", "--from-file", "{odd}/missing.txt"], 2, "does not exist"),
    (["search", "--from-file", "{odd}/latin1.txt"], 2, "not UTF-8"),
    (["search", "--from-file", "{odd}/folder"], 2, "not a file"),
    (["search", "x\udcff"], 2, "not valid UTF-8"),
    (["search", "   "], 2, "query is empty"),
    (["search", "--device", "tpu9", "x"], 2, "'--device'"),
    (["search", "x", "--home", "{odd}/file"], 2, "'--home'"),
    (["search", "x", "--bogus"], 2, "--bogus"),
    (["index", "--segment", "-1", "{odd}/folder"], 2, "'--segment'"),
    (["index", "--stride", "0", "{odd}/folder"], 2, "'--stride'"),
    (["index", "--stride", "-2", "{odd}/folder"], 2, "'--stride'"),
    (["index", "--frames", "0", "{odd}/folder"], 2, "'--frames'"),
    (["index", "--workers", "-1", "{odd}/folder"], 2, "'--workers'"),
    (["index", "--batch-size", "0", "{odd}/folder"], 2, "'--batch-size'"),
    (["index", "--factory", "IVFbogus", "{odd}/folder"], 2, "'--factory'"),
    (["index", "--factory", "ondisk:Flat", "{odd}/folder"], 2, "cannot be built on disk"),
    (["index", "--factory", "ondisk:IVF16,PQ8x4fs", "{odd}/folder"], 2, "fast-scan"),
    (["index", "--device", "tpu9", "{odd}/folder"], 2, "'--device'"),
    (["index", "{odd}/folder", "--home", "{odd}/file"], 2, "'--home'"),
    (["index", "/does/not/exist"], 2, "does not exist"),
    (["index", "{odd}/fifo"], 2, "FIFO"),
    (["index", "{odd}/loop"], 2, "symbolic links"),
    (["index", "{odd}/broken"], 2, "broken symbolic link"),
    (["index", "repair", "/does/not/exist"], 2, "does not exist"),
    (["eval", "custom", "--frames", "0"], 2, "'--frames'"),
    (["eval", "custom", "--rerank-k", "-1"], 2, "'--rerank-k'"),
    (["eval", "custom", "--batch-size", "0"], 2, "'--batch-size'"),
    (["eval", "custom", "--workers", "-1"], 2, "'--workers'"),
    (["eval", "custom", "--max-txt-l", "0"], 2, "'--max-txt-l'"),
    (["eval", "custom", "--max-txt-l", "100000"], 2, "'--max-txt-l'"),
    (["eval", "custom", "--max-seconds", "-1"], 2, "'--max-seconds'"),
    (["eval", "custom", "--device", "tpu9"], 2, "'--device'"),
    (["synth", "{odd}/w", "--videos", "1"], 2, "'--videos'"),
    (["synth", "{odd}/w", "--test-fraction", "0.95"], 2, "'--test-fraction'"),
    (["demo", "--videos", "5"], 2, "'--videos'"),
    (["bogus-command"], 2, "bogus-command"),
]


def cli(capsys, args: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_cli(app, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("args", "code", "names"), CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_argument_is_one_line(capsys, odd, tmp_path, args, code, names):
    args = [a.replace("{odd}", str(odd)) for a in args]
    if "--home" not in args and args[0] not in ("synth", "bogus-command"):
        args += ["--home", str(tmp_path / "home")]
    got, out, err = cli(capsys, args)
    assert got == code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and names in err, err
    assert not (tmp_path / "home" / "catalog.db").exists()  # refused before anything was written


def test_unexpected_exception_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    import vtr.library

    class Broken:
        def __init__(self, *a, **kw) -> None:
            raise RuntimeError("something broke\nacross two lines " + "x" * 100)

    monkeypatch.setattr(vtr.library, "Library", Broken)
    code, _, err = cli(capsys, ["search", "hello", "--home", str(tmp_path)])
    assert code == INTERNAL_ERROR_EXIT and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) > 80  # never wrapped, whatever the width
    assert "RuntimeError" in lines[0] and "--debug" in lines[0]
    code, _, err = cli(capsys, ["--debug", "search", "hello", "--home", str(tmp_path)])
    assert code == INTERNAL_ERROR_EXIT and "Traceback" in err and "RuntimeError: something broke" in err


def test_help_version_and_warnings_do_not_wrap(capsys, tmp_path):
    code, out, _ = cli(capsys, ["--help"])
    assert code == 0 and "index" in out
    code, out, _ = cli(capsys, ["--version"])
    assert code == 0 and out.startswith("vtr ")
    from vtr.cli.app import err

    err.print("[yellow]skipped[/yellow] " + "/a/very/long/path" * 12 + ": no video stream")
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_k_is_capped_at_the_vectors_held(tmp_path):
    from vtr.index.store import LibraryStore

    with LibraryStore.open(tmp_path, model_name="m", dim=8, device="cpu") as store:
        assert store.search(np.ones(8, np.float32), k=10_000_000_000) == [[]]  # empty index: no allocation


def test_console_script_error_is_one_line_at_80_columns(tmp_path):
    """The installed entry point (a real process, not a TTY, COLUMNS=80): one unwrapped line, exit 2."""
    env = {**os.environ, "COLUMNS": "80", "VTR_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "vtr.cli.app", "index", str(tmp_path / "no" / "such" / "folder"
                                                                              / "of" / "videos")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and len(proc.stderr.strip()) > 80, proc.stderr
