"""Causal depthwise conv (+ SiLU) in Triton, forward and backward, one or both directions from one read of x.

Same math as :func:`vtr.encoders.selective_scan.causal_conv1d_reference` (fp32 accumulation). The backward runs in
two passes: pass 1 computes the gradient of the pre-activation (recomputing the conv once for SiLU') and
accumulates dw/db as one partial row per program; pass 2 forms dx from the stored pre-activation gradient.
Importing this module never fails: without triton ``HAS_TRITON`` (``triton_common.py``) is False.
"""

from __future__ import annotations

import torch

from vtr.encoders.grad_pair import grad_pair_of
from vtr.encoders.triton_common import (
    HAS_TRITON,
    fast_math,
    new_buffer,
    next_pow2,
    tl,
    token_major,
    triton,
    triton_available,
)

__all__ = ["bidirectional_causal_conv1d", "causal_conv1d_triton"]

CONV_BL, CONV_BE = 32, 128  # H100 sweep: 2.5 / 2.2x the copy floor at Ti / M shapes (32 x 64: 3.5 / 2.8x)
CONV_BWD_BL, CONV_BWD_BE = 16, 64
CONV_BWD_WAVES = 8  # conv backward: programs per SM (each walks several L tiles; dw/db partial rows per program)

if HAS_TRITON:
    from vtr.encoders.triton_common import _sigmoid

    @triton.jit
    def _conv_fwd_kernel(
        x_ptr, sx_b, sx_e, sx_l, w0, b0, w1, b1, y0, sy0_b, sy0_e, sy0_l, y1, sy1_b, sy1_e, sy1_l,
        L, E, K: tl.constexpr, NDIR: tl.constexpr, REV0: tl.constexpr, HAS_BIAS: tl.constexpr,
        SILU: tl.constexpr, BL: tl.constexpr, BE: tl.constexpr, EVEN_E: tl.constexpr, FAST: tl.constexpr,
    ):
        pid_b = tl.program_id(0)
        ll = tl.program_id(1) * BL + tl.arange(0, BL)
        ee = tl.program_id(2) * BE + tl.arange(0, BE)
        em = (ee < E) if not EVEN_E else tl.full(ee.shape, 1, tl.int1)
        m = (ll < L)[:, None] & em[None, :]
        x_base = x_ptr + pid_b * sx_b + ee[None, :] * sx_e
        for dd in tl.static_range(NDIR):
            w_ptr = w0 if dd == 0 else w1
            bb_ptr = b0 if dd == 0 else b1
            rev = REV0 if dd == 0 else True
            acc = tl.zeros([BL, BE], dtype=tl.float32)
            if HAS_BIAS:
                acc += tl.load(bb_ptr + ee, mask=em, other=0.0).to(tl.float32)[None, :]
            for k in tl.static_range(K):
                # causal: w[k] * x[l - (K-1) + k]; anti-causal: w[k] * x[l + (K-1) - k]
                if rev:
                    src = ll + (K - 1 - k)
                else:
                    src = ll - (K - 1 - k)
                ok = (src >= 0) & (src < L)
                xv = tl.load(x_base + src[:, None] * sx_l, mask=ok[:, None] & em[None, :], other=0.0)
                wk = tl.load(w_ptr + ee * K + k, mask=em, other=0.0).to(tl.float32)
                acc += xv.to(tl.float32) * wk[None, :]
            if SILU:
                acc = acc * _sigmoid(acc, FAST)
            if dd == 0:
                tl.store(y0 + pid_b * sy0_b + ee[None, :] * sy0_e + ll[:, None] * sy0_l,
                         acc.to(y0.dtype.element_ty), mask=m)
            else:
                tl.store(y1 + pid_b * sy1_b + ee[None, :] * sy1_e + ll[:, None] * sy1_l,
                         acc.to(y1.dtype.element_ty), mask=m)

    @triton.jit
    def _conv_grad_at(x_base, sx_l, gy_base, sg_l, w_ptr, bias, ee, em, src, L, K: tl.constexpr,
                      rev: tl.constexpr, SILU: tl.constexpr, FAST: tl.constexpr):
        """dL/d(pre-activation) at positions src [BL] (0 outside [0, L)), recomputing the pre-activation."""
        ok = (src >= 0) & (src < L)
        m = ok[:, None] & em[None, :]
        g = tl.load(gy_base + src[:, None] * sg_l, mask=m, other=0.0).to(tl.float32)
        if SILU:
            pre = tl.zeros(g.shape, dtype=tl.float32) + bias[None, :]
            for k in tl.static_range(K):
                if rev:
                    xs = src + (K - 1 - k)
                else:
                    xs = src - (K - 1 - k)
                xok = (xs >= 0) & (xs < L)
                xv = tl.load(x_base + xs[:, None] * sx_l, mask=xok[:, None] & em[None, :], other=0.0)
                wk = tl.load(w_ptr + ee * K + k, mask=em, other=0.0).to(tl.float32)
                pre += xv.to(tl.float32) * wk[None, :]
            sg = _sigmoid(pre, FAST)
            g = g * sg * (1.0 + pre * (1.0 - sg))
        return tl.where(m, g, 0.0)

    @triton.jit
    def _conv_bwd_kernel(
        x_ptr, sx_b, sx_e, sx_l, gp_ptr, sgp_d, sgp_b, sgp_e, sgp_l,
        w0, b0, g0, sg0_b, sg0_e, sg0_l, dwp0, dbp0,
        w1, b1, g1, sg1_b, sg1_e, sg1_l, dwp1, dbp1,
        L, E, n_lt, K: tl.constexpr, KP: tl.constexpr, NDIR: tl.constexpr, REV0: tl.constexpr,
        HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BL: tl.constexpr, BE: tl.constexpr, EVEN_E: tl.constexpr,
        FAST: tl.constexpr,
    ):
        # Pass 1 of the conv backward. grid (batch, L-splits, E-blocks): a program walks the L tiles lt = pid_s,
        # pid_s + splits, ... of one channel block; per direction it computes the gradient of the pre-activation
        # (recomputing the conv for SiLU' once per position), stores it for pass 2 (dx), and accumulates dw and db
        # in registers, written as one partial row per program at the end (summed by the launcher).
        pid_b = tl.program_id(0)
        pid_s = tl.program_id(1)
        ns = tl.num_programs(1)
        ee = tl.program_id(2) * BE + tl.arange(0, BE)
        em = (ee < E) if not EVEN_E else tl.full(ee.shape, 1, tl.int1)
        kk = tl.arange(0, KP)
        x_base = x_ptr + pid_b * sx_b + ee[None, :] * sx_e
        gp_base = gp_ptr + pid_b * sgp_b + ee[None, :] * sgp_e
        if HAS_BIAS:
            bias0 = tl.load(b0 + ee, mask=em, other=0.0).to(tl.float32)
            bias1 = tl.load(b1 + ee, mask=em, other=0.0).to(tl.float32)
        else:
            bias0 = tl.zeros([BE], dtype=tl.float32)
            bias1 = bias0
        # dw and db accumulate elementwise ([BL, KP, BE] and [BL, BE] register tiles) and are reduced over L once
        # at the end: a cross-warp reduction per tile and tap was most of this kernel's time.
        kk3 = kk[None, :, None]
        acc0 = tl.zeros([BL, KP, BE], dtype=tl.float32)
        acc1 = tl.zeros([BL, KP, BE], dtype=tl.float32)
        accb0 = tl.zeros([BL, BE], dtype=tl.float32)
        accb1 = tl.zeros([BL, BE], dtype=tl.float32)
        for lt in range(pid_s, n_lt, ns):
            ll = lt * BL + tl.arange(0, BL)
            lm = ll < L
            for dd in tl.static_range(NDIR):
                w_ptr = w0 if dd == 0 else w1
                bias = bias0 if dd == 0 else bias1
                rev = REV0 if dd == 0 else True
                if dd == 0:
                    gy_base = g0 + pid_b * sg0_b + ee[None, :] * sg0_e
                    sg_l = sg0_l
                else:
                    gy_base = g1 + pid_b * sg1_b + ee[None, :] * sg1_e
                    sg_l = sg1_l
                g = _conv_grad_at(x_base, sx_l, gy_base, sg_l, w_ptr, bias, ee, em, ll, L, K, rev, SILU, FAST)
                tl.store(gp_base + dd * sgp_d + ll[:, None] * sgp_l, g, mask=lm[:, None] & em[None, :])
                # x at the K taps feeding each position: [BL, KP, BE]
                if rev:
                    xs3 = ll[:, None, None] + (K - 1 - kk3)
                else:
                    xs3 = ll[:, None, None] - (K - 1 - kk3)
                ok3 = (xs3 >= 0) & (xs3 < L) & (kk3 < K) & em[None, None, :]
                x3 = tl.load(x_base[:, None, :] + xs3 * sx_l, mask=ok3, other=0.0).to(tl.float32)
                if dd == 0:
                    acc0 += g[:, None, :] * x3
                    accb0 += g
                else:
                    acc1 += g[:, None, :] * x3
                    accb1 += g
        row = pid_b * ns + pid_s
        wm = (kk[:, None] < K) & em[None, :]
        w_off = row * E * K + ee[None, :] * K + kk[:, None]
        tl.store(dwp0 + w_off, tl.sum(acc0, axis=0), mask=wm)
        tl.store(dbp0 + row * E + ee, tl.sum(accb0, axis=0), mask=em)
        if NDIR == 2:
            tl.store(dwp1 + w_off, tl.sum(acc1, axis=0), mask=wm)
            tl.store(dbp1 + row * E + ee, tl.sum(accb1, axis=0), mask=em)

    @triton.jit
    def _conv_dx_kernel(
        gp_ptr, sgp_d, sgp_b, sgp_e, sgp_l, dx_ptr, sdx_b, sdx_e, sdx_l, w0, w1,
        L, E, K: tl.constexpr, NDIR: tl.constexpr, REV0: tl.constexpr, BL: tl.constexpr, BE: tl.constexpr,
        EVEN_E: tl.constexpr,
    ):
        # Pass 2: dx[l] = sum over directions and taps of w[k] * gpre[l + (K-1-k)] (causal) / [l - (K-1-k)]
        # (anti-causal), the gradient of the pre-activation that pass 1 stored.
        pid_b = tl.program_id(0)
        ll = tl.program_id(1) * BL + tl.arange(0, BL)
        ee = tl.program_id(2) * BE + tl.arange(0, BE)
        em = (ee < E) if not EVEN_E else tl.full(ee.shape, 1, tl.int1)
        lm = ll < L
        gp_base = gp_ptr + pid_b * sgp_b + ee[None, :] * sgp_e
        dx = tl.zeros([BL, BE], dtype=tl.float32)
        for dd in tl.static_range(NDIR):
            w_ptr = w0 if dd == 0 else w1
            rev = REV0 if dd == 0 else True
            for k in tl.static_range(K):
                if rev:
                    dst = ll - (K - 1 - k)
                else:
                    dst = ll + (K - 1 - k)
                ok = (dst >= 0) & (dst < L)
                gk = tl.load(gp_base + dd * sgp_d + dst[:, None] * sgp_l, mask=ok[:, None] & em[None, :], other=0.0)
                wk = tl.load(w_ptr + ee * K + k, mask=em, other=0.0).to(tl.float32)
                dx += gk * wk[None, :]
        tl.store(dx_ptr + pid_b * sdx_b + ee[None, :] * sdx_e + ll[:, None] * sdx_l,
                 dx.to(dx_ptr.dtype.element_ty), mask=lm[:, None] & em[None, :])


