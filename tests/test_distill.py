"""VideoMamba teachers (issue 18): stage-1 masked video pretraining and self-distillation.

The VideoMamba teacher is frozen, has no gradients, stays out of checkpoints and fits students of another width;
stage-1 masking keeps the configured number of tokens per frame and its loss is ``2 - 2 cos`` at the visible
positions (checked against a hand computation); a stage-1 ``vision.pt`` loads into a stage-2 model with no missing
vision keys; a few steps of ``shapes_stage1`` and of self-distilled ``shapes_base`` lower their losses; the new
configs validate. Tiny models (32 px, 4 frames, 2 layers), one thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vtr.compat import ensure_torchvision
from vtr.errors import ConfigError
from vtr.model.masking import visible_count
from vtr.model.retrieval import build_model, config_for
from vtr.model.teachers import VideoMambaTeacher, create_videomamba_teacher
from vtr.training.config import check_runnable, list_configs, load_config

ensure_torchvision()
import lightning as L  # noqa: E402

from vtr.training.module import RetrievalLitModule  # noqa: E402

TINY = ["model.img_size=32", "model.num_frames=4", "model.vision.depth=2", "data.batch_size=4", "data.num_workers=0",
        "trainer.progress_bar=false", "trainer.log_every_n_steps=1", "trainer.num_threads=1",
        "trainer.keep_checkpoints=0", "trainer.val_every_n_epochs=0"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from vtr.data.synth import generate_world

    out = tmp_path_factory.mktemp("distill") / "world"
    generate_world(out, 24, seed=0)
    return out


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    """A tiny 'trained small model' directory: VideoMamba-Ti width (192), 1 layer, 32 px x 4 frames."""
    from vtr.model.registry import save_model_dir

    torch.manual_seed(0)
    cfg = config_for("videomamba_t16_minilm", img_size=32, num_frames=4, vision={"depth": 1})
    return save_model_dir(build_model(cfg, text_pretrained=False), tmp_path_factory.mktemp("small") / "small")


class LossRecorder(L.Callback):
    """The total loss of every training batch, keyed by the global step after it."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple[float]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps[trainer.global_step] = (float(outputs["loss"]),)


