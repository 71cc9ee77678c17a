"""Selective scan and causal conv backends: known answers, chunked == reference (values and gradients),
reverse direction, numerics under large decays, low precision, memory bound and backend selection."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vtr.encoders import selective_scan as ss
from vtr.encoders.selective_scan import (
    ScanDirection,
    available_backends,
    causal_conv1d,
    get_backend,
    register_backend,
    resolve_backend,
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
)
from vtr.errors import ConfigError

ARG_NAMES = ("u", "delta", "A", "Bm", "Cm", "D", "z", "delta_bias")


def run(fn, x: dict[str, torch.Tensor], **kw) -> torch.Tensor:
    """Call a backend scan function (``fn(ScanDirection, z, ...)``) with make_inputs' keyword tensors."""
    return fn(ScanDirection(**{k: v for k, v in x.items() if k != "z"}), x.get("z"), **kw)


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ss.ENV_VAR, raising=False)


def make_inputs(
    batch: int, channels: int, nstate: int, length: int, dtype: torch.dtype = torch.float32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random scan inputs with Mamba-like A = -exp(A_log), A_log ~ log(1..N)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    a_log = torch.log(torch.arange(1, nstate + 1, dtype=dtype)).repeat(channels, 1) + 0.1 * randn(
        channels, nstate
    )
    return {
        "u": randn(batch, channels, length),
        "delta": randn(batch, channels, length) - 1.0,
        "A": -torch.exp(a_log),
        "Bm": randn(batch, nstate, length),
        "Cm": randn(batch, nstate, length),
        "D": randn(channels),
        "z": randn(batch, channels, length),
        "delta_bias": 0.5 * randn(channels),
    }


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------------------------------------
# reference: known answers


def test_reference_hand_computed() -> None:
    # E=2, N=2, L=3, dt=1 (no softplus), decays exp(A) = 0.5 (n=0) and 0.25 (n=1); worked out by hand.
    u = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]])
    delta = torch.ones(1, 2, 3)
    A = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.25]]))
    Bm = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]])
    Cm = torch.tensor([[[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]])
    # e=0: s(n=0) = 1, 2.5, 4.25;  s(n=1) = 0, 2, 0.5   -> y = 1, 2, 4.75
    # e=1: s(n=0) = 0, 1, 0.5;     s(n=1) = 0, 1, 0.25  -> y = 0, 1, 0.75
    expected = torch.tensor([[[1.0, 2.0, 4.75], [0.0, 1.0, 0.75]]])
    # reverse (t = 2, 1, 0): e=0: s(n=0) = 3, 3.5, 2.75; s(n=1) = 0, 2, 0.5 -> y = 3.25, 2, 3
    #                        e=1: s(n=0) = 0, 1, 0.5;    s(n=1) = 0, 1, 0.25 -> y = 0.75, 1, 0
    expected_rev = torch.tensor([[[3.25, 2.0, 3.0], [0.75, 1.0, 0.0]]])
    D = torch.tensor([1.0, -1.0])
    for fn in (selective_scan_reference, selective_scan_chunked):
        d = ScanDirection(u, delta, A, Bm, Cm)
        torch.testing.assert_close(fn(d, delta_softplus=False), expected)
        torch.testing.assert_close(fn(d, delta_softplus=False, reverse=True), expected_rev)
        torch.testing.assert_close(fn(d._replace(D=D), delta_softplus=False), expected + D[:, None] * u)


def scalar_scan(x: dict[str, torch.Tensor]) -> list[list[list[float]]]:
    """The scan written with Python floats, one (b, e, n) recurrence at a time."""
    u, delta, A, Bm, Cm = (x[k].tolist() for k in ("u", "delta", "A", "Bm", "Cm"))
    D, z, bias = x["D"].tolist(), x["z"].tolist(), x["delta_bias"].tolist()
    batch, channels, length, nstate = len(u), len(u[0]), len(u[0][0]), len(A[0])
    out = [[[0.0] * length for _ in range(channels)] for _ in range(batch)]
    for b in range(batch):
        for e in range(channels):
            state = [0.0] * nstate
            for t in range(length):
                dt = math.log1p(math.exp(delta[b][e][t] + bias[e]))  # softplus
                y = 0.0
                for n in range(nstate):
                    state[n] = math.exp(dt * A[e][n]) * state[n] + dt * Bm[b][n][t] * u[b][e][t]
                    y += state[n] * Cm[b][n][t]
                y += D[e] * u[b][e][t]
                zz = z[b][e][t]
                out[b][e][t] = y * zz / (1.0 + math.exp(-zz))  # silu
    return out


def test_reference_matches_scalar_loop() -> None:
    x = make_inputs(2, 3, 4, 6, dtype=torch.float64, seed=1)
    expected = torch.tensor(scalar_scan(x), dtype=torch.float64)
    torch.testing.assert_close(run(selective_scan_reference, x), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# chunked == reference, values and all gradients

SHAPES = [  # batch, channels, nstate, length, chunk, block
    (2, 3, 4, 1, 8, 4),  # a single step
    (2, 3, 4, 5, 8, 4),  # shorter than a chunk, not a multiple of the block
    (2, 3, 4, 37, 8, 4),  # several chunks, not a multiple of the chunk
    (1, 4, 3, 70, 16, 8),
    (2, 4, 16, 1569, None, None),  # VideoMamba's length, default chunking
]


def check_against_reference(
    x: dict[str, torch.Tensor], chunk: int | None, block: int | None, reverse: bool, tol: float, **kw: bool
) -> None:
    inputs = {k: v.clone().requires_grad_() for k, v in x.items() if v is not None}
    names = list(inputs)
    y_ref = run(selective_scan_reference, inputs, reverse=reverse, **kw)
    y = run(selective_scan_chunked, inputs, reverse=reverse, chunk_size=chunk, block_size=block, **kw)
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    assert rel_err(y, y_ref) < tol
    gy = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad(y_ref, list(inputs.values()), gy)
    g = torch.autograd.grad(y, list(inputs.values()), gy)
    for name, a, b in zip(names, g, g_ref, strict=True):
        assert rel_err(a, b) < tol, f"grad of {name}: relative error {rel_err(a, b):.2e}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"L{s[3]}")
@pytest.mark.parametrize("extras", [True, False], ids=["D_z_bias", "plain"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_chunked_matches_reference_float32(shape: tuple, extras: bool, reverse: bool) -> None:
    batch, channels, nstate, length, chunk, block = shape
    x = make_inputs(batch, channels, nstate, length)
    if not extras:
        x = {k: v for k, v in x.items() if k not in ("D", "z", "delta_bias")}
    check_against_reference(x, chunk, block, reverse, tol=1e-5)


@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: f"L{s[3]}")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_chunked_matches_reference_float64(shape: tuple, reverse: bool) -> None:
    batch, channels, nstate, length, chunk, block = shape
    x = make_inputs(batch, channels, nstate, length, dtype=torch.float64)
    check_against_reference(x, chunk, block, reverse, tol=1e-12, delta_softplus=False)
    check_against_reference(x, chunk, block, reverse, tol=1e-12)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_chunked_gradcheck(reverse: bool) -> None:
    """The custom backward against finite differences, independent of the reference's autograd."""
    x = make_inputs(1, 2, 3, 11, dtype=torch.float64, seed=3)
    inputs = tuple(x[k].clone().requires_grad_() for k in ARG_NAMES)

    def fn(u, delta, A, Bm, Cm, D, z, delta_bias) -> torch.Tensor:
        d = ScanDirection(u, delta, A, Bm, Cm, D, delta_bias)
        return selective_scan_chunked(d, z, reverse=reverse, chunk_size=4, block_size=2)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "fn", [selective_scan_reference, selective_scan_chunked], ids=["reference", "chunked"]
)
def test_reverse_is_flip_scan_flip(fn) -> None:
    x = make_inputs(2, 3, 4, 29, seed=4)
    flipped = {k: v.flip(-1) if k in ("u", "delta", "Bm", "Cm", "z") else v for k, v in x.items()}
    expected = run(fn, flipped).flip(-1)
    torch.testing.assert_close(run(fn, x, reverse=True), expected, rtol=1e-5, atol=1e-6)


def test_large_decays_stay_finite() -> None:
    """A = -exp(A_log), A_log ~ log(1..16), dt from ~0 to ~30: decays down to exp(-480) must not blow up."""
    x = make_inputs(2, 8, 16, 300, seed=5)
    g = torch.Generator().manual_seed(6)
    x["A"] = -torch.exp(torch.log(torch.arange(1, 17.0))).repeat(8, 1)
    x["delta"] = torch.rand(2, 8, 300, generator=g) * 35.0 - 5.0  # softplus -> dt in (0.007, 30)
    x["delta"][:, :, 100:140] = 5.0  # a long stretch of dt ~ 5 (per-chunk decay sums far below -88)
    check_against_reference(x, 64, 8, reverse=False, tol=1e-5)
    inputs = {k: v.clone().requires_grad_() for k, v in x.items()}
    y = run(selective_scan_chunked, inputs)
    y.sum().backward()
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(v.grad).all() for v in inputs.values())


# ---------------------------------------------------------------------------------------------------------
# precision handling


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "fn", [selective_scan_reference, selective_scan_chunked], ids=["reference", "chunked"]
)
def test_low_precision_inputs(fn, dtype: torch.dtype) -> None:
    x = make_inputs(2, 4, 8, 50, seed=7)
    low = {k: v.to(dtype) for k, v in x.items()}
    y = run(fn, low)
    assert y.dtype == dtype
    # computed in float32 from the (rounded) low-precision inputs, rounded once at the end
    expected = run(selective_scan_reference, {k: v.float() for k, v in low.items()})
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=1e-2)


