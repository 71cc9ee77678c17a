"""The vtr command: version, doctor, synth, error exit codes and --json purity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VTR = [sys.executable, "-m", "vtr.cli.app"]


def run(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VTR_HOME": str(home)}
    return subprocess.run([*VTR, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_version_and_help(tmp_path):
    import vtr

    out = run("--version", home=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"vtr {vtr.__version__}"
    helped = run("--help", home=tmp_path)
    assert helped.returncode == 0
    for command in ("doctor", "synth", "demo"):
        assert command in helped.stdout


def test_doctor_json_reports_environment(tmp_path):
    out = run("doctor", "--json", "--home", str(tmp_path / "h"), home=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)  # stdout holds exactly one JSON document
    assert report["data_home"] == str((tmp_path / "h").resolve())
    assert "chunked" in report["scan_backends"]["available"]
    assert report["scan_backends"]["selected"] in report["scan_backends"]["available"]
    assert "videomamba_middle" in report["models"]["video_encoders"]
    assert report["decoders"]["av"]


def test_data_home_from_env(tmp_path):
    out = run("doctor", "--json", home=tmp_path / "env_home")
    assert json.loads(out.stdout)["data_home"] == str((tmp_path / "env_home").resolve())


def test_synth_json_and_existing_world_error(tmp_path):
    out = run("synth", str(tmp_path / "w"), "--videos", "12", "--seed", "1", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["num_videos"] == 12
    assert len(list((tmp_path / "w" / "videos").glob("*.mp4"))) == 12
    again = run("synth", str(tmp_path / "w"), "--videos", "12", home=tmp_path)
    assert again.returncode == 2  # ConfigError: refuses to overwrite, no traceback
    assert "Traceback" not in again.stderr and "error" in again.stderr.lower()


@pytest.mark.parametrize("args", [["synth"], ["synth", "x", "--videos", "1"]])
def test_usage_errors_exit_2(tmp_path, args):
    assert run(*args, home=tmp_path).returncode == 2