class _ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ndir, rev0, silu, x, w0, b0, w1, b1):  # type: ignore[override]
        batch, channels, length = x.shape
        width = w0.shape[-1]
        w0c = w0.reshape(channels, width).contiguous()
        w1c = w1.reshape(channels, width).contiguous() if ndir == 2 else w0c
        b1_ = b1 if ndir == 2 else b0
        tm = token_major(x)
        ys = [new_buffer(batch, channels, length, x.dtype, x.device, tm) for _ in range(ndir)]
        y1 = ys[1] if ndir == 2 else ys[0]
        grid = (batch, triton.cdiv(length, CONV_BL), triton.cdiv(channels, CONV_BE))
        if length:
            _conv_fwd_kernel[grid](
                x, *x.stride(), w0c, w0c if b0 is None else b0, w1c, w1c if b1_ is None else b1_,
                ys[0], *ys[0].stride(), y1, *y1.stride(), length, channels,
                K=width, NDIR=ndir, REV0=bool(rev0), HAS_BIAS=b0 is not None, SILU=bool(silu),
                BL=CONV_BL, BE=CONV_BE, EVEN_E=channels % CONV_BE == 0, FAST=fast_math(), num_warps=4,
            )
        ctx.save_for_backward(x, w0c, b0, w1c, b1_)
        ctx.grad_pair = grad_pair_of(x)  # dx goes straight into in_proj's output gradient (grad_pair.py)
        ctx.meta = (ndir, bool(rev0), bool(silu), w0.shape, None if b0 is None else b0.dtype)
        return tuple(ys) if ndir == 2 else ys[0]

    @staticmethod
    def backward(ctx, *gys):  # type: ignore[override]
        x, w0c, b0, w1c, b1 = ctx.saved_tensors
        ndir, rev0, silu, wshape, bdtype = ctx.meta
        batch, channels, length = x.shape
        width = w0c.shape[-1]
        gys = [g if g is not None else torch.zeros_like(x) for g in gys]
        g1 = gys[1] if ndir == 2 else gys[0]
        dx = ctx.grad_pair.half(0, x) if ctx.grad_pair is not None else None
        if dx is None:
            dx = new_buffer(batch, channels, length, x.dtype, x.device, token_major(x))
        if not length:
            dws = [torch.zeros(channels, width, dtype=torch.float32, device=x.device) for _ in range(ndir)]
            dbs = [torch.zeros(channels, dtype=torch.float32, device=x.device) for _ in range(ndir)]
        else:
            n_lt = triton.cdiv(length, CONV_BWD_BL)
            n_eb = triton.cdiv(channels, CONV_BWD_BE)
            # enough programs to fill the GPU (CONV_BWD_WAVES per SM), each walking several L tiles
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
            splits = max(1, min(n_lt, -(-CONV_BWD_WAVES * sms // max(1, batch * n_eb))))
            dwps = [torch.empty(batch * splits, channels, width, dtype=torch.float32, device=x.device)
                    for _ in range(ndir)]
            dbps = [torch.empty(batch * splits, channels, dtype=torch.float32, device=x.device) for _ in range(ndir)]
            # the pre-activation gradient of each direction, float32, laid out like x
            gp = (torch.empty(ndir, batch, length, channels, dtype=torch.float32, device=x.device).transpose(2, 3)
                  if token_major(x) else
                  torch.empty(ndir, batch, channels, length, dtype=torch.float32, device=x.device))
            _conv_bwd_kernel[(batch, splits, n_eb)](
                x, *x.stride(), gp, *gp.stride(),
                w0c, w0c if b0 is None else b0, gys[0], *gys[0].stride(), dwps[0], dbps[0],
                w1c, w1c if b1 is None else b1, g1, *g1.stride(), dwps[-1], dbps[-1],
                length, channels, n_lt, K=width, KP=next_pow2(width), NDIR=ndir, REV0=rev0,
                HAS_BIAS=b0 is not None, SILU=silu, BL=CONV_BWD_BL, BE=CONV_BWD_BE,
                EVEN_E=channels % CONV_BWD_BE == 0, FAST=fast_math(), num_warps=4,
            )
            _conv_dx_kernel[(batch, n_lt, n_eb)](
                gp, *gp.stride(), dx, *dx.stride(), w0c, w1c, length, channels, K=width, NDIR=ndir, REV0=rev0,
                BL=CONV_BWD_BL, BE=CONV_BWD_BE, EVEN_E=channels % CONV_BWD_BE == 0, num_warps=4,
            )
            dws = [p.sum(0) for p in dwps]
            dbs = [p.sum(0) for p in dbps]
        out = [dx]
        for k in range(2):
            if k < ndir:
                out += [dws[k].to(w0c.dtype).reshape(wshape), None if bdtype is None else dbs[k].to(bdtype)]
            else:
                out += [None, None]
        return (None, None, None, *out)


def causal_conv1d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    reverse: bool = False,
) -> torch.Tensor:
    """Depthwise causal (anti-causal with ``reverse``) conv over L, then SiLU; fp32 accumulation."""
    if x.dtype == torch.float64 or not triton_available(x.device):
        from vtr.encoders.selective_scan import causal_conv1d_reference  # fallback only (the registry imports us)

        return causal_conv1d_reference(x, weight, bias, activation, reverse)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _ConvFn.apply(1, reverse, activation == "silu", x, weight, bias, None, None)


def bidirectional_causal_conv1d(
    x: torch.Tensor,
    weight_f: torch.Tensor,
    bias_f: torch.Tensor | None,
    weight_b: torch.Tensor,
    bias_b: torch.Tensor | None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(causal conv of x with weight_f, anti-causal conv with weight_b), each + SiLU, from one read of x."""
    if x.dtype == torch.float64 or not triton_available(x.device):
        from vtr.encoders.selective_scan import causal_conv1d_reference  # fallback only (the registry imports us)

        return (causal_conv1d_reference(x, weight_f, bias_f, activation),
                causal_conv1d_reference(x, weight_b, bias_b, activation, reverse=True))
    if (bias_f is None) != (bias_b is None):
        raise ValueError("give a bias for both directions or for neither")
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _ConvFn.apply(2, False, activation == "silu", x, weight_f, bias_f, weight_b, bias_b)