def test_autocast_keeps_float32() -> None:
    x = make_inputs(2, 4, 8, 50, seed=8)
    inputs = {k: v.clone().requires_grad_() for k, v in x.items()}
    plain = run(selective_scan_chunked, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = run(selective_scan_chunked, inputs)
        assert y.dtype == torch.float32
        y.sum().backward()
    torch.testing.assert_close(y, plain, rtol=1e-6, atol=1e-6)
    assert all(v.grad is not None and v.grad.dtype == torch.float32 for v in inputs.values())


# ---------------------------------------------------------------------------------------------------------
# memory bound


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_chunked_never_materialises_the_full_state() -> None:
    batch, channels, nstate, length, chunk = 2, 16, 16, 512, 32
    x = make_inputs(batch, channels, nstate, length, seed=9)
    inputs = {k: v.clone().requires_grad_() for k, v in x.items()}
    probe = _LargestTensor()
    with probe:
        y = run(selective_scan_chunked, inputs, chunk_size=chunk)
        y.sum().backward()
    assert probe.largest <= batch * (chunk + 1) * channels * nstate  # one chunk (plus one look-ahead step)
    assert probe.largest * 8 < batch * length * channels * nstate


# ---------------------------------------------------------------------------------------------------------
# causal conv


def test_causal_conv_hand_case() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    w = torch.tensor([[1.0, 10.0, 100.0]])  # the last tap multiplies the current step
    # y_t = 1 * x_{t-2} + 10 * x_{t-1} + 100 * x_t
    torch.testing.assert_close(
        causal_conv1d(x, w, activation=None), torch.tensor([[[100.0, 210.0, 321.0, 432.0]]])
    )
    # anti-causal: y_t = 100 * x_t + 10 * x_{t+1} + 1 * x_{t+2}
    torch.testing.assert_close(
        causal_conv1d(x, w, activation=None, reverse=True), torch.tensor([[[123.0, 234.0, 340.0, 400.0]]])
    )
    bias = torch.tensor([-300.0])
    torch.testing.assert_close(
        causal_conv1d(x, w.unsqueeze(1), bias), F.silu(torch.tensor([[[-200.0, -90.0, 21.0, 132.0]]]))
    )


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("activation", ["silu", None])
def test_causal_conv_reverse_is_flip_conv_flip(width: int, activation: str | None) -> None:
    g = torch.Generator().manual_seed(10)
    x, w, b = (
        torch.randn(2, 5, 17, generator=g),
        torch.randn(5, 1, width, generator=g),
        torch.randn(5, generator=g),
    )
    expected = causal_conv1d(x.flip(-1), w, b, activation=activation).flip(-1)
    torch.testing.assert_close(causal_conv1d(x, w, b, activation=activation, reverse=True), expected)
    reference = F.conv1d(x, w, b, padding=width - 1, groups=5)[..., :17]
    reference = F.silu(reference) if activation else reference
    torch.testing.assert_close(causal_conv1d(x, w, b, activation=activation), reference)


def test_causal_conv_keeps_dtype_and_rejects_bad_activation() -> None:
    x = torch.randn(1, 3, 8).to(torch.bfloat16)
    assert causal_conv1d(x, torch.randn(3, 4)).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="activation"):
        causal_conv1d(x, torch.randn(3, 4), activation="relu")


