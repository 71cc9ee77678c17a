"""`vtr demo` end to end with a small installed demo model (training is skipped): the index is the default one,
the final screen ends with a search command that works exactly as printed, and Lightning is quieted."""

from __future__ import annotations

import io
import logging
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from rich.console import Console

from vtr.demo import DEMO_MODEL, quiet_lightning, run_demo


def test_demo_last_printed_command_works_as_printed(tmp_path: Path) -> None:
    from vtr.model.retrieval import build_model, config_for
    from vtr.training.run import export_model

    home = tmp_path / "home"
    torch.manual_seed(0)
    model = build_model(config_for("videomamba_t16_minilm", img_size=32, num_frames=2,
                                   vision={"depth": 1, "patch_size": 8}))
    export_model(model, DEMO_MODEL, home)  # an installed demo model: the demo reuses it instead of training
    buf = io.StringIO()
    summary = run_demo(tmp_path / "out", videos=14, home=home, console=Console(file=buf, width=100))
    screen = buf.getvalue()
    assert summary["training"] == "reused" and summary["index"]["name"] == "default"
    assert summary["index"]["indexed"] == summary["world"]["num_test"] > 0
    assert "vtr models import" in screen and "what the demo showed" in screen

    last = [line for line in screen.splitlines() if line.strip()][-1]
    argv = shlex.split(last)
    assert argv[:2] == ["vtr", "search"] and "--index" not in argv  # the default index: no flag needed
    vtr_script = Path(sys.executable).with_name("vtr")
    done = subprocess.run([str(vtr_script), *argv[1:], "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "test_0" in done.stdout  # it answered with clips of the demo library


def test_quiet_lightning_raises_and_restores_levels() -> None:
    names = ("lightning.pytorch", "lightning.fabric")
    from vtr.compat import ensure_torchvision

    ensure_torchvision()
    import lightning.pytorch  # noqa: F401  (its import sets its loggers' levels: measure after it)

    before = [logging.getLogger(n).level for n in names]
    with quiet_lightning():
        for n in names:
            assert not logging.getLogger(n + ".utilities.rank_zero").isEnabledFor(logging.INFO)
            assert logging.getLogger(n).isEnabledFor(logging.WARNING)
    assert [logging.getLogger(n).level for n in names] == before
