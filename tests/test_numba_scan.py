"""The Numba CPU scan backend: values and all gradients equal ``reference`` on odd shapes, both directions; chosen
automatically on CPU; float64 and low-precision inputs; the encoder runs on it; threads follow torch's setting."""

from __future__ import annotations

import pytest
import torch

from vtr.encoders import numba_scan
from vtr.encoders import selective_scan as ss
from vtr.encoders.numba_scan import selective_scan_numba
from vtr.encoders.selective_scan import resolve_backend


def selective_scan_reference(**kw) -> torch.Tensor:
    """The reference backend in the keyword form of :func:`selective_scan_numba`."""
    return ss.selective_scan(**kw, backend="reference")


pytestmark = pytest.mark.skipif(not numba_scan.numba_importable(), reason="numba is not installed")

ARG_NAMES = ("u", "delta", "A", "Bm", "Cm", "D", "z", "delta_bias")


def make_inputs(batch: int, channels: int, nstate: int, length: int, dtype: torch.dtype = torch.float32,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """Mamba-like inputs: A = -exp(A_log), A_log ~ log(1..N) plus noise; some large steps (strong decay)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    a_log = torch.log(torch.arange(1, nstate + 1, dtype=dtype)).repeat(channels, 1) + 0.3 * randn(channels, nstate)
    return {"u": randn(batch, channels, length), "delta": 2.0 * randn(batch, channels, length) - 1.0,
            "A": -torch.exp(a_log), "Bm": randn(batch, nstate, length), "Cm": randn(batch, nstate, length),
            "D": randn(channels), "z": randn(batch, channels, length), "delta_bias": 0.5 * randn(channels)}


def _run(fn, inputs: dict[str, torch.Tensor], extras: bool, reverse: bool):
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    kw = leaves if extras else {k: leaves[k] for k in ARG_NAMES[:5]}
    y = fn(**kw, reverse=reverse)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((y * gy).sum(), list(kw.values()))
    return y, dict(zip(kw, grads, strict=True))


# odd shapes: channels not a multiple of the kernel's 64-channel block (and fewer than one block), N not a power
# of two, L = 1, batch > 1
SHAPES = [(1, 1, 1, 1), (3, 5, 7, 1), (2, 70, 16, 33), (1, 129, 3, 200), (4, 7, 5, 13)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("extras", [True, False], ids=["D_z_bias", "plain"])
def test_matches_reference_values_and_grads(shape: tuple, reverse: bool, extras: bool) -> None:
    x = make_inputs(*shape)
    y, grads = _run(selective_scan_numba, x, extras, reverse)
    y_ref, grads_ref = _run(selective_scan_reference, x, extras, reverse)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    for name, g in grads.items():
        torch.testing.assert_close(g, grads_ref[name], rtol=1e-4, atol=1e-4, msg=f"d{name}")


def test_long_sequence_strong_decay_forward() -> None:
    """The full VideoMamba-M length (8 x 14 x 14 + 1 tokens), with steps large enough to clamp the fast exp."""
    x = make_inputs(1, 64, 16, 1569, seed=3)
    x["delta"] = x["delta"] * 4.0
    torch.testing.assert_close(selective_scan_numba(**x), selective_scan_reference(**x), rtol=1e-4, atol=1e-4)


def test_bf16_in_bf16_out_and_float64_falls_back() -> None:
    x = make_inputs(2, 9, 4, 11)
    xb = {k: v.bfloat16() for k, v in x.items()}
    yb = selective_scan_numba(**xb)
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), selective_scan_reference(**xb).float(), rtol=2e-2, atol=2e-2)
    xd = make_inputs(1, 3, 2, 6, dtype=torch.float64)
    torch.testing.assert_close(selective_scan_numba(**xd), selective_scan_reference(**xd), rtol=1e-10, atol=1e-12)


def test_chosen_automatically_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ss.ENV_VAR, raising=False)
    assert resolve_backend(None, "cpu") == "numba"
    assert not numba_scan.is_available("meta")
    calls = []
    monkeypatch.setattr(ss, "_BACKENDS", dict(ss._BACKENDS))  # the original registry comes back after the test
    ss.register_backend("numba", lambda *a, **k: calls.append(1) or numba_scan.scan_direction(*a, **k),
                        numba_scan.is_available)
    x = make_inputs(1, 4, 3, 5)
    torch.testing.assert_close(ss.selective_scan(**x), selective_scan_reference(**x), rtol=1e-4, atol=1e-5)
    assert calls == [1]


def test_encoder_forward_and_backward_match_chunked() -> None:
    """A small VideoMamba on the numba backend gives the chunked backend's features and parameter gradients."""
    from vtr.encoders.videomamba import create_video_encoder

    torch.manual_seed(0)
    enc = create_video_encoder("videomamba_tiny", num_frames=2, img_size=32, depth=2)
    clip = torch.randn(2, 2, 3, 32, 32)
    out = {}
    for backend in ("numba", "chunked"):
        enc.set_scan_backend(backend)
        enc.zero_grad()
        feats = enc(clip)
        feats = feats[0] if isinstance(feats, tuple) else feats
        feats.square().mean().backward()
        out[backend] = (feats.detach(), [p.grad.clone() for p in enc.parameters() if p.grad is not None])
    torch.testing.assert_close(out["numba"][0], out["chunked"][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(out["numba"][1], out["chunked"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_kernel_threads_follow_torch() -> None:
    """The kernels use torch's intra-op thread count (set by vtr.threads beside the decode workers)."""
    import numba

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        selective_scan_numba(**make_inputs(1, 3, 2, 4))
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("extras", [True, False], ids=["D_z_bias", "plain"])
@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "raw_dt"])
def test_fused_inference_matches_reference(shape: tuple, reverse: bool, extras: bool, softplus: bool) -> None:
    """Without autograd, softplus + scan + skip + gate run in one kernel (the `vtr index` path)."""
    x = make_inputs(*shape)
    if not softplus:
        x["delta"] = x["delta"].abs()  # a raw step must be positive
    kw = x if extras else {k: x[k] for k in ARG_NAMES[:5]}
    with torch.no_grad():
        y = selective_scan_numba(**kw, delta_softplus=softplus, reverse=reverse)
    y_ref = selective_scan_reference(**kw, delta_softplus=softplus, reverse=reverse)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-6 * float(y_ref.abs().max()) + 1e-7)
