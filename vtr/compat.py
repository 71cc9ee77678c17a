"""Workarounds for dependency problems, each applied only where the problem is actually present."""

from __future__ import annotations

import importlib.util
import logging
import sys

log = logging.getLogger(__name__)

_TORCHVISION_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_shim_library = None  # keeps the torch.library registration alive


def ensure_torchvision() -> str:
    """Make ``import torchvision`` work on a CPU torch with PyPI's CUDA-only torchvision wheel.

    That wheel's C++ ops cannot load on CPU torch, and its ``_meta_registrations`` then fails with
    ``operator torchvision::nms does not exist`` — breaking open_clip, timm and lightning's torchmetrics.
    Defining the two op schemas lets the Python parts (transforms, models) load; the C++ ops stay absent.

    Returns ``"absent"`` (torchvision not installed), ``"ok"`` (imports as is) or ``"shimmed"``.
    """
    global _shim_library
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "__version__"):
        return "shimmed" if _shim_library is not None else "ok"
    if importlib.util.find_spec("torchvision") is None:
        return "absent"
    try:
        import torchvision  # noqa: F401

        return "ok"
    except RuntimeError as err:
        if "torchvision::" not in str(err) or "does not exist" not in str(err):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    missing = {k: v for k, v in _TORCHVISION_OPS.items()
               if not torch._C._jit_get_schemas_for_operator(f"torchvision::{k}")}
    if missing:
        _shim_library = torch.library.Library("torchvision", "DEF")
        for schema in missing.values():
            _shim_library.define(schema)
    import torchvision  # noqa: F401,F811

    log.debug("torchvision %s loaded with vtr's CPU op shim", torchvision.__version__)
    return "shimmed"
