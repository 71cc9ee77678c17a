"""Where and how vtr computes: one rule each for the device, the inference precision and offline mode."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vtr.errors import ConfigError

if TYPE_CHECKING:  # torch is imported on first use, so `import vtr` stays fast
    import torch

__all__ = ["inference_dtype", "resolve_device", "set_offline"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; otherwise the named device, checked to exist.

    Raises ConfigError (with the fix) for a name torch does not know or a CUDA device this machine lacks.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but CUDA is not available here: use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise ConfigError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    return dev


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The official inference precision: the whole model in bf16 on CUDA, float32 elsewhere (``auto``)."""
    import torch

    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    try:
        return {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    except KeyError:
        raise ConfigError(f"unknown precision {precision!r}: use auto, bf16 or fp32") from None


def set_offline() -> None:
    """vtr never downloads at run time: make the Hugging Face libraries fail fast instead of fetching."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
