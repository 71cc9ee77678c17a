"""The official optimiser rules: AdamW parameter groups (weight-decay rule, ``different_lr``) and the cosine
schedule with warmup (official ``get_cosine_schedule_with_warmup``), stepped after every optimizer step."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch

_WRAPPER_PREFIXES = ("_forward_module.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "module.")


# ---------------------------------------------------------------------------------------------- optimizer


def strip_wrappers(name: str) -> str:
    """A parameter name without DDP/FSDP/checkpoint wrapper prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if prefix in name:
                name = name.replace(prefix, "")
                changed = True
    return name


def decays(name: str, param: torch.Tensor) -> bool:
    """The official weight-decay rule (``utils/optimizer.py::add_weight_decay`` with ``filter_bias_and_bn``).

    No decay for 1-D parameters (norm weights, ``D``/``D_b``, MLM bias) and for names ending in ``.bias``; decay
    for everything else. The multimodal model defines no ``no_weight_decay()``, so position embeddings,
    ``cls_token``, ``temporal_pos_embedding``, ``A_log``/``A_b_log`` (2-D) and even the 0-dim temperature ``temp``
    (``len(shape) == 0``, not 1) are decayed. Reproduced as is.
    """
    return not (param.ndim == 1 or name.endswith(".bias"))


def official_param_groups(named_params: Iterable[tuple[str, torch.Tensor]], weight_decay: float,
                          decay_by_name: dict[str, bool] | None = None, different_lr_names: Sequence[str] = (),
                          different_lr: float | None = None) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: ``decay`` (``weight_decay``) and ``no_decay`` (0) by :func:`decays`,
    each split again when ``different_lr_names`` regexes (``re.search`` on the name) move parameters to
    ``different_lr`` (official ``add_different_lr``; those groups are named ``*_different_lr`` and carry ``lr``).

    ``decay_by_name`` (computed on the unwrapped model) overrides :func:`decays` for wrapped/sharded parameters whose
    shapes no longer tell (FSDP flattens them). Frozen parameters are left out, as officially; a tied parameter is
    listed once.
    """
    patterns = [re.compile(p) for p in different_lr_names]
    groups: dict[tuple[bool, bool], dict[str, Any]] = {}
    seen: set[int] = set()
    for name, param in named_params:
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        clean = strip_wrappers(name)
        flag = decay_by_name[clean] if decay_by_name is not None and clean in decay_by_name else decays(clean, param)
        other = different_lr is not None and any(p.search(clean) for p in patterns)
        if (flag, other) not in groups:
            group = {"params": [], "weight_decay": weight_decay if flag else 0.0,
                     "group": ("decay" if flag else "no_decay") + ("_different_lr" if other else ""),
                     "param_names": []}
            if other:
                group["lr"] = different_lr
            groups[(flag, other)] = group
        groups[(flag, other)]["params"].append(param)
        groups[(flag, other)]["param_names"].append(clean)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[1], not k[0]))]


class CosineWarmup:
    """LR multiplier of the official ``get_cosine_schedule_with_warmup`` (``num_cycles=0.5``).

    ``max(min_lr_multi, step / warmup)`` for ``step < warmup``, then
    ``max(min_lr_multi, 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup))))``.
    """

    def __init__(self, warmup_steps: float, total_steps: int, min_lr_multi: float) -> None:
        self.warmup_steps = float(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr_multi = float(min_lr_multi)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return max(self.min_lr_multi, step / max(1.0, self.warmup_steps))
        progress = (step - self.warmup_steps) / max(1.0, self.total_steps - self.warmup_steps)
        return max(self.min_lr_multi, 0.5 * (1.0 + math.cos(math.pi * progress)))
