"""Fused selective scan (forward and backward) in Triton, one or both directions (the conv: ``triton_conv.py``).

Same math as :func:`vtr.encoders.selective_scan.selective_scan_reference`:

    dt  = softplus(delta + delta_bias);  s_t = exp(dt_t * A) * s_{t-1} + dt_t * B_t * u_t;  y_t = C_t . s_t + D * u_t

gated by silu(z). :func:`bidirectional_selective_scan` runs a forward-order and a reverse-order scan (VideoMamba's
two directions, each with its own u, delta, A, B, C, D, bias) in one launch and returns
``(y_f + y_b) * silu(z)``; :func:`selective_scan_triton` is the single-direction backend function.

Kernel design (forward, ``_scan_fwd_kernel``):

- grid (batch, E / (ES * EL), directions). A program owns a block of channels of one direction for the whole
  sequence, all N states of them in registers (an ``[ES, N, EL]`` float32 tile), and walks the sequence in
  chunks of ``T`` steps. Tiles are 4-D ``[T, ES, N, EL]``: Triton's default layout puts the lanes on EL (the
  channels, contiguous in memory for the mixer's token-major tensors, (B, L, E) memory seen as (B, E, L)) and
  T, ES and N in each thread, so the recurrence over a chunk (``tl.associative_scan`` on axis 0) and the sum
  over N are per-thread register arithmetic, no shuffles; with EL = 16 the N states are split over two lanes
  (twice the warps, used automatically when a 32-lane split leaves the GPU short of warps). The next chunk's
  inputs are loaded while the current one computes. Nothing B x E x L x N wide is ever written.
- reverse order is index arithmetic (scan step i at position Lp-1-i); no flipped copies.
- the fused bidirectional call runs both directions in one launch (programs of both directions side by side,
  for parallelism) and writes the gated sum once, through an arrival protocol per group of ``SEG`` steps: the
  direction that reaches a group first parks its raw output (before the gate) in the output buffer; the second
  waits for that group to be complete (one atomic flag per group), adds its own, gates with silu(z) and writes
  the final value. Thus y makes one extra round trip - the least possible, since the two directions finish at
  opposite ends - and deadlock is impossible (a waiter only waits for a program that is already running).
- when a gradient is needed it also stores the state entering every ``SEG``-step segment and the raw sum S
  (for dz).

Backward (``_scan_bwd_kernel``): grid (batch, E-blocks, directions). Per segment, last to first: (A) recompute
the states from the stored segment carry, putting the state entering each T-chunk into a small per-program
scratch (it stays in L2); (B) for each chunk, last to first: recompute the chunk's states from its entering
state, run the adjoint recurrence h_t = a_{t+1} h_{t+1} + C_t gy_t backwards (on the tile flipped in
registers, which is free, unlike a reverse ``associative_scan`` which shuffles every element), and form all
gradients. a_t s_{t-1} is taken as s_t - b_t, so no shifted copy of the states is needed. dB and dC (sums over
channels: summed over the ES channels inside each thread first, then across the EL lanes, which halves the
shuffles: 1434 -> 1147 SASS instructions per chunk, benchmarks/kernel_sass.py) and dA, dD, d_bias (sums over batch
and time) are accumulated with relaxed float32 atomics, dB and dC into ``BWD_NPART`` partial buffers to spread
same-address traffic. Measured on the H200 (notes/issue-13.md): fwd+bwd 16-26% faster than before that change.

Why stored segment carries rather than a recompute from the start: they cost N*4/SEG bytes per (step,
channel) - with SEG=64 half of what saving one more bf16 activation would - and let the backward do one
recompute pass per element instead of two (the exponentials and the instruction issue bound the kernels).

Measured (H100, batch 32, bf16, benchmarks/results/scan_speed_h100.json): forward 3.3-4.6x the HBM floor at
VideoMamba-S/M shapes and 4.6-6.5x at Ti (the floor counts only the bytes; the kernel is bound by instruction
issue, about 12 instructions and one MUFU exp per (step, channel, state)), 27-61x faster than ``chunked``;
forward + backward 14-15x the floor, 13-19x faster than ``chunked``.

Inputs of one direction travel as a :class:`~vtr.encoders.scan_types.ScanDirection`. Everything runs on CUDA
tensors; with ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (slowly) for tests. Importing this
module never fails: without triton ``HAS_TRITON`` (from ``triton_common.py``) is False and no kernel is defined.
"""

from __future__ import annotations

import torch

from vtr.encoders.grad_pair import grad_pair_of
from vtr.encoders.scan_types import ScanDirection, check_direction
from vtr.encoders.triton_common import (
    HAS_TRITON,
    fast_math,
    maxnreg,
    new_buffer,
    next_pow2,
    strides,
    tl,
    token_major,
    triton,
    triton_available,
)

__all__ = ["bidirectional_selective_scan", "selective_scan_triton"]

