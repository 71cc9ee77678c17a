"""Triton selective scan and causal conv (encoders/triton_scan.py, triton_conv.py): forward and every gradient
against the reference backend, both directions fused, poisoned outputs, token-major views, the mixer hook.

GPU tests (``-m gpu``) need CUDA and triton. On a CPU machine with triton installed, the ``slow`` tests run
the same kernels under the Triton interpreter on tiny shapes::

    TRITON_INTERPRET=1 pytest -m slow tests/test_triton_scan.py

Without triton everything here is skipped (CI installs no triton).
"""

from __future__ import annotations

import copy

import pytest
import torch

from vtr.encoders import selective_scan as ss
from vtr.encoders import triton_common as tc
from vtr.encoders import triton_conv as tconv
from vtr.encoders import triton_scan as ts
from vtr.encoders.selective_scan import ScanDirection, causal_conv1d_reference, selective_scan_reference

CUDA = torch.cuda.is_available() and tc.HAS_TRITON
INTERP = tc.HAS_TRITON and tc.INTERPRET and not torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA and triton")
needs_interp = pytest.mark.skipif(not INTERP, reason="needs triton with TRITON_INTERPRET=1 on a CPU machine")
NAMES = ("u", "delta", "A", "Bm", "Cm", "D", "delta_bias")


def run(fn, x: dict, z: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """Call a backend scan function (``fn(ScanDirection, z, ...)``) with make_inputs' keyword tensors."""
    return fn(ScanDirection(**{k: v for k, v in x.items() if k != "z"}), x.get("z") if z is None else z, **kw)


def bidir(flat: list) -> torch.Tensor:
    """The fused bidirectional scan of split_dirs' flat list."""
    return ts.bidirectional_selective_scan(ScanDirection(*flat[:7]), ScanDirection(*flat[7:14]), flat[14])


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ss.ENV_VAR, raising=False)