# ---------------------------------------------------------------------------------------------------------
# backend selection


def test_cpu_defaults_to_numba_and_dispatches() -> None:
    assert resolve_backend(None, torch.device("cpu")) == "numba"  # numba is a dependency (encoders/numba_scan.py)
    assert available_backends("cpu") == ["reference", "chunked", "numba"]
    x = make_inputs(1, 2, 3, 20)
    torch.testing.assert_close(selective_scan(**x), run(selective_scan_reference, x), rtol=1e-5, atol=1e-6)


def test_env_and_explicit_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ss.ENV_VAR, "reference")
    assert resolve_backend(None, "cpu") == "reference"
    assert resolve_backend("chunked", "cpu") == "chunked"  # explicit beats the environment
    monkeypatch.setenv(ss.ENV_VAR, "auto")
    assert resolve_backend(None, "cpu") == "numba"


def test_unknown_or_unavailable_backend_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*reference, chunked"):
        resolve_backend("nope", "cpu")
    monkeypatch.setenv(ss.ENV_VAR, "nope")
    with pytest.raises(ConfigError, match=r"VTR_SCAN_BACKEND.*reference, chunked"):
        selective_scan(**make_inputs(1, 2, 3, 4))
    with pytest.raises(ConfigError, match="not available"):
        resolve_backend("mamba_ssm", "cpu")