# Tile shapes: T steps per chunk, ES x EL channels per program (EL on lanes, warps = EL // 32; EL < 32 splits the
# N states over 32 / EL lanes). Measured on an H100/H200 at VideoMamba shapes (benchmarks/scan_speed.py --sweep).
FWD_T, FWD_ES, FWD_EL = 4, 1, 32
FWD_EL_AUTO, FWD_MIN_WARPS = True, 1024  # fewer than this many 32-lane warps: use 16 lanes per channel block
FWD_MAXNREG: int | None = None
BWD_T, BWD_ES, BWD_EL = 2, 2, 16
BWD_MAXNREG: int | None = None
BWD_NPART = 4  # dB, dC accumulate into this many partial buffers (fewer programs hitting one address)
SEG = 64  # steps between stored states (multiple of FWD_T and BWD_T)

if HAS_TRITON:
    from vtr.encoders.triton_common import _LOG2E, _ex2, _sigmoid, _softplus

    @triton.jit
    def _affine(a1, b1, a2, b2):
        # compose x -> a1 x + b1, then x -> a2 x + b2
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _prev(p1, q1, f1, p2, q2, f2):
        # (second-to-last, last, length>=2) of a segment: the scan's first output is the previous element
        return tl.where(f2 > 0.0, p2, q1), q2, tl.where(f2 > 0.0, f2, 1.0)

    @triton.jit
    def _chunk_states(dt, dtu, A4, Bt, s, FAST: tl.constexpr):
        """States [T, ES, N, EL] of one chunk from the entering state s [ES, N, EL]; also a and b."""
        t4 = tl.arange(0, dt.shape[0])[:, None, None, None]
        a = _ex2(dt[:, :, None, :] * A4, FAST)
        b = dtu[:, :, None, :] * Bt[:, None, :, None]
        b_in = tl.where(t4 == 0, b + a * s[None], b)
        _, st = tl.associative_scan((a, b_in), 0, _affine)
        return a, b, st

    @triton.jit
    def _last(x):
        t4 = tl.arange(0, x.shape[0])[:, None, None, None]
        return tl.sum(tl.where(t4 == x.shape[0] - 1, x, 0.0), axis=0)

    @triton.jit
    def _first(x):
        t4 = tl.arange(0, x.shape[0])[:, None, None, None]
        return tl.sum(tl.where(t4 == 0, x, 0.0), axis=0)

    @triton.jit
    def _dt(dl, m3, bias3, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, FAST: tl.constexpr):
        """(delta + bias, dt = softplus(delta + bias)), dt zeroed on masked steps (an identity step)."""
        if HAS_BIAS:
            dl = dl + bias3
        dt = dl
        if SOFTPLUS:
            dt = _softplus(dl, FAST)
        return dl, tl.where(m3, dt, 0.0)

    @triton.jit
    def _chunk_pos(k, trow, rev, Lp, L, em3, T: tl.constexpr):
        """Positions [T] of scan chunk k (scan step i -> position i, or Lp-1-i in reverse) and the mask."""
        i = k * T + trow
        pos = tl.where(rev, Lp - 1 - i, i)
        valid = (pos < L) & (pos >= 0)
        pos3 = pos[:, None, None]
        return pos, valid, pos3, valid[:, None, None] & em3

    @triton.jit
    def _load_inputs(k, trow, rev, Lp, L, em3, u_base, su_l, dl_base, sd_l, bc_off0, B_ptr, C_ptr, nn, nm, N,
                     T: tl.constexpr):
        pos, valid, pos3, m3 = _chunk_pos(k, trow, rev, Lp, L, em3, T)
        u = tl.load(u_base + pos3 * su_l, mask=m3, other=0.0)
        dl = tl.load(dl_base + pos3 * sd_l, mask=m3, other=0.0)
        bc_off = bc_off0 + pos[:, None] * N + nn[None, :]
        bc_m = valid[:, None] & nm[None, :]
        Bt = tl.load(B_ptr + bc_off, mask=bc_m, other=0.0)
        Ct = tl.load(C_ptr + bc_off, mask=bc_m, other=0.0)
        return u, dl, Bt, Ct

    @triton.jit
    def _load_bwd(k, j, tt, rev, Lp, L, em3, u_base, su_l, dl_base, sd_l, bc_off0, B_ptr, C_ptr, nn, nm, N,
                  gy_base, sg_l, z_base, sz_l, S_base, sS_l, scratch, scr_off, dz_on, HAS_Z: tl.constexpr,
                  T: tl.constexpr, SZ: tl.constexpr):
        """Everything phase B of the backward reads for chunk k (j: its index in the segment's scratch)."""
        u, dl, Bt, Ct = _load_inputs(k, tt, rev, Lp, L, em3, u_base, su_l, dl_base, sd_l, bc_off0, B_ptr, C_ptr,
                                     nn, nm, N, T)
        pos, valid, pos3, m3 = _chunk_pos(k, tt, rev, Lp, L, em3, T)
        gy = tl.load(gy_base + pos3 * sg_l, mask=m3, other=0.0)
        if HAS_Z:
            zz = tl.load(z_base + pos3 * sz_l, mask=m3, other=0.0)
            S = tl.load(S_base + pos3 * sS_l, mask=m3 & dz_on, other=0.0)
        else:
            zz = gy
            S = gy
        s_in = tl.load(scratch + j * SZ + scr_off)
        return u, dl, Bt, Ct, gy, zz, S, s_in

    @triton.jit
    def _scan_fwd_kernel(
        out_ptr, so_b, so_e, so_l, S_ptr, z_ptr, sz_b, sz_e, sz_l, carry_ptr, flag_ptr,
        u0, su0_b, su0_e, su0_l, dl0, sd0_b, sd0_e, sd0_l, A0, B0, C0, D0, bias0,
        u1, su1_b, su1_e, su1_l, dl1, sd1_b, sd1_e, sd1_l, A1, B1, C1, D1, bias1,
        L, Lp, E, N, NSEG, n_chunks,
        NDIR: tl.constexpr, REV0: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        STORE_CARRY: tl.constexpr, STORE_S: tl.constexpr, KSUB: tl.constexpr,
        T: tl.constexpr, ES: tl.constexpr, NP: tl.constexpr, EL: tl.constexpr, FAST: tl.constexpr,
        EVEN_E: tl.constexpr,
    ):
        pid_b = tl.program_id(0)
        pid_e = tl.program_id(1)
        d = tl.program_id(2)
        nb = tl.num_programs(0)
        ne = tl.num_programs(1)
        first = d == 0
        u_ptr = tl.where(first, u0, u1)
        su_b = tl.where(first, su0_b, su1_b)
        su_e = tl.where(first, su0_e, su1_e)
        su_l = tl.where(first, su0_l, su1_l)
        dl_ptr = tl.where(first, dl0, dl1)
        sd_b = tl.where(first, sd0_b, sd1_b)
        sd_e = tl.where(first, sd0_e, sd1_e)
        sd_l = tl.where(first, sd0_l, sd1_l)
        A_ptr = tl.where(first, A0, A1)
        B_ptr = tl.where(first, B0, B1)
        C_ptr = tl.where(first, C0, C1)
        D_ptr = tl.where(first, D0, D1)
        bias_ptr = tl.where(first, bias0, bias1)
        if NDIR == 2:
            rev = d == 1
        else:
            rev = d == 0 if REV0 else d == 1

        nn = tl.arange(0, NP)
        nm = nn < N
        e2 = pid_e * (ES * EL) + tl.arange(0, ES)[:, None] * EL + tl.arange(0, EL)[None, :]
        em2 = (e2 < E) if not EVEN_E else tl.full(e2.shape, 1, tl.int1)
        e3 = e2[None]
        em3 = em2[None]
        state_off = nn[None, :, None] * E + e2[:, None, :]
        state_m = em2[:, None, :] & nm[None, :, None]
        A4 = tl.load(A_ptr + e2[:, None, :] * N + nn[None, :, None], mask=state_m, other=0.0)[None] * _LOG2E
        bias3 = tl.load(bias_ptr + e3, mask=em3, other=0.0) if HAS_BIAS else 0.0
        d3 = tl.load(D_ptr + e3, mask=em3, other=0.0) if HAS_D else 0.0
        tt = tl.arange(0, T)
        u_base = u_ptr + pid_b * su_b + e3 * su_e
        dl_base = dl_ptr + pid_b * sd_b + e3 * sd_e
        o_base = out_ptr + pid_b * so_b + e3 * so_e
        S_base = S_ptr + pid_b * so_b + e3 * so_e
        z_base = z_ptr + pid_b * sz_b + e3 * sz_e
        bc_off0 = pid_b * L * N
        carry_base = carry_ptr + (d * nb + pid_b) * NSEG * N * E
        n_groups = tl.cdiv(n_chunks, KSUB)
        flag_base = flag_ptr + (pid_b * ne + pid_e) * n_groups
        second = (pid_b < 0).to(tl.int32)  # 0: no arrival protocol yet

        s = tl.zeros([ES, NP, EL], dtype=tl.float32)
        u_n, dl_n, B_n, C_n = _load_inputs(0, tt, rev, Lp, L, em3, u_base, su_l, dl_base, sd_l, bc_off0,
                                           B_ptr, C_ptr, nn, nm, N, T)
        for k in range(n_chunks):
            pos, valid, pos3, m3 = _chunk_pos(k, tt, rev, Lp, L, em3, T)
            u = u_n.to(tl.float32)
            dl = dl_n.to(tl.float32)
            Bt = B_n
            Ct = C_n
            # prefetch the next chunk while this one computes
            u_n, dl_n, B_n, C_n = _load_inputs(k + 1, tt, rev, Lp, L, em3, u_base, su_l, dl_base, sd_l, bc_off0,
                                               B_ptr, C_ptr, nn, nm, N, T)
            if NDIR == 2:
                # Arrival protocol per group of KSUB memory chunks: the first direction to reach a group parks its
                # raw outputs in out, the second waits for it to finish the group, then adds, gates and writes.
                m = tl.where(rev, n_chunks - 1 - k, k)
                g = m // KSUB
                top = tl.minimum(g * KSUB + KSUB - 1, n_chunks - 1)
                entering = m == tl.where(rev, top, g * KSUB)
                leaving = m == tl.where(rev, g * KSUB, top)
                if entering:
                    second = (tl.atomic_add(flag_base + g, 1) != 0).to(tl.int32)
                    if second != 0:
                        while (tl.atomic_add(flag_base + g, 0, sem="acquire") & 4) == 0:
                            pass
                        tl.debug_barrier()
                fin_m = m3 & (second != 0)
            else:
                fin_m = m3
            if HAS_Z:
                zz = tl.load(z_base + pos3 * sz_l, mask=fin_m, other=0.0).to(tl.float32)
            if NDIR == 2:
                other = tl.load(o_base + pos3 * so_l, mask=fin_m, other=0.0, cache_modifier=".cg")
            dl, dt = _dt(dl, m3, bias3, HAS_BIAS, SOFTPLUS, FAST)
            if STORE_CARRY:
                if k % KSUB == 0:
                    tl.store(carry_base + (k // KSUB) * N * E + state_off, s, mask=state_m)
            a, b, st = _chunk_states(dt, dt * u, A4, Bt, s, FAST)
            y = tl.sum(st * Ct[:, None, :, None], axis=2)
            if HAS_D:
                y += d3 * u
            s = _last(st)
            if NDIR == 2:
                y_fin = y + other.to(tl.float32)
            else:
                y_fin = y
            if STORE_S:
                tl.store(S_base + pos3 * so_l, y_fin.to(S_ptr.dtype.element_ty), mask=fin_m)
            if HAS_Z:
                y_fin = y_fin * zz * _sigmoid(zz, FAST)
            if NDIR == 2:
                y_out = tl.where(second != 0, y_fin, y)
            else:
                y_out = y_fin
            tl.store(o_base + pos3 * so_l, y_out.to(out_ptr.dtype.element_ty), mask=m3)
            if NDIR == 2:
                if leaving:
                    if second == 0:
                        tl.debug_barrier()
                        tl.atomic_add(flag_base + g, 4, sem="release")  # arrivals count in bits 0-1, done is bit 2

    @triton.jit
    def _scan_bwd_kernel(
        gy_ptr, sg_b, sg_e, sg_l, z_ptr, sz_b, sz_e, sz_l, S_ptr, sS_b, sS_e, sS_l,
        dz_ptr, sdz_b, sdz_e, sdz_l, carry_ptr, scratch_ptr,
        u0, su0_b, su0_e, su0_l, dl0, sd0_b, sd0_e, sd0_l, A0, B0, C0, D0, bias0,
        du0, sdu0_b, sdu0_e, sdu0_l, ddl0, sdd0_b, sdd0_e, sdd0_l, dA0, dB0, dC0, dD0, dbias0,
        u1, su1_b, su1_e, su1_l, dl1, sd1_b, sd1_e, sd1_l, A1, B1, C1, D1, bias1,
        du1, sdu1_b, sdu1_e, sdu1_l, ddl1, sdd1_b, sdd1_e, sdd1_l, dA1, dB1, dC1, dD1, dbias1,
        L, Lp, E, N, NSEG, n_chunks,
        NDIR: tl.constexpr, REV0: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        KSUB: tl.constexpr, T: tl.constexpr, ES: tl.constexpr, NP: tl.constexpr, EL: tl.constexpr,
        FAST: tl.constexpr, EVEN_E: tl.constexpr, NPART: tl.constexpr,
    ):
        pid_b = tl.program_id(0)
        pid_e = tl.program_id(1)
        d = tl.program_id(2)
        nb = tl.num_programs(0)
        ne = tl.num_programs(1)
        first = d == 0
        # this program's direction: pick its pointers and strides (scalar selects)
        u_ptr = tl.where(first, u0, u1)
        su_b = tl.where(first, su0_b, su1_b)
        su_e = tl.where(first, su0_e, su1_e)
        su_l = tl.where(first, su0_l, su1_l)
        dl_ptr = tl.where(first, dl0, dl1)
        sd_b = tl.where(first, sd0_b, sd1_b)
        sd_e = tl.where(first, sd0_e, sd1_e)
        sd_l = tl.where(first, sd0_l, sd1_l)
        A_ptr = tl.where(first, A0, A1)
        B_ptr = tl.where(first, B0, B1)
        C_ptr = tl.where(first, C0, C1)
        D_ptr = tl.where(first, D0, D1)
        bias_ptr = tl.where(first, bias0, bias1)
        du_ptr = tl.where(first, du0, du1)
        sdu_b = tl.where(first, sdu0_b, sdu1_b)
        sdu_e = tl.where(first, sdu0_e, sdu1_e)
        sdu_l = tl.where(first, sdu0_l, sdu1_l)
        ddl_ptr = tl.where(first, ddl0, ddl1)
        sdd_b = tl.where(first, sdd0_b, sdd1_b)
        sdd_e = tl.where(first, sdd0_e, sdd1_e)
        sdd_l = tl.where(first, sdd0_l, sdd1_l)
        dA_ptr = tl.where(first, dA0, dA1)
        dB_ptr = tl.where(first, dB0, dB1) + (pid_e % NPART) * (nb * L * N)
        dC_ptr = tl.where(first, dC0, dC1) + (pid_e % NPART) * (nb * L * N)
        dD_ptr = tl.where(first, dD0, dD1)
        dbias_ptr = tl.where(first, dbias0, dbias1)
        if NDIR == 2:
            rev = d == 1
        else:
            rev = d == 0 if REV0 else d == 1

        nn = tl.arange(0, NP)
        nm = nn < N
        e2 = pid_e * (ES * EL) + tl.arange(0, ES)[:, None] * EL + tl.arange(0, EL)[None, :]
        em2 = (e2 < E) if not EVEN_E else tl.full(e2.shape, 1, tl.int1)
        e3 = e2[None]
        em3 = em2[None]
        state_off = nn[None, :, None] * E + e2[:, None, :]
        state_m = em2[:, None, :] & nm[None, :, None]
        A3 = tl.load(A_ptr + e2[:, None, :] * N + nn[None, :, None], mask=state_m, other=0.0)
        A4 = A3[None] * _LOG2E
        bias3 = tl.load(bias_ptr + e3, mask=em3, other=0.0) if HAS_BIAS else 0.0
        d3 = tl.load(D_ptr + e3, mask=em3, other=0.0) if HAS_D else 0.0
        u_base = u_ptr + pid_b * su_b + e3 * su_e
        dl_base = dl_ptr + pid_b * sd_b + e3 * sd_e
        gy_base = gy_ptr + pid_b * sg_b + e3 * sg_e
        z_base = z_ptr + pid_b * sz_b + e3 * sz_e
        S_base = S_ptr + pid_b * sS_b + e3 * sS_e
        dz_base = dz_ptr + pid_b * sdz_b + e3 * sdz_e
        du_base = du_ptr + pid_b * sdu_b + e3 * sdu_e
        ddl_base = ddl_ptr + pid_b * sdd_b + e3 * sdd_e
        bc_off0 = pid_b * L * N
        carry_base = carry_ptr + (d * nb + pid_b) * NSEG * N * E
        scratch = scratch_ptr + ((d * nb + pid_b) * ne + pid_e) * (KSUB * ES * NP * EL)
        scr_off = (tl.arange(0, ES)[:, None, None] * NP + nn[None, :, None]) * EL + tl.arange(0, EL)[None, None, :]
        tt = tl.arange(0, T)
        t4 = tt[:, None, None, None]

        dA_acc = tl.zeros([ES, NP, EL], dtype=tl.float32)
        dD_acc = tl.zeros([ES, EL], dtype=tl.float32)
        dbias_acc = tl.zeros([ES, EL], dtype=tl.float32)
        g_carry = tl.zeros([ES, NP, EL], dtype=tl.float32)  # a_t * h_t at the first step of the later chunk
        for sg in range(NSEG):
            seg = NSEG - 1 - sg
            k0 = seg * KSUB
            nk = tl.minimum(KSUB, n_chunks - k0)
            # (A) states entering each chunk of the segment, from the stored segment state
            s = tl.load(carry_base + seg * N * E + state_off, mask=state_m, other=0.0)
            for j in range(nk):
                tl.store(scratch + j * (ES * NP * EL) + scr_off, s)
                u, dl, Bt, Ct = _load_inputs(k0 + j, tt, rev, Lp, L, em3, u_base, su_l, dl_base, sd_l, bc_off0,
                                             B_ptr, C_ptr, nn, nm, N, T)
                pos, valid, pos3, m3 = _chunk_pos(k0 + j, tt, rev, Lp, L, em3, T)
                u = u.to(tl.float32)
                dl, dt = _dt(dl.to(tl.float32), m3, bias3, HAS_BIAS, SOFTPLUS, FAST)
                a, b, st = _chunk_states(dt, dt * u, A4, Bt, s, FAST)
                s = _last(st)
            tl.debug_barrier()
            # (B) chunks of the segment, last to first; each chunk's inputs are loaded one chunk ahead
            nxt = _load_bwd(k0 + nk - 1, nk - 1, tt, rev, Lp, L, em3, u_base, su_l, dl_base, sd_l, bc_off0,
                            B_ptr, C_ptr, nn, nm, N, gy_base, sg_l, z_base, sz_l, S_base, sS_l, scratch, scr_off,
                            d == 0, HAS_Z, T, ES * NP * EL)
            for jj in range(nk):
                j = nk - 1 - jj
                k = k0 + j
                u, dl, Bt, Ct, gy, zz, S, s_in = nxt
                nxt = _load_bwd(k - 1, tl.maximum(j - 1, 0), tt, rev, Lp, L, em3, u_base, su_l, dl_base, sd_l,
                                bc_off0, B_ptr, C_ptr, nn, nm, N, gy_base, sg_l, z_base, sz_l, S_base, sS_l,
                                scratch, scr_off, d == 0, HAS_Z, T, ES * NP * EL)
                pos, valid, pos3, m3 = _chunk_pos(k, tt, rev, Lp, L, em3, T)
                u = u.to(tl.float32)
                dl, dt = _dt(dl.to(tl.float32), m3, bias3, HAS_BIAS, SOFTPLUS, FAST)
                bc_off = bc_off0 + pos[:, None] * N + nn[None, :]
                bc_m = valid[:, None] & nm[None, :]
                gy = gy.to(tl.float32)
                if HAS_Z:
                    zz = zz.to(tl.float32)
                    sz = _sigmoid(zz, FAST)
                    gr = gy * zz * sz
                    if d == 0:
                        dz = gy * S.to(tl.float32) * sz * (1.0 + zz * (1.0 - sz))
                        tl.store(dz_base + pos3 * sdz_l, dz.to(dz_ptr.dtype.element_ty), mask=m3)
                else:
                    gr = gy
                dtu = dt * u
                a, b, st = _chunk_states(dt, dtu, A4, Bt, s_in, FAST)
                # adjoint h_t = a_{t+1} h_{t+1} + gr_t C_t, run on the chunk flipped along T (registers only)
                cc = gr[:, :, None, :] * Ct[:, None, :, None]
                af = tl.flip(a, 0)
                cf = tl.flip(cc, 0)
                a_next, _, _ = tl.associative_scan((tl.zeros_like(af), af, tl.zeros_like(af)), 0, _prev)
                cf = tl.where(t4 == 0, cf + g_carry[None], cf)
                _, hf = tl.associative_scan((a_next, cf), 0, _affine)
                h = tl.flip(hf, 0)
                g_carry = _first(a * h)
                # dC_t = sum_e gr_t s_t ; dB_t = sum_e h_t dt_t u_t
                # sum over ES first (inside each thread), then over EL (across lanes: shuffles on half the values)
                dC = tl.sum(tl.sum(gr[:, :, None, :] * st, axis=1), axis=2)
                dB = tl.sum(tl.sum(h * dtu[:, :, None, :], axis=1), axis=2)
                tl.atomic_add(dC_ptr + bc_off, dC, mask=bc_m, sem="relaxed")
                tl.atomic_add(dB_ptr + bc_off, dB, mask=bc_m, sem="relaxed")
                hB = tl.sum(h * Bt[:, None, :, None], axis=2)
                hsa = h * (st - b)  # h_t a_t s_{t-1}: the gradient of the log-decay dt_t * A
                ddt = u * hB + tl.sum(hsa * A3[None], axis=2)
                dA_acc += tl.sum(hsa * dt[:, :, None, :], axis=0)
                du = dt * hB
                if HAS_D:
                    du += d3 * gr
                    dD_acc += tl.sum(gr * u, axis=0)
                if SOFTPLUS:
                    ddl = ddt * _sigmoid(dl, FAST)
                else:
                    ddl = ddt
                ddl = tl.where(m3, ddl, 0.0)
                dbias_acc += tl.sum(ddl, axis=0)
                tl.store(du_base + pos3 * sdu_l, du.to(du_ptr.dtype.element_ty), mask=m3)
                tl.store(ddl_base + pos3 * sdd_l, ddl.to(ddl_ptr.dtype.element_ty), mask=m3)
            tl.debug_barrier()
        tl.atomic_add(dA_ptr + e2[:, None, :] * N + nn[None, :, None], dA_acc, mask=state_m, sem="relaxed")
        if HAS_D:
            tl.atomic_add(dD_ptr + e2, dD_acc, mask=em2, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + e2, dbias_acc, mask=em2, sem="relaxed")


# ----------------------------------------------------------------------------------------------------------
# launchers and autograd


def _fwd_lanes(batch: int, channels: int, ndir: int) -> int:
    """Lanes per channel block of the forward kernel: 32 (all N states of a channel in one thread), or 16
    (N split over 2 lanes: twice the warps) when a 32-lane split would leave the SMs short of warps."""
    if FWD_EL_AUTO and FWD_EL == 32 and batch * -(-channels // 32) * ndir < FWD_MIN_WARPS:
        return 16
    return FWD_EL


def _bc32(m: torch.Tensor) -> torch.Tensor:
    """(B, N, L) -> float32 (B, L, N), contiguous (what the kernels read)."""
    return m.transpose(1, 2).to(torch.float32).contiguous()


def _f32(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.to(torch.float32).contiguous()


class _ScanFn(torch.autograd.Function):
    """One or two directions (``ndir``) of the selective scan, gated by a shared z, summed."""

    @staticmethod
    def forward(ctx, ndir, rev0, softplus, z, *dirs):  # type: ignore[override]
        per = [dirs[7 * k : 7 * k + 7] for k in range(ndir)]  # (u, delta, A, B, C, D, bias) per direction
        u0 = per[0][0]
        batch, channels, length = u0.shape
        nstate = per[0][2].shape[1]
        device = u0.device
        if length == 0:
            ctx.empty = True
            return u0.new_zeros(u0.shape)
        ctx.empty = False
        need_grad = any(ctx.needs_input_grad)
        prepared = []
        for u, delta, A, Bm, Cm, D, bias in per:
            prepared.append((u, delta, _f32(A), _bc32(Bm), _bc32(Cm), _f32(D), _f32(bias)))
        has_d = per[0][5] is not None
        has_bias = per[0][6] is not None
        has_z = z is not None
        tm = token_major(u0)
        out = new_buffer(batch, channels, length, u0.dtype, device, tm)
        n_chunks = -(-length // FWD_T)
        padded = n_chunks * FWD_T
        ksub = SEG // FWD_T
        nseg = -(-n_chunks // ksub)
        carry = (torch.empty(ndir, batch, nseg, nstate, channels, dtype=torch.float32, device=device)
                 if need_grad else out)
        S = new_buffer(batch, channels, length, u0.dtype, device, tm) if (need_grad and has_z) else out
        el = _fwd_lanes(batch, channels, ndir)
        block = FWD_ES * el
        n_eb = triton.cdiv(channels, block)
        flags = (torch.zeros(batch * n_eb * -(-n_chunks // ksub), dtype=torch.int32, device=device)
                 if ndir == 2 else out)
        p1 = prepared[1] if ndir == 2 else prepared[0]
        dummy = out
        flat = []
        for u, delta, A, Bm, Cm, D, bias in (prepared[0], p1):
            flat += [u, *u.stride(), delta, *delta.stride(), A, Bm, Cm,
                     dummy if D is None else D, dummy if bias is None else bias]
        _scan_fwd_kernel[(batch, n_eb, ndir)](
            out, *out.stride(), S, dummy if z is None else z, *strides(z), carry, flags, *flat,
            length, padded, channels, nstate, nseg, n_chunks,
            NDIR=ndir, REV0=bool(rev0), HAS_D=has_d, HAS_Z=has_z, HAS_BIAS=has_bias, SOFTPLUS=bool(softplus),
            STORE_CARRY=need_grad, STORE_S=need_grad and has_z, KSUB=ksub,
            T=FWD_T, ES=FWD_ES, NP=next_pow2(nstate), EL=el, FAST=fast_math(), EVEN_E=channels % block == 0,
            num_warps=max(1, el // 32), **maxnreg(FWD_MAXNREG),
        )
        if need_grad:
            ctx.save_for_backward(z, S if has_z else None, carry, *[t for p in prepared for t in p])
            ctx.grad_pair = grad_pair_of(z)  # dz goes straight into in_proj's output gradient (grad_pair.py)
            ctx.meta = (ndir, bool(rev0), bool(softplus), has_d, has_bias, has_z, nseg, padded)
            ctx.orig = [(p[0].dtype, p[1].dtype, p[2].dtype, p[3].dtype, p[4].dtype,
                         None if p[5] is None else p[5].dtype, None if p[6] is None else p[6].dtype) for p in per]
        return out

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        ndir, rev0, softplus, has_d, has_bias, has_z, nseg, padded = ctx.meta
        if ctx.empty:
            return (None, None, None, None) + (None,) * (7 * ndir)
        z, S, carry, *flat = ctx.saved_tensors
        per = [flat[7 * k : 7 * k + 7] for k in range(ndir)]
        u0 = per[0][0]
        batch, channels, length = u0.shape
        nstate = per[0][2].shape[1]
        device = u0.device
        block = BWD_ES * BWD_EL
        ne = triton.cdiv(channels, block)
        npart = min(BWD_NPART, ne)
        grads = []
        for u, delta, A, _Bm, _Cm, _D, _bias in per:
            grads.append((
                new_buffer(batch, channels, length, u.dtype, device, token_major(u)),
                new_buffer(batch, channels, length, delta.dtype, device, token_major(delta)),
                torch.zeros_like(A),
                torch.zeros(npart, batch, length, nstate, dtype=torch.float32, device=device),
                torch.zeros(npart, batch, length, nstate, dtype=torch.float32, device=device),
                torch.zeros(channels, dtype=torch.float32, device=device),
                torch.zeros(channels, dtype=torch.float32, device=device),
            ))
        if has_z and ctx.grad_pair is not None:  # the scan's backward runs before the conv's: a fresh buffer
            dz = ctx.grad_pair.half(1, z, fresh=True)
        else:
            dz = new_buffer(batch, channels, length, z.dtype, device, token_major(z)) if has_z else None
        if gy.stride(1) != 1 and gy.stride(2) != 1:
            gy = gy.contiguous()
        ksub = SEG // BWD_T
        np2 = next_pow2(nstate)
        scratch = torch.empty(ndir * batch * ne * ksub * BWD_ES * np2 * BWD_EL, dtype=torch.float32,
                              device=device)
        dummy = gy
        args = []
        for k in (0, 1 if ndir == 2 else 0):
            u, delta, A, Bm, Cm, D, bias = per[k]
            du, ddl, dA, dB, dC, dD, dbias = grads[k]
            args += [u, *u.stride(), delta, *delta.stride(), A, Bm, Cm,
                     dummy if D is None else D, dummy if bias is None else bias,
                     du, *du.stride(), ddl, *ddl.stride(), dA, dB, dC, dD, dbias]
        _scan_bwd_kernel[(batch, ne, ndir)](
            gy, *gy.stride(), dummy if z is None else z, *strides(z),
            dummy if S is None else S, *strides(S), dummy if dz is None else dz, *strides(dz),
            carry, scratch, *args, length, padded, channels, nstate, nseg, padded // BWD_T,
            NDIR=ndir, REV0=rev0, HAS_D=has_d, HAS_Z=has_z, HAS_BIAS=has_bias, SOFTPLUS=softplus,
            KSUB=ksub, T=BWD_T, ES=BWD_ES, NP=np2, EL=BWD_EL, FAST=fast_math(), EVEN_E=channels % block == 0,
            NPART=npart, num_warps=max(1, BWD_EL // 32), **maxnreg(BWD_MAXNREG),
        )
        out = []
        for k in range(ndir):
            du, ddl, dA, dB, dC, dD, dbias = grads[k]
            dt_u, dt_d, dt_a, dt_b, dt_c, dt_dd, dt_bias = ctx.orig[k]
            dB, dC = (x[0] if npart == 1 else x.sum(0) for x in (dB, dC))
            out += [du, ddl, dA.to(dt_a), dB.transpose(1, 2).to(dt_b), dC.transpose(1, 2).to(dt_c),
                    None if dt_dd is None else dD.to(dt_dd), None if dt_bias is None else dbias.to(dt_bias)]
        return (None, None, None, dz, *out)


def selective_scan_triton(d: ScanDirection, z: torch.Tensor | None = None, delta_softplus: bool = True,
                          reverse: bool = False) -> torch.Tensor:
    """The selective scan (one direction) in one fused Triton kernel; the scan backend contract."""
    check_direction(d)
    if d.u.dtype == torch.float64 or not triton_available(d.u.device):
        from vtr.encoders.selective_scan import selective_scan_chunked  # fallback only (the registry imports us)

        return selective_scan_chunked(d, z, delta_softplus, reverse)
    with torch.autocast(device_type=d.u.device.type, enabled=False):
        return _ScanFn.apply(1, reverse, delta_softplus, z, *d)


def bidirectional_selective_scan(fwd: ScanDirection, bwd: ScanDirection, z: torch.Tensor | None,
                                 delta_softplus: bool = True) -> torch.Tensor:
    """``scan(fwd) + scan(bwd, reverse=True)``, both gated by silu(z), in one launch.

    Both directions must have the same shapes and agree on which of D and delta_bias are given.
    """
    check_direction(fwd)
    check_direction(bwd)
    if fwd.u.shape != bwd.u.shape or fwd.A.shape != bwd.A.shape:
        raise ValueError("both directions need the same (B, E, L) and (E, N) shapes")
    if (fwd.D is None) != (bwd.D is None) or (fwd.delta_bias is None) != (bwd.delta_bias is None):
        raise ValueError("give D and delta_bias for both directions or for neither")
    if fwd.u.dtype == torch.float64 or not triton_available(fwd.u.device):
        from vtr.encoders.selective_scan import selective_scan_chunked  # fallback only (the registry imports us)

        return (selective_scan_chunked(fwd, z, delta_softplus)
                + selective_scan_chunked(bwd, z, delta_softplus, reverse=True))
    with torch.autocast(device_type=fwd.u.device.type, enabled=False):
        return _ScanFn.apply(2, False, delta_softplus, z, *fwd, *bwd)
