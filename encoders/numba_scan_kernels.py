"""Numba kernels of the selective scan (imported lazily by ``numba_scan.py``: importing this compiles them or
loads them from numba's on-disk cache). Bt, Ct are (B, L, N) in both; the other layouts are in each docstring."""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

_f32 = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _f32(1.4426950408889634), _f32(0.693145751953125), _f32(1.428606765330187e-06)
_C2, _C3, _C4, _C5, _C6 = _f32(1 / 2), _f32(1 / 6), _f32(1 / 24), _f32(1 / 120), _f32(1 / 720)
_LOW = _f32(-87.0)


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret an int32 as a float32 (builds 2**k from its exponent bits)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always", fastmath=True, cache=True)
def fast_exp(x):
    """exp(x) for float32 x <= 0, vectorisable: Cody-Waite reduction and a degree-6 polynomial (about 1 ulp).

    Clamped below at -87, where exp is < 2e-38: the decayed state is gone either way."""
    x = max(x, _LOW)
    k = np.floor(x * _LOG2E + _f32(0.5))
    r = x - k * _LN2_HI - k * _LN2_LO  # |r| <= ln2 / 2
    p = _f32(1.0) + r * (_f32(1.0) + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * _C6)))))
    return p * _bits_to_float32(numba.int32((numba.int32(k) + 127) << 23))


BLOCK = 64  # channels per parallel job in the forward: the vectorised inner loop runs over them


@njit(parallel=True, fastmath=True, cache=True)
def forward(dt, u, At, Bt, Ct, reverse, y):
    """y[b, t, e] = sum_n s_t[e, n] * Ct[b, t, n] for time-major dt, u, y (B, L, E) and At (N, E).

    One parallel job per (batch, block of BLOCK channels); its (N, BLOCK) states stay in L1 and the innermost
    loop runs over contiguous channels, so it is vectorised (with fast_exp) across channels."""
    batch, length, channels = u.shape
    nstate = At.shape[0]
    nblk = (channels + BLOCK - 1) // BLOCK
    for job in prange(batch * nblk):
        b = job // nblk
        e0 = (job % nblk) * BLOCK
        w = min(BLOCK, channels - e0)
        s = np.zeros((nstate, BLOCK), np.float32)
        du = np.empty(BLOCK, np.float32)
        acc = np.empty(BLOCK, np.float32)
        for i in range(length):
            t = length - 1 - i if reverse else i
            dtr = dt[b, t, e0 : e0 + w]
            ur = u[b, t, e0 : e0 + w]
            for j in range(w):
                du[j] = dtr[j] * ur[j]
                acc[j] = 0.0
            for n in range(nstate):
                bn = Bt[b, t, n]
                cn = Ct[b, t, n]
                ar = At[n, e0 : e0 + w]
                sn = s[n]
                for j in range(w):
                    v = fast_exp(dtr[j] * ar[j]) * sn[j] + du[j] * bn
                    sn[j] = v
                    acc[j] += v * cn
            yr = y[b, t, e0 : e0 + w]
            for j in range(w):
                yr[j] = acc[j]


