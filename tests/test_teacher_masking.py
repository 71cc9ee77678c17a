"""CLIP teacher (open_clip vision tower, UMT targets) and token masking (attention / random / tube)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vtr.compat import ensure_torchvision
from vtr.encoders.clip_teacher import CLIPTeacher, TeacherOutput, create_clip_teacher
from vtr.errors import CheckpointError, ConfigError
from vtr.model.masking import (
    attention_mask,
    encode_teacher,
    gather_visible,
    make_mask,
    random_mask,
    tube_mask,
    visible_count,
)

# A tiny open_clip ViT config (same builder as ViT-B-16): width 64, 2 layers, 2 heads, patch 16, 64 px -> 16 patches.
TINY = {"embed_dim": 48, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16}}
TINY_TEXT = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}


def softmax_attn(rows: int, patches: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, patches, generator=g).mul(2).softmax(-1)


def frames_visible(mask: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, 1+T*P] mask -> [B, T] visible count per frame."""
    b = mask.shape[0]
    return (~mask[:, 1:]).reshape(b, frames, -1).sum(-1)


# ---------------------------------------------------------------- masking


@pytest.mark.parametrize(("frames", "ratio", "n_vis"), [(8, 0.8, 40), (1, 0.5, 98), (4, 0.0, 196)])
def test_attention_mask_counts(frames: int, ratio: float, n_vis: int) -> None:
    b, p = 3, 196
    mask = attention_mask(softmax_attn(b * frames, p), frames, ratio, torch.Generator().manual_seed(1))
    assert mask.shape == (b, 1 + frames * p) and mask.dtype == torch.bool
    assert visible_count(p, ratio) == n_vis
    assert not mask[:, 0].any()
    assert (frames_visible(mask, frames) == n_vis).all()
    assert ((~mask).sum(1) == 1 + frames * n_vis).all()


def test_attention_mask_equals_official_full_draw() -> None:
    """Drawing n_vis samples keeps exactly the official multinomial(attn, P)[:, :n_vis] for the same seed."""
    b, t, p = 2, 8, 196
    attn = softmax_attn(b * t, p, seed=3)
    ours = attention_mask(attn, t, 0.8, torch.Generator().manual_seed(7))
    order = torch.multinomial(attn, p, generator=torch.Generator().manual_seed(7))
    official = torch.ones(b * t, p, dtype=torch.bool)
    official[torch.arange(b * t)[:, None], order[:, :40]] = False
    official = torch.cat([torch.zeros(b, 1, dtype=torch.bool), official.view(b, -1)], 1)
    assert torch.equal(ours, official)


def test_attention_mask_keeps_concentrated_positions() -> None:
    b, t, p, n_vis = 2, 3, 196, 40
    g = torch.Generator().manual_seed(0)
    attn = torch.full((b * t, p), 1e-12)
    hot = torch.stack([torch.randperm(p, generator=g)[:n_vis] for _ in range(b * t)])
    attn.scatter_(1, hot, 1.0)
    mask = attention_mask(attn, t, 0.8, torch.Generator().manual_seed(5))
    per_frame = mask[:, 1:].reshape(b * t, p)
    expect = torch.ones(b * t, p, dtype=torch.bool).scatter_(1, hot, False)
    assert torch.equal(per_frame, expect)
    # fewer hot positions than visible slots (and exact zeros elsewhere): the hot ones are always kept
    attn = torch.zeros(b * t, p)
    attn.scatter_(1, hot[:, :10], 1.0)
    per_frame = attention_mask(attn, t, 0.8)[:, 1:].reshape(b * t, p)
    assert not per_frame.gather(1, hot[:, :10]).any()
    assert ((~per_frame).sum(1) == n_vis).all()


def test_attention_mask_reproducible_and_follows_attention() -> None:
    attn = softmax_attn(16, 196, seed=2)
    m1 = attention_mask(attn, 8, 0.8, torch.Generator().manual_seed(11))
    m2 = attention_mask(attn, 8, 0.8, torch.Generator().manual_seed(11))
    m3 = attention_mask(attn, 8, 0.8, torch.Generator().manual_seed(12))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    # kept positions carry much more attention mass than a uniform 40/196 share
    kept_mass = (attn * (~m1[:, 1:]).reshape(16, 196)).sum(1)
    assert kept_mass.mean() > 2 * 40 / 196
    with pytest.raises(ValueError, match="multiple of num_frames"):
        attention_mask(attn, 3, 0.8)


