"""`vtr doctor`: what this environment can do (torch/CUDA, scan backends, decoders, faiss, models)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from typing import Any

import vtr
from vtr.home import data_home


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _importable(module: str) -> tuple[bool, str]:
    """Try importing ``module``; return (ok, error message)."""
    if importlib.util.find_spec(module) is None:
        return False, "not installed"
    try:
        importlib.import_module(module)
        return True, ""
    except Exception as err:  # noqa: BLE001 - report whatever breaks the import
        return False, f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"


def collect_environment(home: str | None = None) -> dict[str, Any]:
    """Gather the environment report as a JSON-serialisable dict."""
    import torch

    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "vtr": vtr.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": {
            "available": cuda,
            "torch_cuda": torch.version.cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        },
        "data_home": str(data_home(home)),
    }
    from vtr.compat import ensure_torchvision

    try:
        report["torchvision"] = {"version": _version("torchvision"), "status": ensure_torchvision()}
    except Exception as err:  # noqa: BLE001
        report["torchvision"] = {"version": _version("torchvision"), "status": f"broken: {err}"}

    from vtr.encoders import selective_scan

    device = torch.device("cuda" if cuda else "cpu")
    report["scan_backends"] = {
        "available": selective_scan.available_backends(device),
        "selected": selective_scan.resolve_backend(None, device),
    }
    for mod in ("mamba_ssm", "causal_conv1d", "triton"):
        ok, why = _importable(mod)
        report["scan_backends"][mod] = "importable" if ok else why

    decoders = {}
    for mod, dist in (("decord", "decord"), ("av", "av")):
        ok, why = _importable(mod)
        decoders[mod] = _version(dist) if ok else why
    report["decoders"] = decoders

    faiss_info: dict[str, Any] = {"cpu": _version("faiss-cpu"), "gpu": _version("faiss-gpu")}
    ok, why = _importable("faiss")
    if ok:
        import faiss

        faiss_info["version"] = faiss.__version__
        faiss_info["gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    else:
        faiss_info["error"] = why
    report["faiss"] = faiss_info
    report["extras"] = {
        "open_clip_torch": _version("open_clip_torch"),
        "mamba-ssm": _version("mamba-ssm"),
        "lightning": _version("lightning"),
        "transformers": _version("transformers"),
    }
    from vtr.encoders.videomamba import list_video_encoders

    report["models"] = {"video_encoders": list_video_encoders(), **_installed_models(home)}
    report["indexes"] = _indexes(home)
    return report


def _installed_models(home: str | None) -> dict[str, Any]:
    """The models installed in the data home and the default one."""
    from vtr.model.registry import default_model, installed_models

    try:
        return {"installed": installed_models(home), "default": default_model(home)}
    except Exception as err:  # noqa: BLE001 - a damaged registry is reported, not raised
        return {"installed": {}, "default": None, "error": f"{type(err).__name__}: {err}"}


def _indexes(home: str | None) -> list[dict[str, Any]] | str:
    """The indexes in the data home's catalog: name, model, videos, vectors (or why they cannot be listed)."""
    from vtr.index.store import list_indexes

    try:
        return [{"name": i.name, "model": i.model_name, "videos": i.videos, "vectors": i.vector_count,
                 "factory": i.factory} for i in list_indexes(home)]
    except Exception as err:  # noqa: BLE001
        return f"cannot read the catalog: {type(err).__name__}: {err}"
