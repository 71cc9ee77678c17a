"""The ``triton`` scan backend: the fused scan, conv and add+RMSNorm kernels behind one registration."""

from __future__ import annotations

import torch

from vtr.encoders.triton_common import HAS_TRITON


def _on_cuda(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"


def register() -> bool:
    """Register the ``triton`` backend (CUDA only); False (nothing registered) when triton is missing."""
    if not HAS_TRITON:
        return False
    from vtr.encoders.selective_scan import register_backend
    from vtr.encoders.triton_conv import bidirectional_causal_conv1d, causal_conv1d_triton
    from vtr.encoders.triton_norm import add_rms_norm
    from vtr.encoders.triton_scan import bidirectional_selective_scan, selective_scan_triton

    register_backend("triton", selective_scan_triton, _on_cuda, causal_conv1d_triton,
                     bidirectional_scan=bidirectional_selective_scan, bidirectional_conv=bidirectional_causal_conv1d,
                     add_norm=add_rms_norm)
    return True
