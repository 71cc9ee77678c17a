"""Fused add + RMSNorm (encoders/triton_norm.py) against the eager float32 RMSNorm of videomamba.py, forward and
every gradient, and the whole encoder with the fused path on and off. GPU only (skipped without CUDA + triton)."""

from __future__ import annotations

import pytest
import torch

from vtr.encoders import triton_norm as tn
from vtr.encoders.videomamba import RMSNorm, create_video_encoder

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() and tn.HAS_TRITON), reason="needs CUDA and triton")]


def eager(hidden, residual, weight, eps, out_dtype):
    """The eager Block path: float32 residual, then RMSNorm's forward with ``weight`` (autograd through both)."""
    res = hidden.float() if residual is None else residual + hidden.float()
    norm = RMSNorm(hidden.shape[-1], eps)
    y = torch.func.functional_call(norm, {"weight": weight}, (res,))
    return y.to(out_dtype), res


@pytest.mark.parametrize("d", [192, 576, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_residual", [True, False])
def test_forward_and_gradients_match_eager(d, dtype, with_residual):
    g = torch.Generator(device="cuda").manual_seed(d)
    shape = (3, 37, d)  # odd row count: partial row blocks
    h0 = torch.randn(shape, device="cuda", generator=g).to(dtype)
    r0 = torch.randn(shape, device="cuda", generator=g) * 3 if with_residual else None
    w0 = 1 + 0.1 * torch.randn(d, device="cuda", generator=g)
    gy = torch.randn(shape, device="cuda", generator=g).to(dtype)
    gr = torch.randn(shape, device="cuda", generator=g)

    def run(fn):
        h = h0.clone().requires_grad_()
        r = r0.clone().requires_grad_() if r0 is not None else None
        w = w0.clone().requires_grad_()
        y, res = fn(h, r, w, 1e-5, dtype)
        ((y.float() * gy.float()).sum() + (res * gr).sum()).backward()
        return y, res, h.grad, None if r is None else r.grad, w.grad

    ours, ref = run(tn.add_rms_norm), run(eager)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1.6e-2, atol=1e-2)
    names = ("normed", "residual", "d_hidden", "d_residual", "d_weight")
    for name, a, b in zip(names, ours, ref, strict=True):
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        t = dict(rtol=1e-4, atol=1e-3) if name == "d_weight" and dtype == torch.float32 else tol
        torch.testing.assert_close(a.float(), b.float(), **t, msg=name)


def test_encoder_same_with_fused_norm_on_and_off(monkeypatch):
    torch.manual_seed(0)
    model = create_video_encoder("videomamba_tiny", num_frames=2, img_size=64, depth=3, scan_backend="triton").cuda()
    video = torch.randn(2, 2, 3, 64, 64, device="cuda")
    outs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("VTR_FUSED_NORM", flag)
        model.zero_grad(set_to_none=True)
        out = model(video)
        out.pooled.square().mean().backward()
        outs[flag] = (out.tokens.detach(), out.pooled.detach(),
                      {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (t1, p1, g1), (t0, p0, g0) = outs["1"], outs["0"]
    torch.testing.assert_close(t1, t0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(p1, p0, rtol=1e-4, atol=1e-4)
    assert g1.keys() == g0.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-3, atol=1e-5, msg=name)