def test_cuda_preference_and_register_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ss, "_BACKENDS", dict(ss._BACKENDS))  # undo registrations afterwards
    ss._BACKENDS.pop("triton", None)  # registered at import where triton is installed
    monkeypatch.setattr(ss, "_mamba_ssm_importable", lambda: False)
    assert resolve_backend(None, "cuda") == "chunked"
    monkeypatch.setattr(ss, "_mamba_ssm_importable", lambda: True)
    assert resolve_backend(None, "cuda") == "mamba_ssm"

    calls = []

    def fake_scan(d: ScanDirection, z, delta_softplus: bool, reverse: bool) -> torch.Tensor:
        calls.append(reverse)
        return torch.zeros_like(d.u)

    register_backend("triton", fake_scan, lambda device: device.type in ("cuda", "cpu"))
    assert resolve_backend(None, "cuda") == "triton"
    assert resolve_backend(None, "cpu") == "numba"  # CPU keeps its default
    x = make_inputs(1, 2, 3, 4)
    assert not selective_scan(**x, reverse=True, backend="triton").any() and calls == [True]
    # without a conv_fn a backend uses the reference conv
    w = torch.randn(2, 4)
    torch.testing.assert_close(causal_conv1d(x["u"], w, backend="triton"), causal_conv1d(x["u"], w))
    # ... and its bidirectional paths default to two single-direction calls
    ops = get_backend("triton", "cpu")
    d = ScanDirection(**{k: v for k, v in x.items() if k != "z"})
    assert not ops.bidirectional_scan(d, d, x["z"]).any() and calls == [True, False, True]
    u_f, u_b = ops.bidirectional_conv(x["u"], w, None, w, None)
    torch.testing.assert_close(u_b, causal_conv1d(x["u"], w, reverse=True))