def test_random_mask_per_frame_and_whole_clip() -> None:
    b, t, p = 4, 8, 196
    mask = random_mask(b, t, p, 0.8, torch.Generator().manual_seed(0))
    assert mask.shape == (b, 1 + t * p) and not mask[:, 0].any()
    assert (frames_visible(mask, t) == 40).all()
    spatial = mask[:, 1:].reshape(b, t, p)
    assert not (spatial == spatial[:, :1]).all()  # frames differ (not a tube)
    assert not torch.equal(mask[0], mask[1])
    again = random_mask(b, t, p, 0.8, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    clip_level = random_mask(b, t, p, 0.8, torch.Generator().manual_seed(0), per_frame=False)
    assert ((~clip_level[:, 1:]).sum(1) == t * p - int(t * p * 0.8)).all()


def test_tube_mask_same_positions_every_frame() -> None:
    b, t, p = 3, 8, 196
    mask = tube_mask(b, t, p, 0.8, torch.Generator().manual_seed(0))
    assert mask.shape == (b, 1 + t * p) and not mask[:, 0].any()
    spatial = mask[:, 1:].reshape(b, t, p)
    assert (spatial == spatial[:, :1]).all()
    assert (frames_visible(mask, t) == 40).all()
    assert not torch.equal(spatial[0, 0], spatial[1, 0])


def test_make_mask_dispatch_and_errors() -> None:
    b, t, p = 2, 4, 16
    g = torch.Generator().manual_seed(0)
    attn = softmax_attn(b * t, p)
    assert torch.equal(make_mask("attention", b, t, p, 0.5, torch.Generator().manual_seed(1), cls_attn=attn),
                       attention_mask(attn, t, 0.5, torch.Generator().manual_seed(1)))
    assert torch.equal(make_mask("tube", b, t, p, 0.5, torch.Generator().manual_seed(1)),
                       tube_mask(b, t, p, 0.5, torch.Generator().manual_seed(1)))
    assert torch.equal(make_mask("random", b, t, p, 0.5, torch.Generator().manual_seed(1)),
                       random_mask(b, t, p, 0.5, torch.Generator().manual_seed(1)))
    none = make_mask("none", b, t, p, 0.0)
    assert none.shape == (b, 1 + t * p) and not none.any()
    with pytest.raises(ConfigError, match="unknown mask kind"):
        make_mask("block", b, t, p, 0.5, g)
    with pytest.raises(ConfigError, match="cls attention"):
        make_mask("attention", b, t, p, 0.5, g)
    with pytest.raises(ConfigError, match="mask ratio"):
        make_mask("random", b, t, p, 1.0, g)


def test_gather_visible() -> None:
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    mask = torch.tensor([[False, True, False, True, True], [False, False, True, True, True]])
    out = gather_visible(tokens, mask)
    assert torch.equal(out[0], tokens[0, [0, 2]]) and torch.equal(out[1], tokens[1, [0, 1]])
    with pytest.raises(ValueError, match="same number"):
        gather_visible(tokens, torch.tensor([[False] * 5, [False, True, True, True, True]]))


# ---------------------------------------------------------------- teacher


@pytest.fixture(scope="module")
def teacher() -> CLIPTeacher:
    torch.manual_seed(0)
    return create_clip_teacher(TINY)


def reference(visual: nn.Module, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Independent path through open_clip's own modules: (tokens, cls_attn, ln_post-pooled per frame)."""
    b, t = video.shape[:2]
    frames = video.flatten(0, 1)
    with torch.no_grad():
        x = visual._embeds(frames)
        for blk in visual.transformer.resblocks[:-1]:
            x = blk(x)
        last = visual.transformer.resblocks[-1]
        h = last.ln_1(x)
        _, weights = last.attn(h, h, h, need_weights=True, average_attn_weights=True)  # [N, L, L]
        x = last(x)
        pooled = visual.ln_post(x[:, 0]) @ visual.proj
        x = x.reshape(b, t, x.shape[1], -1)
        tokens = torch.cat([x[:, :, :1].mean(1), x[:, :, 1:].flatten(1, 2)], 1) @ visual.proj
    return tokens, weights, pooled


def test_teacher_shapes_and_parity(teacher: CLIPTeacher) -> None:
    torch.manual_seed(1)
    video = torch.randn(2, 3, 3, 64, 64)
    out = teacher(video)
    assert isinstance(out, TeacherOutput)
    assert teacher.num_patches == 16 and teacher.output_dim == 48 and teacher.num_heads == 2
    assert out.tokens.shape == (2, 1 + 3 * 16, 48) and out.cls_attn.shape == (6, 16)
    ref_tokens, ref_weights, pooled = reference(teacher.visual, video)
    torch.testing.assert_close(out.tokens, ref_tokens, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.cls_attn, ref_weights[:, 0, 1:], rtol=1e-5, atol=1e-6)
    # the reference path really is open_clip's forward: with ln_post on the cls token it gives visual(x)
    torch.testing.assert_close(pooled, teacher.visual(video.flatten(0, 1)), rtol=1e-5, atol=1e-5)
    # cls = mean over frames of the per-frame cls tokens (projection is linear)
    per_frame = torch.stack([teacher(video[:, i : i + 1]).tokens[:, 0] for i in range(3)], 1)
    torch.testing.assert_close(out.tokens[:, 0], per_frame.mean(1), rtol=1e-5, atol=1e-5)
    # patches of frame i are the single-frame teacher's patches
    frame1 = teacher(video[:, 1:2]).tokens[:, 1:]
    torch.testing.assert_close(out.tokens[:, 1 + 16 : 1 + 32], frame1, rtol=1e-5, atol=1e-5)
    # no ln_post on the tokens: applying ln_post before proj changes them
    assert not torch.allclose(pooled.view(2, 3, -1)[:, 0], teacher(video[:, :1]).tokens[:, 0], atol=1e-3)


def test_cls_attention_is_explicit_softmax(teacher: CLIPTeacher) -> None:
    torch.manual_seed(2)
    video = torch.randn(1, 2, 3, 64, 64)
    out = teacher(video)
    v = teacher.visual
    with torch.no_grad():
        x = v._embeds(video.flatten(0, 1))
        x = v.transformer.resblocks[0](x)
        blk = v.transformer.resblocks[1]
        h = blk.ln_1(x)
        q, k, _ = F.linear(h, blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
        heads, hd = 2, 32
        q = q.reshape(2, 17, heads, hd).transpose(1, 2)
        k = k.reshape(2, 17, heads, hd).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1).mean(1)  # [N, L, L]
    torch.testing.assert_close(out.cls_attn, probs[:, 0, 1:], rtol=1e-5, atol=1e-6)
    # full rows (cls->cls included) sum to 1; the cls->patch part is what the official code samples from
    torch.testing.assert_close(out.cls_attn.sum(-1) + probs[:, 0, 0], torch.ones(2))
    assert out.cls_attn.dtype == torch.float32 and (out.cls_attn > 0).all()


def test_teacher_frozen_and_always_eval(teacher: CLIPTeacher) -> None:
    parent = nn.Module()
    parent.student = nn.Linear(2, 2)
    parent.clip_teacher = teacher
    parent.train()
    assert parent.student.training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    video = torch.randn(1, 2, 3, 64, 64, requires_grad=True)
    out = teacher(video)
    assert not out.tokens.requires_grad and not out.cls_attn.requires_grad
    assert isinstance(teacher.visual.transformer.resblocks[0].mlp.gelu, nn.Module)
    assert type(teacher.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"  # OpenAI CLIP activation


def test_teacher_resizes_input_and_accepts_images(teacher: CLIPTeacher) -> None:
    torch.manual_seed(3)
    video = torch.randn(2, 2, 3, 48, 40)
    out = teacher(video)
    resized = F.interpolate(video.flatten(0, 1), size=(64, 64), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out.tokens, teacher(resized.view(2, 2, 3, 64, 64)).tokens)
    image = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(teacher(image).tokens, teacher(image.unsqueeze(1)).tokens)
    assert teacher(image).tokens.shape == (2, 17, 48)


def test_encode_teacher_visible_tokens_follow_mask(teacher: CLIPTeacher) -> None:
    torch.manual_seed(4)
    video = torch.randn(2, 4, 3, 64, 64)
    full = teacher(video)
    mask, visible = encode_teacher(teacher, video, "attention", 0.75, torch.Generator().manual_seed(9))
    n_vis = visible_count(16, 0.75)
    assert n_vis == 4 and mask.shape == (2, 1 + 4 * 16) and not mask[:, 0].any()
    assert (frames_visible(mask, 4) == n_vis).all()
    assert visible.shape == (2, 1 + 4 * n_vis, 48)
    for i in range(2):
        torch.testing.assert_close(visible[i], full.tokens[i][~mask[i]])
    torch.testing.assert_close(visible[:, 0], full.tokens[:, 0])  # cls first
    assert torch.equal(mask, attention_mask(full.cls_attn, 4, 0.75, torch.Generator().manual_seed(9)))
    for kind in ("random", "tube"):
        mask, visible = encode_teacher(teacher, video, kind, 0.5, torch.Generator().manual_seed(0))
        assert visible.shape == (2, 1 + 4 * 8, 48)
        torch.testing.assert_close(visible, gather_visible(full.tokens, mask))
    mask, visible = encode_teacher(teacher, video, "none", 0.0)
    assert not mask.any()
    torch.testing.assert_close(visible, full.tokens)


# ---------------------------------------------------------------- weights


def official_layout(visual_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official extracted teacher dict: no ``visual.`` prefix, conv1 inflated to Conv3d (C, 3, 1, p, p)."""
    sd = {k: v.clone() for k, v in visual_sd.items()}
    sd["conv1.weight"] = sd["conv1.weight"].unsqueeze(2)
    return sd


def test_load_official_and_prefixed_weights(tmp_path) -> None:
    ensure_torchvision()
    import open_clip

    torch.manual_seed(5)
    source = open_clip.CLIP(TINY["embed_dim"], TINY["vision_cfg"], TINY_TEXT, quick_gelu=True)
    source.eval()
    video = torch.randn(2, 2, 3, 64, 64)
    expect = CLIPTeacher(source.visual)(video)

    official = official_layout(source.visual.state_dict())
    assert official["conv1.weight"].shape == (64, 3, 1, 16, 16)
    torch.save(official, tmp_path / "vit_tiny.pth")
    torch.save({"state_dict": source.state_dict()}, tmp_path / "full_clip.pt")  # visual.* + text tower keys
    with warnings.catch_warnings():  # OpenAI's own .pt files are TorchScript archives
        warnings.simplefilter("ignore")
        torch.jit.trace(source.visual, video[0]).save(str(tmp_path / "openai_jit.pt"))

    for weights in ("vit_tiny.pth", "full_clip.pt", "openai_jit.pt", source.state_dict()):
        weights = tmp_path / weights if isinstance(weights, str) else weights
        torch.manual_seed(99)  # a different random init, overwritten by the weights
        loaded = create_clip_teacher(TINY, weights=weights)
        out = loaded(video)
        torch.testing.assert_close(out.tokens, expect.tokens, rtol=0, atol=0)
        torch.testing.assert_close(out.cls_attn, expect.cls_attn, rtol=0, atol=0)


def test_load_weights_errors_and_interpolation(tmp_path) -> None:
    torch.manual_seed(6)
    src = create_clip_teacher(TINY)
    sd = official_layout(src.visual.state_dict())
    missing = {k: v for k, v in sd.items() if k != "proj"}
    with pytest.raises(CheckpointError, match="missing"):
        create_clip_teacher(TINY, weights=missing)
    wider = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "width": 96}}
    with pytest.raises(CheckpointError, match="expects"):
        create_clip_teacher(wider, weights=sd)
    with pytest.raises(CheckpointError, match="does not exist"):
        create_clip_teacher(TINY, weights=tmp_path / "nope.pth")
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError):
        create_clip_teacher(TINY, weights=bad)
    # weights for 64 px loaded into a 96 px teacher: positional embedding resized bicubically (cls row kept)
    big = create_clip_teacher(TINY, weights=sd, image_size=96)
    assert big.num_patches == 36 and big.visual.positional_embedding.shape == (37, 64)
    torch.testing.assert_close(big.visual.positional_embedding[0], sd["positional_embedding"][0])
    assert big(torch.randn(1, 1, 3, 96, 96)).tokens.shape == (1, 37, 48)


def test_unsupported_towers_are_rejected() -> None:
    custom = {**TINY, "vision_cfg": {**TINY["vision_cfg"], "qk_norm": True}}
    with pytest.raises(ConfigError, match="unsupported CLIP vision tower"):
        create_clip_teacher(custom)
    resnet = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16}}
    with pytest.raises(ConfigError, match="VisionTransformer"):
        create_clip_teacher(resnet)
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        create_clip_teacher("ViT-Q-99")


def test_vit_b16_structure_matches_official_teacher() -> None:
    """ViT-B-16 by name: 196 patches, 768 wide, 12 heads, 512-d output; official key shapes round-trip."""
    torch.manual_seed(7)
    teacher = create_clip_teacher("ViT-B/16")
    assert teacher.num_patches == 196 and teacher.width == 768 and teacher.num_heads == 12
    assert teacher.output_dim == 512 and len(teacher.visual.transformer.resblocks) == 12
    sd = official_layout(teacher.visual.state_dict())
    assert sd["conv1.weight"].shape == (768, 3, 1, 16, 16)
    assert sd["positional_embedding"].shape == (197, 768) and sd["proj"].shape == (768, 512)
    assert "transformer.resblocks.11.attn.in_proj_weight" in sd and "ln_post.weight" in sd
    out = teacher(torch.randn(1, 1, 3, 112, 112))  # resized to 224
    assert out.tokens.shape == (1, 197, 512) and out.cls_attn.shape == (1, 196)