def _video(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------- configs


def test_new_configs_validate_and_name_their_recipes(tmp_path):
    assert {"stage1_masked", "shapes_stage1", "shapes_base", "shapes_small"} <= set(list_configs())
    s1 = load_config("stage1_masked")
    assert s1.video_only and s1.teacher.kind == "clip" and s1.teacher.video_mask_ratio == 0.8
    assert (s1.optim.lr, s1.optim.lr_batch, s1.optim.betas) == (1.5e-4, 256, (0.9, 0.95))
    assert s1.model.drop_path_rate == 0.4 and s1.losses.as_dict() == {"vtc": 0, "vtm": 0, "mlm": 0, "uta": 1,
                                                                      "distill": 0}
    shapes1 = load_config("shapes_stage1")
    assert shapes1.video_only and (shapes1.teacher.kind, shapes1.teacher.model) == ("videomamba", "shapes-small")
    base, small = load_config("shapes_base"), load_config("shapes_small")
    assert base.model.vision["embed_dim"] > 384 and base.model.vision["depth"] > small.model.vision["depth"]
    assert not base.self_distill.enabled and base.losses.distill == 0
    bad = {"losses.distill=1": "self_distill.model", "self_distill.model=x": "losses.distill",
           "teacher.kind=resnet": "teacher.kind", "teacher.model=x": "teacher.kind=videomamba"}
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config("shapes_base", [override])
    with pytest.raises(ConfigError, match="UTA only"):
        load_config("shapes_stage1", ["losses.uta=0", "losses.distill=1", "self_distill.model=x"])
    with pytest.raises(ConfigError, match="data.videos"):  # video folders are for video-only runs
        check_runnable(load_config("shapes_small", [f"data.videos={tmp_path}"]))
    with pytest.raises(ConfigError, match="teacher.model"):
        check_runnable(load_config("shapes_stage1", [f"data.videos={tmp_path}", "teacher.model=/no/such"]))


# ---------------------------------------------------------------------------------------------------- teacher


def test_videomamba_teacher_is_frozen_projected_and_out_of_checkpoints(world, small_dir):
    cfg = load_config("shapes_stage1", [f"data.world={world}", *TINY, f"teacher.model={small_dir}"])
    module = RetrievalLitModule(cfg)
    teacher = module.teacher
    assert isinstance(teacher, VideoMambaTeacher) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    module.train()
    assert not teacher.training  # stays in eval mode under a training parent
    # student width 384 (VideoMamba-S), teacher 192: the student's clip_decoder projects to the teacher's width
    assert module.model.vision_encoder.cfg.embed_dim == 384 and module.model.vision_encoder.cfg.clip_output_dim == 192
    video = _video()
    out = teacher(video)
    assert out.tokens.shape == (2, 1 + 4 * 4, 192) and out.cls_attn.shape == (2 * 4, 4)
    torch.testing.assert_close(out.cls_attn.sum(-1), torch.ones(8))  # a distribution over each frame's patches
    assert not out.tokens.requires_grad
    # the parameters the optimiser sees: the student's video tower only (video-only training), no teacher
    names = [n for n, _ in module._trained_parameters()]
    assert names and all(n.startswith("vision_encoder.") for n in names)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"])  # strict: the teacher's weights were put back


def test_stage1_masking_keeps_the_configured_tokens_and_the_loss_is_2_minus_2cos(world, small_dir):
    cfg = load_config("shapes_stage1", [f"data.world={world}", *TINY, f"teacher.model={small_dir}",
                                        "teacher.video_mask_ratio=0.5"])
    module = RetrievalLitModule(cfg).eval()
    video = _video(3, seed=1)
    from vtr.model.masking import encode_teacher

    torch.manual_seed(5)
    mask, targets = encode_teacher(module.teacher, video, "attention", 0.5)
    patches = mask[:, 1:].view(3, 4, 4)
    assert not mask[:, 0].any() and ((~patches).sum(-1) == visible_count(4, 0.5)).all()  # 2 of 4 per frame
    # the loss by hand: teacher tokens at the visible positions vs the student's clip_decoder output there
    full = module.teacher(video).tokens
    aligned = module.model.vision_encoder(video, mask=mask, keep_temporal=False).aligned
    rows = [full[b][~mask[b]] for b in range(3)]
    hand = torch.stack([(2 - 2 * F.cosine_similarity(aligned[b], rows[b], dim=-1)).mean() for b in range(3)]).mean()
    torch.manual_seed(5)
    loss = module.stage1_losses(video)
    torch.testing.assert_close(loss["uta"], hand, rtol=1e-5, atol=1e-6)
    assert set(loss) == {"uta", "loss"}


# ---------------------------------------------------------------------------------------------------- runs


def test_stage1_run_lowers_uta_and_its_checkpoint_loads_into_stage2(world, small_dir, tmp_path):
    from vtr.training.run import train

    rec = LossRecorder()
    opts = [f"data.videos={world / 'videos'}", *TINY, f"teacher.model={small_dir}", "optim.lr=0.02",
            "schedule.max_steps=6", "schedule.warmup_epochs=0", "model.drop_path_rate=0"]
    summary = train("shapes_stage1", opts, home=tmp_path / "home", out=tmp_path / "s1", callbacks=[rec])
    losses = [rec.steps[s][0] for s in sorted(rec.steps)]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    vision = Path(summary["vision_checkpoint"])
    assert vision.is_file() and summary["model_dir"] is None
    # a stage-2 model of the same video tower loads it with no missing vision keys (the clip_decoder, trained for
    # the teacher's width, is kept when the widths match and left at init otherwise)
    from vtr.encoders.checkpoint import read_checkpoint
    from vtr.training.build import build_retrieval_model, load_vision_weights

    stage2 = load_config("shapes_small", [f"data.world={world}", *TINY, f"model.vision.pretrained={vision}"])
    model = build_retrieval_model(stage2)  # loads it (strict: every encoder key but the optional heads)
    report = load_vision_weights(model, str(vision))
    assert report.missing == [] and report.unexpected == []
    assert {k.split(".")[0] for k in report.left_at_init} == {"clip_decoder"}  # 192-wide teacher vs 512 here
    saved = read_checkpoint(vision)
    for key in ("patch_embed.proj.weight", "layers.1.mixer.A_log", "norm.weight"):
        torch.testing.assert_close(model.vision_encoder.state_dict()[key], saved[key])
    # ... and the stage-1 result is itself a VideoMamba teacher
    assert create_videomamba_teacher(vision).output_dim == 384


def test_self_distilled_base_run_lowers_its_losses(world, small_dir, tmp_path):
    from vtr.training.run import train

    L.seed_everything(0, verbose=False)
    rec = LossRecorder()
    opts = [f"data.world={world}", *TINY, f"self_distill.model={small_dir}", "losses.distill=1", "losses.mlm=0",
            "model.vision.embed_dim=256", "model.vision.clip_decoder_embed_dim=256", "schedule.max_steps=8",
            "schedule.warmup_epochs=0", "optim.lr=2e-3", "model.drop_path_rate=0"]
    summary = train("shapes_base", opts, home=tmp_path / "home", out=tmp_path / "sd", callbacks=[rec])
    assert summary["global_step"] == 8 and summary["model_dir"] is not None
    import csv

    rows = [r for p in sorted((tmp_path / "sd").glob("logs/version_*/metrics.csv")) for r in csv.DictReader(open(p))]
    distill = [float(r["train/distill"]) for r in rows if r.get("train/distill")]
    assert len(distill) == 8 and sum(distill[-2:]) < sum(distill[:2]), distill
    # the frozen teacher and the projection stay out of the exported model
    from vtr.model.registry import load_model_dir

    exported = load_model_dir(summary["model_dir"])
    assert not any(k.startswith(("distill", "teacher")) for k in exported.state_dict())
    ckpt = torch.load(summary["checkpoint"], map_location="cpu", weights_only=False)
    assert not any(k.startswith(("teacher.", "distill_teacher.")) for k in ckpt["state_dict"])
    assert any(k.startswith("distill_proj.") for k in ckpt["state_dict"])  # trained: resumable


def test_self_distill_projection_matches_widths(world, small_dir):
    cfg = load_config("shapes_base", [f"data.world={world}", *TINY, f"self_distill.model={small_dir}",
                                      "losses.distill=1"])
    module = RetrievalLitModule(cfg)
    assert isinstance(module.distill_proj, torch.nn.Linear)
    assert (module.distill_proj.in_features, module.distill_proj.out_features) == (576, 192)
    assert not any(p.requires_grad for p in module.distill_teacher.parameters())
    video = _video()
    vid = module.model.encode_video(video)
    loss = module.distill_loss(video, vid, None)
    target = module.distill_teacher(video).tokens[:, 1:]
    hand = (2 - 2 * F.cosine_similarity(module.distill_proj(vid.tokens), target, dim=-1)).mean()
    torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert module.distill_proj.weight.grad is not None
    assert module.model.vision_encoder.patch_embed.proj.weight.grad is not None


def test_stage1_masked_with_a_clip_teacher_lowers_uta_and_scales_lr(world, tmp_path):
    """The official stage-1 config (CLIP teacher, attention masking, lr per 256 samples), shrunk: a tiny random
    open_clip ViT teacher and a 2-layer VideoMamba-Ti student on a folder of videos."""
    from vtr.training.run import train

    teacher = "{embed_dim: 48, vision_cfg: {image_size: 32, layers: 1, width: 64, head_width: 32, patch_size: 16}}"
    opts = [f"data.videos={world / 'videos'}", *TINY, "model.arch=videomamba_t16_minilm", "model.drop_path_rate=0",
            f"teacher.config={teacher}", "teacher.allow_random=true", "optim.lr=1.0", "schedule.max_steps=6",
            "schedule.warmup_epochs=0"]
    cfg = load_config("stage1_masked", opts)
    module = RetrievalLitModule(cfg)
    assert module.lr_scale() == pytest.approx(4 / 256)  # lr 1.0 per 256 samples -> 0.0156 at batch 4
    assert module.model.vision_encoder.cfg.clip_output_dim == 48
    rec = LossRecorder()
    summary = train("stage1_masked", opts, home=tmp_path / "home", out=tmp_path / "s1", callbacks=[rec])
    losses = [rec.steps[s][0] for s in sorted(rec.steps)]
    assert len(losses) == 6 and losses[-1] < losses[0], losses
    assert Path(summary["vision_checkpoint"]).is_file()
