"""encoders/, index/, cli/ install as vtr.encoders, vtr.index, vtr.cli: in this (editable) install and a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"vtr.encoders": "encoders", "vtr.index": "index", "vtr.cli": "cli"}


def test_installed_subpackages_come_from_the_mapped_folders():
    import importlib

    for module, folder in MAPPED.items():
        mod = importlib.import_module(module)
        assert Path(mod.__file__).resolve().parent == ROOT / folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("vtr-*.whl")
    return whl


def test_wheel_has_only_vtr_at_top_level(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"vtr", dist_info}
    for folder in ("encoders", "index", "cli"):
        assert f"vtr/{folder}/__init__.py" in names
    assert "vtr/encoders/videomamba.py" in names and "vtr/cli/app.py" in names


def test_wheel_install_imports_mapped_packages(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import vtr, vtr.encoders.videomamba, vtr.index, vtr.cli.app; "
            "print(vtr.__file__); print(vtr.encoders.videomamba.__file__); print(vtr.cli.app.__file__)")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.split():
        assert line.startswith(str(target)), line


def test_wheel_contains_every_subpackage(wheel):
    """pyproject lists packages by hand: a new subpackage missing from it would be left out of the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    roots = {"vtr": ROOT / "vtr", **{f"vtr/{folder}": ROOT / folder for folder in MAPPED.values()}}
    for prefix, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            rel = init.relative_to(folder).as_posix()
            assert f"{prefix}/{rel}" in names, f"{prefix}/{rel} missing from the wheel: add it to pyproject packages"