def test_backend_default_bidirectional_paths_match_single_calls() -> None:
    """chunked (no fused paths): bidirectional scan == scan + reverse scan, conv pair == two convs."""
    ops = get_backend("chunked", "cpu")
    xf, xb = make_inputs(2, 3, 4, 17, seed=21), make_inputs(2, 3, 4, 17, seed=22)
    df = ScanDirection(**{k: v for k, v in xf.items() if k != "z"})
    db = ScanDirection(**{k: v for k, v in xb.items() if k != "z"})
    z = xf["z"]
    expected = run(selective_scan_reference, xf) + run(selective_scan_reference, {**xb, "z": z}, reverse=True)
    torch.testing.assert_close(ops.bidirectional_scan(df, db, z), expected, rtol=1e-5, atol=1e-6)
    w, b = torch.randn(3, 4), torch.randn(3)
    u_f, u_b = ops.bidirectional_conv(xf["u"], w, b, 2 * w, None)
    torch.testing.assert_close(u_f, causal_conv1d(xf["u"], w, b, backend="reference"))
    torch.testing.assert_close(u_b, causal_conv1d(xf["u"], 2 * w, None, reverse=True, backend="reference"))


def test_backend_pickles_by_name() -> None:
    import pickle

    ops = get_backend("chunked", "cpu")
    assert pickle.loads(pickle.dumps(ops)) is ops


def test_shape_errors() -> None:
    x = make_inputs(1, 2, 3, 4)
    with pytest.raises(ValueError, match="Bm"):
        selective_scan(**{**x, "Bm": x["Bm"][:, :, :3]})
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(**{**x, "A": x["A"][:1]})


# ---------------------------------------------------------------------------------------------------------
# CUDA (run on a GPU machine with `pytest -m gpu`)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_chunked_on_cuda(reverse: bool) -> None:
    x = {k: v.cuda() for k, v in make_inputs(2, 8, 16, 700, seed=11).items()}
    check_against_reference(x, None, None, reverse, tol=1e-5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not ss._mamba_ssm_importable(), reason="needs mamba_ssm")
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_mamba_ssm_backend(reverse: bool) -> None:
    x = {k: v.cuda() for k, v in make_inputs(2, 8, 16, 300, seed=12).items()}
    expected = run(selective_scan_reference, x, reverse=reverse)
    torch.testing.assert_close(
        selective_scan(**x, reverse=reverse, backend="mamba_ssm"), expected, rtol=1e-4, atol=1e-4
    )
    w, b = torch.randn(8, 4, device="cuda"), torch.randn(8, device="cuda")
    torch.testing.assert_close(
        causal_conv1d(x["u"], w, b, reverse=reverse, backend="mamba_ssm"),
        causal_conv1d(x["u"], w, b, reverse=reverse, backend="reference"),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("module", ["triton_scan", "triton_conv", "triton_norm", "triton_backend", "grad_pair"])
def test_kernel_modules_import_first_without_a_cycle(module: str) -> None:
    """Each kernel module imports on its own (before the registry), and the registry still ends up complete."""
    import subprocess
    import sys

    code = (f"import vtr.encoders.{module}; from vtr.encoders import selective_scan as ss; "
            "from vtr.encoders.triton_common import HAS_TRITON; "
            "assert ('triton' in ss._BACKENDS) == HAS_TRITON, list(ss._BACKENDS)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