@pytest.fixture
def interp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small tiles for the interpreter (multi-segment at tiny L), and a numpy>=2.3 fix for its scalar ints."""
    from triton.runtime import interpreter as ti

    small = dict(SEG=8, FWD_T=4, BWD_T=2, FWD_EL=8, BWD_EL=8, BWD_ES=2, BWD_NPART=2,
                 CONV_BL=8, CONV_BWD_BL=8, CONV_BE=8, CONV_BWD_BE=8)
    for name, value in small.items():
        monkeypatch.setattr(tconv if name.startswith("CONV") else ts, name, value)
    original = ti._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    monkeypatch.setattr(ti, "_patch_lang_tensor", patched)


def make_inputs(batch, channels, nstate, length, seed=0, device="cpu", token_major=False, extras=True):
    """Random scan inputs, A = -exp(log(1..N) + noise); (B, E, L) tensors, optionally laid out (B, L, E)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    def bel(x):  # (B, E, L) values; token-major memory when asked
        return x.transpose(1, 2).contiguous().transpose(1, 2) if token_major else x

    a_log = torch.log(torch.arange(1, nstate + 1.0)).repeat(channels, 1) + 0.1 * randn(channels, nstate)
    x = {
        "u": bel(randn(batch, channels, length)),
        "delta": bel(randn(batch, channels, length) - 1.0),
        "A": -torch.exp(a_log),
        "Bm": randn(batch, nstate, length),
        "Cm": randn(batch, nstate, length),
        "D": randn(channels),
        "z": bel(randn(batch, channels, length)),
        "delta_bias": 0.5 * randn(channels),
    }
    if not extras:
        x = {k: v for k, v in x.items() if k not in ("D", "z", "delta_bias")}
    return {k: v.to(device) for k, v in x.items()}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref||; an exactly-zero reference (dA at L=1: no earlier state) is measured against 1e-3."""
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp_min(1e-3)).item()


def lowp(x: dict, dtype: torch.dtype) -> dict:
    """u, delta, B, C, z in ``dtype`` (what autocast feeds the scan); A, D, bias stay float32."""
    return {k: v.to(dtype) if k in ("u", "delta", "Bm", "Cm", "z") else v for k, v in x.items()}


def grads(y: torch.Tensor, inputs: dict, gy: torch.Tensor) -> dict:
    return dict(zip(inputs, torch.autograd.grad(y, list(inputs.values()), gy), strict=True))


def check_single(x: dict, reverse: bool, tol: float, gtol: float) -> None:
    """Triton vs the float64 reference: output and the gradient of every input."""
    inputs = {k: v.clone().requires_grad_() for k, v in x.items()}
    ref_in = {k: v.detach().double().requires_grad_() for k, v in x.items()}
    y = run(ts.selective_scan_triton, inputs, reverse=reverse)
    y_ref = run(selective_scan_reference, ref_in, reverse=reverse)
    assert y.dtype == x["u"].dtype and y.shape == y_ref.shape
    assert rel_err(y, y_ref) < tol, f"forward: relative error {rel_err(y, y_ref):.2e}"
    gy = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    gy = gy.to(y_ref.device)
    g = grads(y, inputs, gy.to(y.dtype))
    g_ref = grads(y_ref, ref_in, gy)
    for name in inputs:
        assert g[name].dtype == x[name].dtype
        err = rel_err(g[name], g_ref[name])
        assert err < gtol, f"grad of {name}: relative error {err:.2e}"


def split_dirs(xf: dict, xb: dict, z: torch.Tensor) -> list:
    return [xf[k] for k in NAMES] + [xb[k] for k in NAMES] + [z]


def as_dirs(flat: list) -> tuple[dict, dict, torch.Tensor]:
    return dict(zip(NAMES, flat[:7], strict=True)), dict(zip(NAMES, flat[7:14], strict=True)), flat[14]


def check_bidirectional(xf: dict, xb: dict, z: torch.Tensor, tol: float) -> None:
    """The fused kernel equals the sum of the two single-direction triton calls, values and gradients."""
    flat = [t.clone().requires_grad_() for t in split_dirs(xf, xb, z)]
    y = bidir(flat)
    flat2 = [t.detach().clone().requires_grad_() for t in flat]
    f2, b2, z2 = as_dirs(flat2)
    y2 = run(ts.selective_scan_triton, f2, z=z2) + run(ts.selective_scan_triton, b2, z=z2, reverse=True)
    assert rel_err(y, y2) < tol
    gy = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, flat, gy), torch.autograd.grad(y2, flat2, gy), strict=True):
        assert rel_err(a, b) < tol


# ---------------------------------------------------------------------------------------------------------
# GPU

SHAPES = [  # batch, channels, nstate, length
    (2, 3, 4, 1),  # a single step
    (2, 3, 4, 5),  # shorter than a chunk
    (2, 37, 16, 37),  # E not a multiple of the block, L not a multiple of the chunk
    (1, 100, 16, 300),  # several segments, E not a multiple of the block
    (32, 64, 16, 131),  # batch 32
    (1, 8, 16, 1569),  # VideoMamba length at 8 frames
]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_matches_reference_fp32(shape, reverse):
    x = make_inputs(*shape, seed=sum(shape), device="cuda")
    check_single(x, reverse, tol=2e-6, gtol=2e-5)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_matches_reference_without_extras_fp32(reverse):
    x = make_inputs(2, 37, 16, 150, seed=3, device="cuda", extras=False)
    check_single(x, reverse, tol=2e-6, gtol=2e-5)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("shape", [(2, 37, 16, 77), (32, 64, 16, 131)], ids=["odd", "batch32"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_matches_reference_bf16(shape, reverse):
    x = lowp(make_inputs(*shape, seed=5, device="cuda", token_major=True), torch.bfloat16)
    check_single(x, reverse, tol=1e-2, gtol=2e-2)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_longest_sequence(reverse):
    """L = 1 + 64 * 196 = 12545 (64 frames); checked against the chunked backend (itself tested against the
    reference), in float64, which is much faster than the reference loop at this length."""
    x = make_inputs(1, 24, 16, 12545, seed=7, device="cuda")
    inputs = {k: v.clone().requires_grad_() for k, v in x.items()}
    ref_in = {k: v.detach().double().requires_grad_() for k, v in x.items()}
    y = run(ts.selective_scan_triton, inputs, reverse=reverse)
    y_ref = run(ss.selective_scan_chunked, ref_in, reverse=reverse)
    assert rel_err(y, y_ref) < 2e-6
    gy = torch.randn_like(y_ref)
    g, g_ref = grads(y, inputs, gy.float()), grads(y_ref, ref_in, gy)
    for name in inputs:
        assert rel_err(g[name], g_ref[name]) < 5e-5, name


@pytest.mark.gpu
@needs_gpu
def test_large_decays_stay_finite():
    x = make_inputs(2, 8, 16, 300, seed=5, device="cuda")
    x["A"] = -torch.arange(1, 17.0, device="cuda").repeat(8, 1)
    delta = torch.rand(2, 8, 300, generator=torch.Generator().manual_seed(6)) * 35.0 - 5.0
    delta[:, :, 100:140] = 5.0
    x["delta"] = delta.cuda()
    check_single(x, False, tol=2e-6, gtol=2e-5)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(2, 37, 16, 77), (32, 64, 16, 300), (1, 40, 16, 1569)], ids=["odd", "b32", "long"])
def test_bidirectional_equals_two_single_calls(dtype, shape):
    xf = lowp(make_inputs(*shape, seed=11, device="cuda", token_major=True), dtype)
    xb = lowp(make_inputs(*shape, seed=12, device="cuda", token_major=True), dtype)
    check_bidirectional(xf, xb, xf["z"], tol=1e-6 if dtype == torch.float32 else 1e-2)


@pytest.mark.gpu
@needs_gpu
def test_bidirectional_matches_reference():
    xf = make_inputs(3, 50, 16, 200, seed=13, device="cuda")
    xb = make_inputs(3, 50, 16, 200, seed=14, device="cuda")
    flat = [t.clone().requires_grad_() for t in split_dirs(xf, xb, xf["z"])]
    ref = [t.detach().double().requires_grad_() for t in flat]
    y = bidir(flat)
    rf, rb, rz = as_dirs(ref)
    y_ref = run(selective_scan_reference, rf, z=rz) + run(selective_scan_reference, rb, z=rz, reverse=True)
    assert rel_err(y, y_ref) < 2e-6
    gy = torch.randn_like(y_ref)
    for a, b in zip(torch.autograd.grad(y, flat, gy.float()), torch.autograd.grad(y_ref, ref, gy), strict=True):
        assert rel_err(a, b) < 2e-5


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("token_major", [False, True], ids=["bel", "ble"])
def test_poisoned_outputs_are_fully_written(monkeypatch, token_major):
    """Every buffer the kernels fill (outputs and per-element gradients) starts as NaN and ends finite."""
    monkeypatch.setattr(tc, "_FILL", float("nan"))
    for shape in [(3, 37, 16, 77), (2, 70, 5, 1)]:
        xf = make_inputs(*shape, seed=15, device="cuda", token_major=token_major)
        xb = make_inputs(*shape, seed=16, device="cuda", token_major=token_major)
        flat = [t.clone().requires_grad_() for t in split_dirs(xf, xb, xf["z"])]
        y = bidir(flat)
        gs = torch.autograd.grad(y, flat, torch.randn_like(y))
        y1 = run(ts.selective_scan_triton, as_dirs(flat)[0], z=flat[14], reverse=True)
        gs1 = torch.autograd.grad(y1, flat[:7] + [flat[14]], torch.randn_like(y1))
        for t in (y, *gs, y1, *gs1):
            assert torch.isfinite(t).all()
        x = xf["u"].clone().requires_grad_()
        w = torch.randn(shape[1], 1, 4, device="cuda", requires_grad=True)
        u_f, u_b = tconv.bidirectional_causal_conv1d(x, w, None, w, None)
        (gx,) = torch.autograd.grad((u_f * u_b).sum(), [x])
        assert torch.isfinite(u_f).all() and torch.isfinite(u_b).all() and torch.isfinite(gx).all()


@pytest.mark.gpu
@needs_gpu
def test_token_major_views_give_the_same_result():
    a = make_inputs(2, 40, 16, 100, seed=17, device="cuda")
    b = make_inputs(2, 40, 16, 100, seed=17, device="cuda", token_major=True)
    assert b["u"].stride(1) == 1
    torch.testing.assert_close(run(ts.selective_scan_triton, a), run(ts.selective_scan_triton, b), rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_conv_matches_reference(width, dtype):
    g = torch.Generator().manual_seed(width)
    x = torch.randn(2, 300, 70, generator=g).transpose(1, 2).to("cuda", dtype)  # token-major (B, E, L) view
    wf, wb = (torch.randn(70, 1, width, generator=g).cuda() for _ in range(2))
    bf, bb = (torch.randn(70, generator=g).cuda() for _ in range(2))
    ins = [t.clone().requires_grad_() for t in (x, wf, bf, wb, bb)]
    ref = [t.detach().double().requires_grad_() for t in ins]
    yf, yb = tconv.bidirectional_causal_conv1d(*ins)
    rf = causal_conv1d_reference(ref[0], ref[1], ref[2])
    rb = causal_conv1d_reference(ref[0], ref[3], ref[4], reverse=True)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert yf.dtype == dtype and rel_err(yf, rf) < tol and rel_err(yb, rb) < tol
    single = tconv.causal_conv1d_triton(ins[0], ins[3], ins[4], reverse=True)
    assert rel_err(single, rb) < tol
    g1, g2 = torch.randn_like(rf), torch.randn_like(rb)
    got = torch.autograd.grad((yf, yb), ins, (g1.to(dtype), g2.to(dtype)))
    want = torch.autograd.grad((rf, rb), ref, (g1, g2))
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < (1e-5 if dtype == torch.float32 else 2e-2)


@pytest.mark.gpu
@needs_gpu
def test_backend_is_registered_and_preferred():
    assert "triton" in ss.available_backends("cuda")
    assert ss.resolve_backend(None, "cuda") == "triton"
    assert "triton" not in ss.available_backends("cpu")


@pytest.mark.gpu
@needs_gpu
def test_mixer_triton_equals_chunked(monkeypatch):
    """BiMambaMixer through the fused hook (conv + bidirectional scan kernels) vs the chunked backend."""
    from vtr.encoders.videomamba import create_video_encoder

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = create_video_encoder("videomamba_tiny", num_frames=8, depth=1, scan_backend="chunked").cuda()
    mixer = model.layers[0].mixer
    with torch.no_grad():
        for name, p in mixer.named_parameters():
            if p.ndim == 1 or "conv" in name:
                p.add_(0.1 * torch.randn_like(p))
    fused = copy.deepcopy(mixer)
    fused.set_scan_backend("triton")
    h = torch.randn(3, 1 + 4 * 49, 192, device="cuda")
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    y_ref, y = mixer(h1), fused(h2)
    assert rel_err(y, y_ref) < 1e-5
    gy = torch.randn_like(y)
    y_ref.backward(gy)
    y.backward(gy)
    assert rel_err(h2.grad, h1.grad) < 1e-4
    for (name, p_ref), p in zip(mixer.named_parameters(), fused.parameters(), strict=True):
        assert rel_err(p.grad, p_ref.grad) < 1e-4, name
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = fused(h)
    assert low.dtype == torch.bfloat16 and rel_err(low, y_ref) < 3e-2


# ---------------------------------------------------------------------------------------------------------
# CPU, under the Triton interpreter


@pytest.mark.slow
@needs_interp
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreter_single_direction(interp, reverse):
    check_single(make_inputs(2, 9, 3, 19, seed=1), reverse, tol=2e-6, gtol=2e-5)


@pytest.mark.slow
@needs_interp
def test_interpreter_bidirectional_and_conv(interp, monkeypatch):
    monkeypatch.setattr(tc, "_FILL", float("nan"))
    xf, xb = make_inputs(2, 9, 4, 21, seed=2, token_major=True), make_inputs(2, 9, 4, 21, seed=3)
    check_bidirectional(xf, xb, xf["z"], tol=1e-6)
    x = xf["u"].clone().requires_grad_()
    w = torch.randn(9, 1, 4, requires_grad=True)
    b = torch.randn(9, requires_grad=True)
    u_f, u_b = tconv.bidirectional_causal_conv1d(x, w, b, w, b)
    torch.testing.assert_close(u_f, causal_conv1d_reference(x, w, b), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(u_b, causal_conv1d_reference(x, w, b, reverse=True), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(torch.autograd.grad((u_f + u_b).sum(), x)[0]).all()


def _mixer_core(xz, w, b, dirs_rest, pair: bool):
    """conv pair + bidirectional scan on x, z split from xz (tagged with a GradPair or plain views)."""
    from vtr.encoders.grad_pair import split_xz

    channels = xz.shape[-1] // 2
    if pair:
        x, z = split_xz(xz)
    else:
        x, z = xz.transpose(1, 2).chunk(2, dim=1)
    u_f, u_b = tconv.bidirectional_causal_conv1d(x, w[0], b[0], w[1], b[1])
    (delta_f, rest_f), (delta_b, rest_b) = dirs_rest
    assert u_f.shape[1] == channels
    fwd, bwd = ScanDirection(u_f, delta_f, *rest_f), ScanDirection(u_b, delta_b, *rest_b)
    return ts.bidirectional_selective_scan(fwd, bwd, z)


def check_grad_pair(device: str, monkeypatch) -> None:
    """in_proj's output gradient written in place by the conv and scan backwards == autograd's concatenation."""
    batch, channels, nstate, length = 2, 9, 4, 21
    g = torch.Generator().manual_seed(5)
    xz = torch.randn(batch, length, 2 * channels, generator=g).to(device)
    w = [torch.randn(channels, 1, 4, generator=g).to(device) for _ in range(2)]
    b = [torch.randn(channels, generator=g).to(device) for _ in range(2)]
    dirs_rest = []
    for seed in (1, 2):
        x = make_inputs(batch, channels, nstate, length, seed=seed, device=device)
        dirs_rest.append((x["delta"], (x["A"], x["Bm"], x["Cm"], x["D"], x["delta_bias"])))
    gy = torch.randn(batch, channels, length, generator=g).to(device)
    grads_xz = []
    for pair in (False, True):
        leaf = xz.clone().requires_grad_()
        _mixer_core(leaf * 1.0, w, b, dirs_rest, pair).backward(gy)
        grads_xz.append(leaf.grad)
    torch.testing.assert_close(grads_xz[1], grads_xz[0], rtol=1e-5, atol=1e-6)
    # and the pair really was used: the split's input gradient is the one buffer both backwards wrote into
    from vtr.encoders.grad_pair import GradPair

    handed, original = [], GradPair.half

    def recording(self, index, like, fresh=False):
        view = original(self, index, like, fresh)
        handed.append((index, view is not None, self.buf.data_ptr()))
        return view

    monkeypatch.setattr(GradPair, "half", recording)
    seen = []
    mid = xz.clone().requires_grad_() * 1.0
    mid.register_hook(seen.append)
    _mixer_core(mid, w, b, dirs_rest, True).backward(gy)
    assert [(i, ok) for i, ok, _ in handed] == [(1, True), (0, True)]  # scan (dz) first, then conv (dx)
    assert {ptr for *_, ptr in handed} == {seen[0].data_ptr()}


@pytest.mark.gpu
@needs_gpu
def test_grad_pair_on_gpu(monkeypatch):
    check_grad_pair("cuda", monkeypatch)


@pytest.mark.slow
@needs_interp
def test_interpreter_grad_pair(interp, monkeypatch):
    check_grad_pair("cpu", monkeypatch)
