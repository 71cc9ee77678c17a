"""The torchvision shim makes open_clip/lightning importable on CPU torch, and only acts when needed."""

import importlib.util
import subprocess
import sys

import pytest


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@pytest.mark.skipif(not _installed("open_clip"), reason="open_clip_torch (distill extra) not installed")
def test_shim_makes_torchvision_and_open_clip_importable():
    code = (
        "from vtr.compat import ensure_torchvision\n"
        "status = ensure_torchvision()\n"
        "import torch, torchvision.transforms as T, open_clip\n"
        "x = T.Resize((8, 8), antialias=False)(torch.rand(3, 16, 16))\n"
        "print(status, tuple(x.shape), ensure_torchvision())\n"
    )
    status, *rest = _run(code).split(" ", 1)
    assert status in {"ok", "shimmed"}
    assert rest[0].startswith("(3, 8, 8)")


@pytest.mark.skipif(not _installed("torchvision"), reason="torchvision not installed")
def test_shim_is_noop_when_ops_exist():
    # Pretend torchvision's C++ ops loaded: register the schemas (with kernels) before importing.
    code = (
        "import torch\n"
        "lib = torch.library.Library('torchvision', 'DEF')\n"
        "lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "from vtr import compat\n"
        "print(compat.ensure_torchvision(), compat._shim_library is None)\n"
    )
    assert _run(code) == "ok True"


def test_shim_reports_absent_torchvision(monkeypatch):
    from vtr import compat

    real = importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "torchvision" else real(n, *a))
    assert compat.ensure_torchvision() == "absent"
