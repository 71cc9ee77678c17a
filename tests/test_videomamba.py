"""VideoMamba encoder: official key layout, parity with an independent official-style forward, loading."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from vtr.encoders.checkpoint import (
    interpolate_pos_embed,
    interpolate_temporal_embed,
    load_video_encoder,
)
from vtr.encoders.videomamba import create_video_encoder
from vtr.errors import CheckpointError, ConfigError

# ---------------------------------------------------------------- key layout (spec section 3.2)


def expected_keys(depth: int, d: int, frames: int = 8) -> dict[str, tuple[int, ...]]:
    """Official ``vision_encoder.*`` keys and shapes, written out from the spec's list."""
    e, r, n = 2 * d, math.ceil(d / 16), 16
    keys = {
        "patch_embed.proj.weight": (d, 3, 1, 16, 16),
        "patch_embed.proj.bias": (d,),
        "cls_token": (1, 1, d),
        "pos_embed": (1, 197, d),
        "temporal_pos_embedding": (1, frames, d),
        "norm.weight": (d,),
        "pool_norm.weight": (d,),
        "pool_norm.bias": (d,),
        "clip_decoder.0.head.weight": (512, d),
        "clip_decoder.0.head.bias": (512,),
        "clip_decoder.0.norm.weight": (512,),
        "clip_decoder.0.norm.bias": (512,),
    }
    for i in range(depth):
        p = f"layers.{i}."
        keys[p + "norm.weight"] = (d,)
        keys[p + "mixer.in_proj.weight"] = (2 * e, d)
        keys[p + "mixer.out_proj.weight"] = (d, e)
        for s in ("", "_b"):
            keys[p + f"mixer.conv1d{s}.weight"] = (e, 1, 4)
            keys[p + f"mixer.conv1d{s}.bias"] = (e,)
            keys[p + f"mixer.x_proj{s}.weight"] = (r + 2 * n, e)
            keys[p + f"mixer.dt_proj{s}.weight"] = (e, r)
            keys[p + f"mixer.dt_proj{s}.bias"] = (e,)
        keys[p + "mixer.A_log"] = (e, n)
        keys[p + "mixer.A_b_log"] = (e, n)
        keys[p + "mixer.D"] = (e,)
        keys[p + "mixer.D_b"] = (e,)
    return keys


@pytest.mark.parametrize("name,depth,dim", [
    ("videomamba_tiny", 24, 192), ("videomamba_small", 24, 384), ("videomamba_middle", 32, 576)])
def test_state_dict_matches_official_layout(name, depth, dim):
    with torch.device("meta"):
        model = create_video_encoder(name, num_frames=8)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_keys(depth, dim)


def test_videomamba_middle_parameter_count():
    with torch.device("meta"):
        model = create_video_encoder("videomamba_middle", num_frames=8)
    backbone = sum(p.numel() for k, p in model.named_parameters() if not k.startswith(("clip_decoder", "pool_norm")))
    assert backbone == 73_645_056


def test_unknown_encoder_name_lists_options():
    with pytest.raises(ConfigError, match="videomamba_middle"):
        create_video_encoder("videomamba_huge")


# ---------------------------------------------------------------- an independent official-style forward


def _scan_loop(u, delta, a, b, c, d, z, bias):
    """selective_scan_ref semantics, written out as a plain loop (fp32)."""
    delta = F.softplus(delta.float() + bias[:, None])
    s = torch.zeros(u.shape[0], u.shape[1], a.shape[1])
    ys = []
    for t in range(u.shape[2]):
        s = torch.exp(delta[:, :, t, None] * a) * s + delta[:, :, t, None] * b[:, None, :, t] * u[:, :, t, None]
        ys.append((s * c[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=2) + d[:, None] * u
    return y * F.silu(z)


def _mixer_official(m, h):
    """mamba_inner_fn_no_out_proj both ways on explicitly flipped x and z, summed, then out_proj."""
    seq_len = h.shape[1]
    xz = rearrange(m.in_proj.weight @ rearrange(h, "b l d -> d (b l)"), "d (b l) -> b d l", l=seq_len)

    def branch(xz, conv, x_proj, dt_proj, a_log, d):
        x, z = xz.chunk(2, dim=1)
        u = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=3, groups=x.shape[1])[..., :seq_len])
        x_dbl = F.linear(rearrange(u, "b d l -> (b l) d"), x_proj.weight)
        r = dt_proj.weight.shape[1]
        delta = rearrange(dt_proj.weight @ x_dbl[:, :r].t(), "d (b l) -> b d l", l=seq_len)
        bm = rearrange(x_dbl[:, r:r + 16], "(b l) n -> b n l", l=seq_len)
        cm = rearrange(x_dbl[:, r + 16:], "(b l) n -> b n l", l=seq_len)
        return _scan_loop(u, delta, -torch.exp(a_log), bm, cm, d, z, dt_proj.bias)

    y_f = branch(xz, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D)
    y_b = branch(xz.flip([-1]), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b)
    return F.linear(rearrange(y_f + y_b.flip([-1]), "b d l -> b l d"), m.out_proj.weight)


