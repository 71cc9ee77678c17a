"""What a new user reads: help without <bool> placeholders and with examples, blank queries refused, a second
writer told whom it waits for, vtr's own line for a file that is not a checkpoint, doctor's models and indexes."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vtr.cli.app import app
from vtr.errors import CheckpointError, ConfigError, IndexBusyError

COMMANDS = [[], ["doctor"], ["synth"], ["demo"], ["eval"], ["train"], ["index"], ["search"], ["models", "import"],
            ["models", "list"], ["models", "info"], ["models", "default"]]


def vtr(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VTR_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "vtr.cli.app", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c) or "vtr")
def test_help_has_no_bool_placeholders(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "160"}, catch_exceptions=False)
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "--help" in result.output
    if command in ([], ["index"], ["search"]):
        assert "Examples:" in result.output


def test_blank_queries_are_refused(tmp_path):
    out = vtr("search", "   ", home=tmp_path)
    assert out.returncode == 2 and "empty query" in out.stderr and "Traceback" not in out.stderr
    comments = tmp_path / "q.txt"
    comments.write_text("# nothing but a comment\n\n")
    result = CliRunner().invoke(app, ["search", "--from-file", str(comments), "--home", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "no queries" in str(result.exception)
    from vtr.library import Library

    with pytest.raises(ConfigError, match="empty query"):
        Library(home=tmp_path, device="cpu").search(["a cat", " \t"])


def test_second_writer_says_whom_it_waits_for(tmp_path, caplog):
    from vtr.index.lock import FileLock, read_holder

    path = tmp_path / "indexes" / "default.lock"
    held = FileLock(path, 0.0, "index 'default'")
    assert read_holder(path).startswith(f"pid {os.getpid()}, since ")
    told: list[str] = []
    with pytest.raises(IndexBusyError, match=rf"pid {os.getpid()}.*--wait SECONDS"):
        FileLock(path, 0.3, "index 'default'", notify=told.append)
    assert len(told) == 1 and f"pid {os.getpid()}" in told[0] and "waiting up to 0.3 s" in told[0]
    with caplog.at_level(logging.WARNING), pytest.raises(IndexBusyError):
        FileLock(path, 0.1, "index 'default'")  # default: told through the log, at once
    assert "waiting up to 0.1 s" in caplog.text
    held.release()
    assert read_holder(path) == "pid unknown"
    FileLock(path, 0.0, "index 'default'").release()  # free again


class NotTensors:
    pass


def test_not_a_checkpoint_gives_vtrs_own_line(tmp_path):
    from vtr.encoders.checkpoint import read_checkpoint

    text = tmp_path / "notes.pth"
    text.write_text("these are my notes, not weights\n")
    objects = tmp_path / "objects.pth"
    torch.save({"model": NotTensors()}, objects)
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"a": NotTensors()}))
    for path, what in ((text, "not a PyTorch or safetensors file"), (objects, "more than plain tensors"),
                       (raw, "pickle that is not a file of plain tensors")):
        with warnings.catch_warnings(record=True) as seen, pytest.raises(CheckpointError) as err:
            warnings.simplefilter("always")
            read_checkpoint(path)
        assert not [w for w in seen if "issue" in str(w.message)]  # torch's "file an issue" advice stays quiet
        msg = str(err.value)
        assert what in msg and "\n" not in msg and "weights_only" not in msg and "issue" not in msg
    out = vtr("models", "import", str(text), home=tmp_path / "h")
    assert out.returncode == 4 and "not a checkpoint vtr can read" in out.stderr
    assert "weights_only" not in out.stderr and "Traceback" not in out.stderr


def test_doctor_lists_models_and_indexes(tmp_path):
    from vtr.index.store import LibraryStore
    from vtr.model.registry import register_model

    home = tmp_path / "home"
    (tmp_path / "m").mkdir()
    register_model("my-model", tmp_path / "m", home, make_default=True)
    LibraryStore.open(home, "films", model_name="my-model", dim=8).close()
    result = CliRunner().invoke(app, ["doctor", "--json", "--home", str(home)], catch_exceptions=False)
    report = json.loads(result.stdout)
    assert report["models"]["installed"] == {"my-model": str((tmp_path / "m").resolve())}
    assert report["models"]["default"] == "my-model"
    assert [(i["name"], i["model"], i["videos"]) for i in report["indexes"]] == [("films", "my-model", 0)]
    table = CliRunner().invoke(app, ["doctor", "--home", str(home)], env={"COLUMNS": "200"}).output
    assert "films" in table and "my-model" in table
