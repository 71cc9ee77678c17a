"""Fused residual add + RMSNorm in Triton (forward and backward), for VideoMamba's blocks on CUDA.

One VideoMamba block starts with ``residual = residual + hidden`` (float32) and ``normed = rmsnorm(residual) * w``
cast to the compute dtype. In eager PyTorch that is about eight passes over a float32 [B, L, D] tensor (cast, add,
square, mean, rsqrt, two multiplies, cast back); the profile of the encoder put it at ~20% of inference time. Here it
is one pass: read ``hidden`` and ``residual``, write ``residual`` and ``normed`` (plus one float per row, the
reciprocal RMS, kept for the backward).

Backward, with x the new residual, r = 1/rms(x), x̂ = x r and g the gradient of ``normed``:

    dx = r (g w - x̂ mean(g w x̂)) + g_residual          (to both ``hidden`` and the incoming ``residual``)
    dw = sum over rows of g x̂

Each program owns a strided set of row blocks, so dw needs only a small [programs, D] partial sum.
Same math as ``RMSNorm`` in ``videomamba.py`` (checked against it in tests/test_triton_scan.py on GPU).
"""

from __future__ import annotations

import torch

from vtr.encoders.triton_common import HAS_TRITON, tl, triton

__all__ = ["add_rms_norm"]

if HAS_TRITON:

    @triton.jit
    def _add_rms_fwd_kernel(h_ptr, r_ptr, w_ptr, res_out_ptr, y_ptr, rstd_ptr, M, D, eps,
                            HAS_RES: tl.constexpr, STORE_RES: tl.constexpr, ROWS: tl.constexpr, BD: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BD)
        rm = rows < M
        cm = cols < D
        m2 = rm[:, None] & cm[None, :]
        off = rows[:, None].to(tl.int64) * D + cols[None, :]
        x = tl.load(h_ptr + off, mask=m2, other=0.0).to(tl.float32)
        if HAS_RES:
            x += tl.load(r_ptr + off, mask=m2, other=0.0)
        if STORE_RES:
            tl.store(res_out_ptr + off, x, mask=m2)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / D + eps)
        w = tl.load(w_ptr + cols, mask=cm, other=0.0).to(tl.float32)
        y = x * rstd[:, None] * w[None, :]
        tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=m2)
        tl.store(rstd_ptr + rows, rstd, mask=rm)

    @triton.jit
    def _add_rms_bwd_kernel(x_ptr, rstd_ptr, w_ptr, gy_ptr, gres_ptr, dx_ptr, dh_ptr, dw_ptr, M, D,
                            HAS_GRES: tl.constexpr, STORE_DH: tl.constexpr, ROWS: tl.constexpr, BD: tl.constexpr):
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        cols = tl.arange(0, BD)
        cm = cols < D
        w = tl.load(w_ptr + cols, mask=cm, other=0.0).to(tl.float32)
        dw = tl.zeros([BD], dtype=tl.float32)
        for start in range(pid * ROWS, M, nprog * ROWS):
            rows = start + tl.arange(0, ROWS)
            rm = rows < M
            m2 = rm[:, None] & cm[None, :]
            off = rows[:, None].to(tl.int64) * D + cols[None, :]
            x = tl.load(x_ptr + off, mask=m2, other=0.0)
            rstd = tl.load(rstd_ptr + rows, mask=rm, other=0.0)
            gy = tl.load(gy_ptr + off, mask=m2, other=0.0).to(tl.float32)
            xhat = x * rstd[:, None]
            gw = gy * w[None, :]
            dw += tl.sum(gy * xhat, axis=0)
            c = tl.sum(gw * xhat, axis=1) / D
            dx = rstd[:, None] * (gw - xhat * c[:, None])
            if HAS_GRES:
                dx += tl.load(gres_ptr + off, mask=m2, other=0.0)
            tl.store(dx_ptr + off, dx, mask=m2)
            if STORE_DH:
                tl.store(dh_ptr + off, dx.to(dh_ptr.dtype.element_ty), mask=m2)
        tl.store(dw_ptr + pid * D + cols, dw, mask=cm)


def _tile(d: int) -> tuple[int, int, int]:
    """(BD, ROWS, num_warps) for width d: about 4k elements per program."""
    bd = triton.next_power_of_2(d)
    rows = max(1, min(16, 4096 // bd))
    return bd, rows, 4 if bd * rows <= 4096 else 8


class _AddRMSNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, residual, weight, eps, out_dtype):  # type: ignore[override]
        shape = hidden.shape
        d = shape[-1]
        h = hidden.reshape(-1, d).contiguous()
        r = residual.reshape(-1, d).contiguous() if residual is not None else None
        m = h.shape[0]
        res_out = torch.empty(m, d, device=h.device, dtype=torch.float32)
        y = torch.empty(m, d, device=h.device, dtype=out_dtype)
        rstd = torch.empty(m, device=h.device, dtype=torch.float32)
        bd, rows, warps = _tile(d)
        _add_rms_fwd_kernel[(triton.cdiv(m, rows),)](
            h, r if r is not None else h, weight, res_out, y, rstd, m, d, float(eps),
            HAS_RES=r is not None, STORE_RES=True, ROWS=rows, BD=bd, num_warps=warps)
        ctx.save_for_backward(res_out, rstd, weight)
        ctx.meta = (shape, hidden.dtype, residual is not None, residual.dtype if residual is not None else None)
        return y.view(shape), res_out.view(shape)

    @staticmethod
    def backward(ctx, gy, gres):  # type: ignore[override]
        res_out, rstd, weight = ctx.saved_tensors
        if gy is None:
            gy = torch.zeros(res_out.shape, device=res_out.device, dtype=torch.float32)
        shape, h_dtype, has_res, r_dtype = ctx.meta
        m, d = res_out.shape
        gy = gy.reshape(m, d).contiguous()
        if gres is not None:
            gres = gres.reshape(m, d).float().contiguous()
        dx = torch.empty(m, d, device=res_out.device, dtype=torch.float32)
        store_dh = h_dtype != torch.float32
        dh = torch.empty(m, d, device=res_out.device, dtype=h_dtype) if store_dh else dx
        bd, rows, warps = _tile(d)
        nprog = min(triton.cdiv(m, rows), 4 * torch.cuda.get_device_properties(res_out.device).multi_processor_count)
        dw = torch.empty(nprog, d, device=res_out.device, dtype=torch.float32)
        _add_rms_bwd_kernel[(nprog,)](res_out, rstd, weight, gy, gres if gres is not None else gy, dx, dh, dw, m, d,
                                      HAS_GRES=gres is not None, STORE_DH=store_dh, ROWS=rows, BD=bd,
                                      num_warps=warps)
        d_res = dx.view(shape) if has_res else None
        if has_res and r_dtype != torch.float32:
            d_res = d_res.to(r_dtype)
        return dh.view(shape), d_res, dw.sum(0).to(weight.dtype), None, None


def add_rms_norm(hidden: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
                 out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rmsnorm(residual + hidden) * weight -> out_dtype, residual + hidden in float32)`` in one pass.

    ``residual`` None: the new residual is ``hidden`` in float32 (the first block). CUDA tensors, last dim
    normalised. ``out_dtype`` defaults to ``hidden.dtype``.
    """
    return _AddRMSNormFn.apply(hidden, residual, weight, eps, out_dtype or hidden.dtype)