@njit(parallel=True, fastmath=True, cache=True)
def backward(dt, u, A, Bt, Ct, gy, reverse, groups, d_dt, d_u, d_A, d_B, d_C):
    """Gradients of sum(gy * y) for dt, u, gy (B, E, L) and A (E, N).

    Outputs: d_dt, d_u (B, E, L); d_A (B, E, N), per batch row; d_B, d_C (B, G, L, N), zeroed by the caller,
    partial sums over the channels of each of G channel groups (the caller sums them). Per (batch, group) job
    and per channel: recompute the states (O(L x N) scratch), then run the adjoint
    g_t = gy_t * C_t + a_{t+1} * g_{t+1} backwards."""
    batch, channels, length = u.shape
    nstate = A.shape[1]
    per_group = (channels + groups - 1) // groups
    for job in prange(batch * groups):
        b = job // groups
        grp = job % groups
        states = np.empty((length, nstate), np.float32)  # s_t of one channel, in scan order
        g = np.empty(nstate, np.float32)
        s = np.empty(nstate, np.float32)
        for e in range(grp * per_group, min(channels, (grp + 1) * per_group)):
            a_row = A[e]
            s[:] = 0.0
            for i in range(length):
                t = length - 1 - i if reverse else i
                d = dt[b, e, t]
                du = d * u[b, e, t]
                for n in range(nstate):
                    s[n] = fast_exp(d * a_row[n]) * s[n] + du * Bt[b, t, n]
                    states[i, n] = s[n]
            g[:] = 0.0
            for n in range(nstate):
                d_A[b, e, n] = 0.0
            for i in range(length - 1, -1, -1):
                t = length - 1 - i if reverse else i
                d = dt[b, e, t]
                uu = u[b, e, t]
                gyt = gy[b, e, t]
                acc_dt = _f32(0.0)
                acc_du = _f32(0.0)
                for n in range(nstate):
                    g[n] += gyt * Ct[b, t, n]
                    s_prev = states[i - 1, n] if i > 0 else _f32(0.0)
                    a = fast_exp(d * a_row[n])
                    ga_s = g[n] * a * s_prev  # dL/d(dt_t * A)
                    d_C[b, grp, t, n] += gyt * states[i, n]
                    d_B[b, grp, t, n] += g[n] * d * uu
                    acc_dt += ga_s * a_row[n] + g[n] * uu * Bt[b, t, n]
                    acc_du += g[n] * d * Bt[b, t, n]
                    d_A[b, e, n] += ga_s * d
                    g[n] *= a  # a_t * g_t: the part of g_{t-1} carried back from step t
                d_dt[b, e, t] = acc_dt
                d_u[b, e, t] = acc_du


@njit(inline="always", fastmath=True)
def _sigmoid(g):
    """1 / (1 + exp(-g)) through fast_exp of a non-positive argument (vectorisable, no overflow)."""
    e = fast_exp(-abs(g))
    return _f32(1.0) / (_f32(1.0) + e) if g >= _f32(0.0) else e / (_f32(1.0) + e)


@njit(parallel=True, fastmath=True, cache=True)
def forward_fused(dt, u, z, D, At, Bt, Ct, reverse, has_z, y):
    """Inference in one pass: y = (scan(dt, u) + D * u) * silu(z), for dt already through softplus.

    Time-major dt, u, z, y (B, L, E); D (E,); At (N, E). ``has_z`` False: no gate (z is ignored). Same jobs and
    inner loop as :func:`forward`; the skip and the gate are done once per (step, channel), vectorised too."""
    batch, length, channels = u.shape
    nstate = At.shape[0]
    nblk = (channels + BLOCK - 1) // BLOCK
    for job in prange(batch * nblk):
        b = job // nblk
        e0 = (job % nblk) * BLOCK
        w = min(BLOCK, channels - e0)
        s = np.zeros((nstate, BLOCK), np.float32)
        du = np.empty(BLOCK, np.float32)
        acc = np.empty(BLOCK, np.float32)
        dr = D[e0 : e0 + w]
        for i in range(length):
            t = length - 1 - i if reverse else i
            dtr = dt[b, t, e0 : e0 + w]
            ur = u[b, t, e0 : e0 + w]
            for j in range(w):
                du[j] = dtr[j] * ur[j]
                acc[j] = dr[j] * ur[j]
            for n in range(nstate):
                bn = Bt[b, t, n]
                cn = Ct[b, t, n]
                ar = At[n, e0 : e0 + w]
                sn = s[n]
                for j in range(w):
                    v = fast_exp(dtr[j] * ar[j]) * sn[j] + du[j] * bn
                    sn[j] = v
                    acc[j] += v * cn
            yr = y[b, t, e0 : e0 + w]
            if has_z:
                zr = z[b, t, e0 : e0 + w]
                for j in range(w):
                    yr[j] = acc[j] * zr[j] * _sigmoid(zr[j])
            else:
                for j in range(w):
                    yr[j] = acc[j]
