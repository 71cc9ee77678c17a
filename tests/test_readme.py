"""README.md and the CLI agree: every command in README's ```bash examples runs as printed (in-process), except
those that need weights, data or machines a test cannot make (listed below with the reason); every option in
README's command table is one `vtr COMMAND --help` shows."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vtr.cli.app import app
from vtr.data.video_writer import write_video
from vtr.model.registry import register_model, save_model_dir
from vtr.model.retrieval import build_model, config_for

README = Path(__file__).resolve().parents[1] / "README.md"

# Commands a test cannot run as printed, and why. A README command matching none of these must run.
NOT_RUN = [
    (r"^make (demo|test)\b", "the demo and the test suite themselves (they have their own tests)"),
    (r"^(python -m venv|pip install)\b", "installs packages"),
    (r"^vtr models import videomamba_m16_\w+\.pth\b", "needs the official checkpoint (a 381 MB download)"),
    (r"^vtr eval (msrvtt|didemo|anet|lsmdc|msvd)\b", "needs the benchmark's videos and annotations"),
    (r"teacher\.weights=|trainer\.devices=8", "needs CLIP teacher weights and 8 GPUs"),
    (r"^vtr serve\b", "a server that runs until stopped (tests/test_serve.py and the browser test drive it)"),
]
SLOW = [r"^vtr synth worlds/shapes -n 1500\b", r"^vtr train shapes_tiny\b"]  # minutes on a CPU: slow runs only
OFFICIAL = "videomamba_m16_25M_f8_res224"  # the README's model name; the test installs a tiny model under it


def bash_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(section heading, command lines) of each ```bash block, comments and blank lines dropped."""
    blocks, heading = [], "top"
    for part in re.split(r"(^```bash\n.*?^```)", text, flags=re.S | re.M):
        if part.startswith("```bash"):
            lines = [ln for ln in part.splitlines()[1:-1] if shlex.split(ln, comments=True)]
            blocks.append((heading, lines))
        else:
            heads = re.findall(r"^#+ (.+)$", part, flags=re.M)
            heading = heads[-1] if heads else heading
    return blocks


def why_not_run(line: str) -> str | None:
    return next((why for pattern, why in NOT_RUN if re.search(pattern, line)), None)


BLOCKS = bash_blocks(README.read_text())


def _param(heading: str, lines: list[str]):
    slow = any(re.search(p, ln) for p in SLOW for ln in lines)
    return pytest.param(lines, id=re.sub(r"\W+", "-", heading).strip("-").lower(),
                        marks=[pytest.mark.slow] if slow else [])


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A new user's machine: a HOME with ~/Videos (one 12 s video, so --segment 10 cuts it), clip.mp4 and
    my_test.json + my_videos/ in the working folder, and a tiny model installed as the README's default."""
    home = tmp_path / "user"
    videos = home / "Videos"
    videos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_video(videos / "long.mp4", rng.integers(0, 255, (24, 32, 32, 3), dtype=np.uint8), fps=2.0)
    for i in range(3):
        write_video(videos / f"short{i}.mp4", rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
    work = tmp_path / "work"
    (work / "my_videos").mkdir(parents=True)
    write_video(work / "clip.mp4", rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
    captions = []
    for i in range(3):
        write_video(work / "my_videos" / f"m{i}.mp4", rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
        captions.append({"video": f"m{i}.mp4", "caption": f"clip number {i}"})
    (work / "my_test.json").write_text(json.dumps(captions))
    vtr_home = tmp_path / "vtr-home"
    torch.manual_seed(0)
    model = build_model(config_for("videomamba_t16_minilm", img_size=32, num_frames=2, vision={"depth": 1}))
    register_model(OFFICIAL, save_model_dir(model, vtr_home / "models" / OFFICIAL), vtr_home, make_default=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("VTR_HOME", str(vtr_home))
    monkeypatch.chdir(work)
    return home


def run_line(line: str, home: Path) -> None:
    args = [str(home) + a[1:] if a.startswith("~/") else a for a in shlex.split(line, comments=True)]
    assert args[0] == "vtr", f"README command not understood by this test: {line!r}"
    result = CliRunner().invoke(app, args[1:], catch_exceptions=False)
    assert result.exit_code == 0, f"{line!r} exited {result.exit_code}: {result.output}"


def test_readme_has_examples():
    assert len(BLOCKS) >= 4 and sum(len(lines) for _, lines in BLOCKS) >= 10


@pytest.mark.parametrize("lines", [_param(h, ls) for h, ls in BLOCKS])
def test_readme_example_block_runs(lines, user):
    ran = 0
    for line in lines:
        if why_not_run(line) is None:
            run_line(line, user)
            ran += 1
    if not ran:
        pytest.skip("; ".join(sorted({why_not_run(ln) or "" for ln in lines})))


def _table_rows(text: str) -> list[tuple[str, str]]:
    """(first code span, whole row) of the README's command table rows."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"^\| `(vtr [^`]+)`", line)
        if m:
            rows.append((m.group(1), line))
    return rows


@pytest.mark.parametrize("span,row", _table_rows(README.read_text()))
def test_readme_command_table_matches_help(span, row):
    words = span.split()
    command = [words[1]] if words[1] != "models" else ["models", words[2]]
    if command[0].startswith("-"):
        command = []
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", row.split("|")[1]))
    missing = [o for o in options if o not in result.output]
    assert not missing, f"README's row for `{span}` names options `vtr {' '.join(command)} --help` lacks: {missing}"