def _rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


def official_forward(ve, video):
    """PretrainVideoMamba.forward as the official code structures it (per-frame cls, x[:B, :1], ...)."""
    x = ve.patch_embed.proj(video.permute(0, 2, 1, 3, 4))
    b, c, t, h, w = x.shape
    x = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
    x = torch.cat((ve.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + ve.pos_embed
    cls_tokens = x[:b, :1, :]
    x = rearrange(x[:, 1:], "(b t) n m -> (b n) t m", b=b, t=t) + ve.temporal_pos_embedding
    x = torch.cat((cls_tokens, rearrange(x, "(b n) t m -> b (t n) m", b=b, t=t)), dim=1)
    residual, hidden = None, x
    for layer in ve.layers:
        residual = hidden if residual is None else residual + hidden
        hidden = _mixer_official(layer.mixer, _rms(residual, layer.norm.weight))
    out = _rms(residual + hidden, ve.norm.weight)
    tokens = out[:, 1:]
    pooled = ve.pool_norm(out[:, :1] + tokens.reshape(b, t, h * w, c).mean(2))
    return tokens, pooled


def tiny_encoder(**kw):
    """A 2-layer, 32-wide VideoMamba on 32x32 inputs (2x2 patches), 4 frames."""
    torch.manual_seed(0)
    kw = {"scan_backend": "reference", **kw}
    model = create_video_encoder("videomamba_tiny", num_frames=4, img_size=32, depth=2, embed_dim=32,
                                 clip_decoder_embed_dim=32, **kw)
    with torch.no_grad():  # non-trivial values everywhere (official init leaves several at 0)
        for name, p in model.named_parameters():
            if p.ndim <= 1 and "norm" not in name:
                p.add_(0.1 * torch.randn_like(p))
        model.cls_token.normal_(std=0.5)
        model.temporal_pos_embedding.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_forward_matches_official_structure(backend):
    model = tiny_encoder(scan_backend=backend)
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        out = model(video)
        ref_tokens, ref_pooled = official_forward(model, video)
    assert out.tokens.shape == (2, 16, 32) and out.pooled.shape == (2, 4, 32)
    torch.testing.assert_close(out.tokens, ref_tokens, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.pooled, ref_pooled, rtol=1e-4, atol=1e-5)


def test_image_input_skips_temporal_embedding():
    model = tiny_encoder()
    image = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        out = model(image)
        model.temporal_pos_embedding.zero_()
        out_zero = model(image)
    assert out.pooled.shape == (1, 1, 32)
    torch.testing.assert_close(out.tokens, out_zero.tokens)


def test_mixer_is_bidirectional():
    model = tiny_encoder()
    mixer = model.layers[0].mixer
    h = torch.randn(1, 9, 32, requires_grad=True)
    out = mixer(h)
    (g_first_from_last,) = torch.autograd.grad(out[0, 0].sum(), h, retain_graph=True)
    (g_last_from_first,) = torch.autograd.grad(out[0, -1].sum(), h)
    assert g_first_from_last[0, -1].abs().sum() > 0  # token 0 depends on the last token
    assert g_last_from_first[0, 0].abs().sum() > 0  # and the last token on token 0


def test_wrong_frame_count_is_a_clear_error():
    with pytest.raises(ConfigError, match="num_frames=8"):
        tiny_encoder()(torch.randn(1, 8, 3, 32, 32))


# ---------------------------------------------------------------- masking and the alignment head


def test_masking_drops_exactly_the_masked_tokens():
    model = tiny_encoder()
    video = torch.randn(2, 4, 3, 32, 32)
    mask = torch.zeros(2, 17, dtype=torch.bool)
    mask[0, [2, 5, 6, 11]] = True
    mask[1, [1, 8, 9, 16]] = True
    with torch.no_grad():
        tokens, _ = model.embed(video)
        out = model(video, mask=mask, keep_temporal=False)
        # The masked forward equals running the layers on exactly the visible embedded tokens.
        hidden, residual = tokens[~mask].reshape(2, 13, 32), None
        for layer in model.layers:
            hidden, residual = layer(hidden, residual)
        aligned_ref = residual
        final = model.norm(residual + hidden)
    assert out.tokens.shape == (2, 12, 32) and out.pooled.shape == (2, 1, 32)
    torch.testing.assert_close(out.tokens, final[:, 1:])
    assert out.aligned.shape == (2, 13, 512)
    # aligned = clip_decoder(student residual + sinusoid rows of the visible positions)
    from vtr.encoders.videomamba import sinusoid_table

    pos = sinusoid_table(17, 32).expand(2, -1, -1)[~mask].reshape(2, 13, 32)
    torch.testing.assert_close(out.aligned, model.clip_decoder[0](aligned_ref + pos))


def test_all_visible_mask_equals_unmasked_forward():
    model = tiny_encoder()
    video = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        plain = model(video)
        masked = model(video, mask=torch.zeros(1, 17, dtype=torch.bool))
    torch.testing.assert_close(plain.tokens, masked.tokens)
    torch.testing.assert_close(plain.pooled, masked.pooled)
    assert plain.aligned is None and masked.aligned is not None


def test_sinusoid_table_known_values():
    from vtr.encoders.videomamba import sinusoid_table

    table = sinusoid_table(3, 4)[0]
    pos = torch.arange(3.0)
    torch.testing.assert_close(table[:, 0], torch.sin(pos))
    torch.testing.assert_close(table[:, 1], torch.cos(pos))
    torch.testing.assert_close(table[:, 2], torch.sin(pos / 100.0))
    torch.testing.assert_close(table[:, 3], torch.cos(pos / 100.0))


# ---------------------------------------------------------------- checkpoints


def _official_file(model, path, wrap=True):
    sd = {f"vision_encoder.{k}": v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    sd["text_encoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(4, 4, dtype=torch.bfloat16)
    sd["temp"] = torch.tensor(0.07)
    torch.save({"model": sd, "epoch": 1} if wrap else sd, path)


@pytest.mark.parametrize("wrap", [True, False])
def test_official_bf16_checkpoint_loads_and_reproduces(tmp_path, wrap):
    src = tiny_encoder()
    _official_file(src, tmp_path / "ckpt.pth", wrap=wrap)
    dst = create_video_encoder("videomamba_tiny", num_frames=4, img_size=32, depth=2, embed_dim=32,
                               clip_decoder_embed_dim=32, scan_backend="reference").eval()
    report = load_video_encoder(dst, tmp_path / "ckpt.pth")
    assert not report.missing and not report.left_at_init and not report.interpolated
    assert report.unexpected == []  # text/temp keys are outside the vision_encoder. prefix
    with torch.no_grad():  # the source rounded to bf16 is exactly what was saved
        for p in src.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        video = torch.randn(1, 4, 3, 32, 32)
        torch.testing.assert_close(dst(video).pooled, src(video).pooled, rtol=0, atol=0)


def test_stage1_checkpoint_without_pool_norm_loads(tmp_path):
    src = tiny_encoder()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("pool_norm")}
    sd["norm_f.weight"] = sd.pop("norm.weight")
    dst = tiny_encoder()
    report = load_video_encoder(dst, sd)
    assert sorted(report.left_at_init) == ["pool_norm.bias", "pool_norm.weight"]
    torch.testing.assert_close(dst.norm.weight, src.norm.weight)


def test_missing_and_mismatched_keys_are_clear_errors(tmp_path):
    src = tiny_encoder()
    sd = src.state_dict()
    del sd["layers.1.mixer.A_b_log"]
    with pytest.raises(CheckpointError, match="lacks 1 encoder keys"):
        load_video_encoder(tiny_encoder(), sd)
    wide = create_video_encoder("videomamba_tiny", num_frames=4, img_size=32, depth=2, embed_dim=48,
                                clip_decoder_embed_dim=48)
    with pytest.raises(CheckpointError, match="does not match"):
        load_video_encoder(wide, src.state_dict())
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError, match="truncated"):
        load_video_encoder(src, tmp_path / "trunc.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_video_encoder(src, tmp_path / "empty.pth")


def test_position_embedding_interpolation():
    pos = torch.randn(1, 197, 8)
    assert interpolate_pos_embed(pos, 196) is pos  # same grid: untouched
    up = interpolate_pos_embed(pos, 256)
    assert up.shape == (1, 257, 8)
    torch.testing.assert_close(up[:, :1], pos[:, :1])  # cls row kept
    const = torch.ones(1, 197, 8)
    torch.testing.assert_close(interpolate_pos_embed(const, 49), torch.ones(1, 50, 8))
    t = torch.randn(1, 8, 8)
    assert interpolate_temporal_embed(t, 8) is t
    # linear, align_corners=False, 2 -> 4: samples at source positions -0.25, 0.25, 0.75, 1.25 (clamped)
    two = torch.tensor([[[0.0], [1.0]]])
    torch.testing.assert_close(interpolate_temporal_embed(two, 4).flatten(), torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_checkpoint_at_other_frame_count_is_interpolated(tmp_path):
    src = tiny_encoder()
    dst = create_video_encoder("videomamba_tiny", num_frames=8, img_size=48, depth=2, embed_dim=32,
                               clip_decoder_embed_dim=32, scan_backend="reference").eval()
    report = load_video_encoder(dst, src.state_dict())
    assert set(report.interpolated) == {"pos_embed", "temporal_pos_embedding"}
    torch.testing.assert_close(dst.temporal_pos_embedding,
                               interpolate_temporal_embed(src.temporal_pos_embedding.detach(), 8))
    with torch.no_grad():
        out = dst(torch.randn(1, 8, 3, 48, 48))
    assert out.pooled.shape == (1, 8, 32) and out.tokens.shape == (1, 8 * 9, 32)


# ---------------------------------------------------------------- training features


def test_gradient_checkpointing_gives_same_gradients():
    model = tiny_encoder(drop_path_rate=0.0).train()
    video = torch.randn(2, 4, 3, 32, 32)

    def grads(num_ckpt):
        model.zero_grad()
        model.set_grad_checkpointing(num_ckpt)
        model(video).pooled.square().sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain, ckpt = grads(0), grads(2)
    assert plain.keys() == ckpt.keys() and len(plain) > 20
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-6, msg=k)


def test_drop_path_only_in_training():
    model = tiny_encoder(drop_path_rate=0.5)
    video = torch.randn(4, 4, 3, 32, 32)
    with torch.no_grad():
        a, b = model(video).pooled, model(video).pooled
        torch.testing.assert_close(a, b)
        model.train()
        torch.manual_seed(1)
        c = model(video).pooled
    assert not torch.allclose(a, c)


def test_bf16_autocast_runs_close_to_fp32():
    model = tiny_encoder(scan_backend="chunked")
    video = torch.randn(1, 4, 3, 32, 32)
    with torch.no_grad():
        ref = model(video).pooled
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(video).pooled
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)


# ---------------------------------------------------------------- GPU (run through the device machine)


def _cuda_backends() -> list[str]:
    if not torch.cuda.is_available():
        return ["chunked"]
    from vtr.encoders.selective_scan import available_backends

    return [b for b in available_backends("cuda") if b != "reference"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", _cuda_backends())
def test_cuda_backends_match_cpu_reference(backend, monkeypatch):
    import copy

    # cuDNN convolutions default to TF32 (10-bit mantissa); compare in true fp32.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = create_video_encoder("videomamba_tiny", num_frames=8, depth=2, scan_backend="reference").eval()
    video = torch.randn(2, 8, 3, 224, 224)
    with torch.no_grad():
        ref = model(video)
        gpu = copy.deepcopy(model).cuda()
        gpu.set_scan_backend(backend)
        out = gpu(video.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = gpu(video.cuda())
    torch.testing.assert_close(out.pooled.cpu(), ref.pooled, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(out.tokens.cpu(), ref.tokens, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(low.pooled.float().cpu(), ref.pooled, rtol=0.05, atol=0.05)


def _count_host_work(monkeypatch) -> list[str]:
    """Record, from vtr's own code, every backend resolution, import and environment read from now on."""
    import builtins
    import os
    import sys
    from collections.abc import MutableMapping
    from pathlib import Path

    import vtr
    from vtr.encoders import selective_scan as ss
    from vtr.encoders import videomamba as vm

    roots = tuple(str(Path(m.__file__).resolve().parent) for m in (vtr, ss))
    seen: list[str] = []

    def from_vtr(depth: int) -> bool:  # the reader, or up to two frames above it (os.getenv, `in os.environ`)
        frame = sys._getframe(depth)
        for _ in range(3):
            if frame is None:
                return False
            if frame.f_code.co_filename.startswith(roots):
                return True
            frame = frame.f_back
        return False

    def counting(module, name: str) -> None:
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            seen.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for module, name in ((ss, "resolve_backend"), (ss, "get_backend"), (ss, "available_backends"),
                         (ss, "_mamba_ssm_importable"), (vm, "get_backend"), (vm, "resolve_ops")):
        counting(module, name)
    real_import = builtins.__import__

    def counting_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        if globals is not None and str(globals.get("__name__", "")).startswith("vtr"):
            seen.append(f"import {name}")
        return real_import(name, globals, locals, fromlist, level)

    class CountingEnviron(MutableMapping):
        def __init__(self, env) -> None:
            self.env = env

        def __getitem__(self, key):
            if from_vtr(2):
                seen.append(f"env {key}")
            return self.env[key]

        def get(self, key, default=None):
            if from_vtr(2):
                seen.append(f"env {key}")
            return self.env.get(key, default)

        def __setitem__(self, key, value) -> None:
            self.env[key] = value

        def __delitem__(self, key) -> None:
            del self.env[key]

        def __iter__(self):
            return iter(self.env)

        def __len__(self) -> int:
            return len(self.env)

    monkeypatch.setattr(builtins, "__import__", counting_import)
    monkeypatch.setattr(os, "environ", CountingEnviron(os.environ))
    return seen


def test_forward_does_no_backend_resolution_import_or_env_read(monkeypatch):
    """The scan backend is resolved when the model is built, moved or given a backend, never per layer/call."""
    model = tiny_encoder(scan_backend=None)
    model.to(torch.float32)  # .to() resolves again (and may read $VTR_SCAN_BACKEND): before counting
    video = torch.randn(2, 4, 3, 32, 32)
    model(video).pooled.sum().backward()  # first use: a backend may load its kernels once (numba compiles them)
    seen = _count_host_work(monkeypatch)
    with torch.no_grad():
        model.eval()(video)
    model.train()
    model(video).pooled.sum().backward()
    assert seen == []
    # the counters do see what they count: re-resolving is visible
    model.set_scan_backend("reference")
    assert "resolve_backend" in seen


def test_backend_is_resolved_on_build_move_and_set(monkeypatch):
    from vtr.encoders import selective_scan as ss

    monkeypatch.delenv(ss.ENV_VAR, raising=False)
    model = tiny_encoder(scan_backend=None)
    assert {layer.mixer.ops.name for layer in model.layers} == {ss.resolve_backend(None, "cpu")}  # numba or chunked
    monkeypatch.setenv(ss.ENV_VAR, "reference")
    model.to("cpu")  # a move re-resolves (here: the environment changed)
    assert {layer.mixer.ops.name for layer in model.layers} == {"reference"}
    model.set_scan_backend("chunked")
    assert {layer.mixer.ops.name for layer in model.layers} == {"chunked"}
    monkeypatch.setenv("VTR_FUSED_NORM", "0")
    assert model.layers[0].mixer.ops.add_norm is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_full_umt_model_optimised_path_equals_reference(monkeypatch):
    """videomamba_m16_umt (random weights, 8 frames, bf16 autocast): the default CUDA path (triton scan, conv and
    fused norm) gives the reference backend's similarities and ITM scores."""
    from vtr.model.registry import config_for
    from vtr.model.retrieval import build_model

    monkeypatch.delenv("VTR_SCAN_BACKEND", raising=False)
    torch.manual_seed(0)
    model = build_model(config_for("videomamba_m16_umt"), text_pretrained=False).cuda().eval()
    video = torch.randn(2, 8, 3, 224, 224, device="cuda")
    ids = torch.randint(1000, 30000, (2, 32), device="cuda")
    ids[:, 0] = 101
    mask = torch.ones_like(ids)

    def scores(backend):
        model.vision_encoder.set_scan_backend(backend)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            v = model.encode_video(video)
            t = model.encode_text(ids, mask)
            sim = model.similarity(v.embeds, t.embeds)
            itm = model.itm_logits(v.tokens, t.states, t.mask)
        return sim.float(), itm.float().softmax(-1)[:, 1], model.vision_encoder.layers[0].mixer.ops.name

    sim, itm, name = scores(None)
    sim_ref, itm_ref, ref_name = scores("reference")
    assert name != "reference" and ref_name == "reference"
    torch.testing.assert_close(sim, sim_ref, rtol=0, atol=2e-2)
    torch.testing.assert_close(itm, itm_ref, rtol=0, atol=2e-2)


def test_split_xz_gradient_equals_concatenation():
    """Without a backward that writes into the GradPair (CPU backends), split_xz's gradient is autograd's."""
    from vtr.encoders.grad_pair import grad_pair_of, split_xz

    xz = torch.randn(2, 7, 10)
    for use_z in (True, False):
        a, b = xz.clone().requires_grad_(), xz.clone().requires_grad_()
        x1, z1 = a.transpose(1, 2).chunk(2, dim=1)
        x2, z2 = split_xz(b)
        assert grad_pair_of(x2) is grad_pair_of(z2) is not None
        torch.testing.assert_close(x2, x1)
        torch.testing.assert_close(z2, z1)
        ((x1 * 3).sum() + ((z1**2).sum() if use_z else 0)).backward()
        ((x2 * 3).sum() + ((z2**2).sum() if use_z else 0)).backward()
        torch.testing.assert_close(b.grad, a.grad)
    with torch.no_grad():
        x, _ = split_xz(xz.requires_grad_())
    assert grad_pair_of(x) is None


def test_grad_pair_hands_out_each_half_once():
    from vtr.encoders.grad_pair import GradPair

    pair = GradPair()
    like = torch.empty(2, 5, 7)
    z_half = pair.half(1, like, fresh=True)
    x_half = pair.half(0, like)
    assert z_half.shape == x_half.shape == like.shape
    assert x_half.data_ptr() == pair.buf.data_ptr() and z_half.data_ptr() == pair.buf[..., 5:].data_ptr()
    assert pair.half(0, like) is None  # x used twice: the second backward allocates its own


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_forward_equals_eager():
    from vtr.encoders.cuda_graph import GraphedForward

    torch.manual_seed(0)
    model = create_video_encoder("videomamba_tiny", num_frames=8, depth=2).cuda().eval()
    video = torch.randn(2, 8, 3, 224, 224, device="cuda")

    def fwd(v):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(v).pooled

    with torch.inference_mode():
        graphed = GraphedForward(fwd, video)
        previous = None
        for _ in range(2):  # a new input each call, copied into the captured one
            video = torch.randn_like(video)
            out = graphed(video).float().clone()
            # bf16 tolerance: the fused bidirectional scan adds its two directions in arrival order
            torch.testing.assert_close(out, fwd(video).float(), rtol=2e-2, atol=2e-2)
            assert previous is None or not torch.equal(out, previous)
            previous = out
    with pytest.raises(ConfigError, match="captured for"):
        graphed(video[:1])
