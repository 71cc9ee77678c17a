"""Training with Lightning: configs, the official optimiser rules, losses going down, resume, export, DDP on CPU."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vtr.compat import ensure_torchvision
from vtr.errors import ConfigError
from vtr.model.losses import LossWeights
from vtr.training.config import check_runnable, list_configs, load_config, resolve_data

ensure_torchvision()
import lightning as L  # noqa: E402

from vtr.training.data import (  # noqa: E402
    MediaBatchSampler,
    RetrievalDataModule,
    TrainCaptionDataset,
    TrainCollate,
)
from vtr.training.module import RetrievalLitModule  # noqa: E402
from vtr.training.optim import CosineWarmup, official_param_groups  # noqa: E402

# A tiny model: VideoMamba-Ti width with 2 layers, 32 px (2x2 patches), 4 frames, the packaged MiniLM text tower.
TINY = ["model.img_size=32", "model.num_frames=4", "model.vision.depth=2", "data.batch_size=4", "data.num_workers=0",
        "losses.mlm=1", "trainer.progress_bar=false", "trainer.log_every_n_steps=1", "trainer.num_threads=1"]
NO_DROPOUT = ["model.text.hidden_dropout_prob=0", "model.text.attention_probs_dropout_prob=0"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from vtr.data.synth import generate_world

    out = tmp_path_factory.mktemp("train") / "world"
    generate_world(out, 24, seed=0)  # 19 train clips (2-3 captions each), 5 test clips, 2 temporal groups
    return out


def tiny_cfg(world: Path, *extra: str):
    return load_config("shapes_tiny", [f"data.world={world}", *TINY, *extra])


class LossRecorder(L.Callback):
    """Loss and sample ids of every training batch, keyed by the global step after it."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple[float, list[int]]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps[trainer.global_step] = (float(outputs["loss"]), batch["idx"].tolist())


# ---------------------------------------------------------------------------------------------------- config


def test_shipped_configs_load_and_validate():
    names = list_configs()
    assert {"stage2_masked", "stage2_unmasked", "finetune_retrieval", "shapes_tiny", "shapes_small"} <= set(names)
    cfgs = {n: load_config(n) for n in names}
    masked = cfgs["stage2_masked"]
    assert masked.model.arch == "videomamba_m16_umt" and masked.teacher.name == "ViT-B-16"
    assert (masked.teacher.video_mask, masked.teacher.video_mask_ratio) == ("attention", 0.8)
    assert (masked.teacher.image_mask, masked.teacher.image_mask_ratio) == ("attention", 0.5)
    assert (masked.optim.lr, masked.optim.weight_decay, masked.optim.betas) == (4e-4, 0.05, (0.9, 0.999))
    assert (masked.schedule.epochs, masked.schedule.warmup_epochs, masked.schedule.min_lr_multi) == (10, 1.0, 0.01)
    assert masked.model.drop_path_rate == 0.25 and masked.data.batch_size == 128 and masked.model.max_txt_l == 32
    assert masked.losses.uta == 1.0 and masked.trainer.precision == "auto"
    unmasked = cfgs["stage2_unmasked"]
    assert unmasked.teacher.name is None and unmasked.losses.uta == 0 and unmasked.optim.lr == 8e-5
    assert (unmasked.schedule.epochs, unmasked.schedule.warmup_epochs, unmasked.data.batch_size) == (1, 0.2, 64)
    ft = cfgs["finetune_retrieval"]
    assert ft.losses.mlm == 0 and ft.data.expand_captions
    assert cfgs["shapes_tiny"].model.arch == "videomamba_t16_minilm" and not cfgs["shapes_tiny"].data.hflip
    assert cfgs["shapes_small"].model.arch == "videomamba_s16_minilm"
    # a real run of the masked stage needs the teacher's weights (and data)
    with pytest.raises(ConfigError, match="teacher.weights"):
        check_runnable(load_config("stage2_masked", ["data.train=" + __file__]))
    with pytest.raises(ConfigError, match="no training data"):
        check_runnable(masked)


def test_overrides_are_typed_and_bad_ones_are_config_errors(tmp_path):
    cfg = load_config("shapes_tiny", ["model.img_size=96", "optim.lr=1e-4", "optim.betas=[0.9, 0.95]",
                                      "model.vision.depth=3", "trainer.devices=2", f"data.train={tmp_path}",
                                      "data.val=x.json", "data.val.root=/media"])
    assert cfg.model.img_size == 96 and cfg.optim.lr == 1e-4 and cfg.optim.betas == (0.9, 0.95)
    assert cfg.model.vision == {"depth": 3} and cfg.trainer.devices == 2
    train, val = resolve_data(cfg)
    assert train[0].anno == str(tmp_path / "train.json") and train[0].root == str(tmp_path / "videos")
    assert (val.anno, val.root) == ("x.json", "/media")
    bad = {"optim.lrr=1": "did you mean 'optim.lr'", "optim.lr=fast": "optim.lr must be a number",
           "model.img_size=90": "multiple of the patch size", "trainer.strategy=horovod": "trainer.strategy",
           "data.batch_size=1": "VTM", "novalue": "key.subkey=value", "losses.uta=1": "teacher",
           "schedule.min_lr_multi=2": "min_lr_multi", "model.arch=resnet": "model.arch",
           "data.hflip=maybe": "true or false"}
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config("shapes_tiny", [override])
    with pytest.raises(ConfigError, match="shipped configs"):
        load_config("no_such_config")
    (tmp_path / "c.yaml").write_text("model: {arch: videomamba_t16_minilm, colour: red}\n")
    with pytest.raises(ConfigError, match="model.colour"):
        load_config(tmp_path / "c.yaml")


# ---------------------------------------------------------------------------------------------------- optimiser


def test_weight_decay_groups_follow_the_official_rule(world):
    cfg = tiny_cfg(world)
    module = RetrievalLitModule(cfg)
    groups = official_param_groups(module.model.named_parameters(), 0.05)
    by_name = {g["group"]: set(g["param_names"]) for g in groups}
    assert {g["group"]: g["weight_decay"] for g in groups} == {"decay": 0.05, "no_decay": 0.0}
    named = dict(module.model.named_parameters())
    assert set(named) == by_name["decay"] | by_name["no_decay"] and not by_name["decay"] & by_name["no_decay"]
    for name in by_name["no_decay"]:
        assert named[name].ndim == 1 or name.endswith(".bias"), name
    for name in by_name["decay"]:
        assert named[name].ndim != 1 and not name.endswith(".bias"), name
    # what the official rule implies (no no_weight_decay() on the multimodal model)
    for name in ("temp", "vision_encoder.pos_embed", "vision_encoder.cls_token",
                 "vision_encoder.temporal_pos_embedding", "vision_encoder.layers.0.mixer.A_log",
                 "vision_encoder.layers.0.mixer.A_b_log",
                 "text_encoder.embeddings.word_embeddings.weight", "vision_proj.weight"):
        assert name in by_name["decay"], name
    for name in ("vision_encoder.layers.0.mixer.D", "vision_encoder.norm.weight", "vision_encoder.pool_norm.weight",
                 "vision_proj.bias", "text_encoder.cls.predictions.bias"):
        assert name in by_name["no_decay"], name
    # the tied MLM decoder is the word embedding: counted once
    assert sum(len(g["params"]) for g in groups) == len(named)
    # official different_lr: matching parameters move to their own groups (same decay rule) with their own lr
    split = official_param_groups(module.model.named_parameters(), 0.05, different_lr_names=[r"^text_encoder\."],
                                  different_lr=5e-5)
    assert [g["group"] for g in split] == ["decay", "no_decay", "decay_different_lr", "no_decay_different_lr"]
    for g in split:
        assert all(n.startswith("text_encoder.") == g["group"].endswith("_different_lr") for n in g["param_names"])
        assert g.get("lr") == (5e-5 if g["group"].endswith("_different_lr") else None)
        assert set(g["param_names"]) <= by_name[g["group"].removesuffix("_different_lr")]
    frozen = module.model.itm_head.weight.requires_grad_(False)
    assert all(frozen is not p for g in official_param_groups(module.model.named_parameters(), 0.05)
               for p in g["params"])


def test_cosine_schedule_matches_the_official_formula():
    f = CosineWarmup(warmup_steps=10, total_steps=110, min_lr_multi=0.01)
    assert f(0) == 0.01 and f(5) == 0.5 and f(10) == 1.0
    assert math.isclose(f(60), 0.5) and f(110) == 0.01 and f(109) >= 0.01
    assert all(f(s) >= f(s + 1) for s in range(10, 110))
    g = CosineWarmup(warmup_steps=2.4, total_steps=12, min_lr_multi=0.0)  # fractional warmup epochs (0.2 epoch)
    assert math.isclose(g(1), 1 / 2.4) and g(12) == 0.0


# ---------------------------------------------------------------------------------------------------- data


def test_media_batch_sampler_one_media_per_batch_same_order_on_all_ranks():
    groups = [list(range(0, 40)), list(range(40, 64))]  # 40 videos, 24 images
    samplers = [MediaBatchSampler(groups, 4, seed=3, rank=r, world=2) for r in range(2)]
    assert len(samplers[0]) == 5 + 3
    per_rank = [s.epoch_batches(0) for s in samplers]
    media = [[b[0] >= 40 for b in batches] for batches in per_rank]
    assert media[0] == media[1] and 0 < sum(media[0]) < len(media[0])  # same media order, both kinds mixed in
    for batches in per_rank:
        assert all(len(b) == 4 and len({i >= 40 for i in b}) == 1 for b in batches)
    flat = [set(sum(batches, [])) for batches in per_rank]
    assert not flat[0] & flat[1]  # ranks see disjoint samples
    assert samplers[0].epoch_batches(1) != per_rank[0]  # reshuffled per epoch
    samplers[0].set_epoch(1)
    samplers[0].skip_batches(3)
    resumed = list(samplers[0])
    assert [[i for i, _ in b] for b in resumed] == samplers[0].epoch_batches(1)[3:] and resumed[0][0][1] == 1
    assert len(list(samplers[0])) == 8  # the skip applies once
    # with a position (Lightning's batch counter) the stream continues across the epoch boundary
    solo = MediaBatchSampler(groups, 4, seed=3, position_fn=lambda: 10)
    assert len(solo) == 16
    stream = [[i for i, _ in b] for b in solo]
    assert stream == solo.epoch_batches(0)[10:] + solo.epoch_batches(1)[:10]
    assert [b[0][1] for b in solo] == [0] * 6 + [1] * 10


def test_train_dataset_images_expand_captions_and_bad_files(tmp_path, world, caplog):
    from PIL import Image

    from vtr.training.config import DataSource

    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    anno = [{"image": f"im{i}.png", "caption": [f"picture {i}", f"image {i}"]} for i in range(3)]
    (tmp_path / "images.json").write_text(json.dumps(anno))
    images = TrainCaptionDataset(DataSource(str(tmp_path / "images.json"), str(tmp_path)), 4, 32,
                                 expand_captions=True, id_offset=100)
    assert images.media == "image" and len(images) == 6
    items = [images[(k, 0)] for k in range(6)]
    assert [it["idx"] for it in items] == [100, 100, 101, 101, 102, 102]  # per-video ids
    assert [it["caption"] for it in items[:2]] == ["picture 0", "image 0"]
    assert items[0]["video"].shape == (1, 3, 32, 32)
    batch = TrainCollate(16)(items[:4])
    assert batch["video"].shape == (4, 1, 3, 32, 32) and batch["input_ids"].shape == (4, 16)
    assert batch["media"] == "image"

    videos = json.loads((world / "train.json").read_text())[:3] + [{"video": "../broken.mp4", "caption": "x"}]
    (world / "with_bad.json").write_text(json.dumps(videos))
    ds = TrainCaptionDataset(DataSource(str(world / "with_bad.json"), str(world / "videos")), 4, 32, seed=1)
    with caplog.at_level(logging.WARNING):
        a, b = ds[(3, 0)], ds[(3, 0)]
    assert a is not None and a["idx"] != 3 and a["video"].shape == (4, 3, 32, 32)  # replaced, same batch size
    torch.testing.assert_close(a["video"], b["video"])  # keyed randomness: same sample, same epoch -> same item
    assert sum("broken.mp4" in r.message for r in caplog.records) == 1  # reported once
    assert ds[(0, 0)]["video"].shape == (4, 3, 32, 32)
    assert not torch.equal(ds[(0, 0)]["video"], ds[(0, 1)]["video"])  # new crop / frames each epoch


def test_validation_reads_through_the_inference_clip_loader(tmp_path, world, caplog):
    """Validation decodes with the loader of `vtr index` / `vtr eval` (ClipDataset): the same clips the training
    dataset gives with ``middle`` sampling and the eval transform; images are one-frame clips; a bad file is
    logged and left out of the batch (its index missing), never raised."""
    from PIL import Image

    from vtr.data.clips import ClipDataset, ClipRequest
    from vtr.data.datasets import VideoCaptionDataset
    from vtr.data.decode import read_image
    from vtr.data.transforms import eval_transform
    from vtr.training.data import ValCollate

    entries = json.loads((world / "test.json").read_text())[:3]
    videos = world / "videos"
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    requests = [ClipRequest(str(videos / e["video"])) for e in entries]
    requests.insert(1, ClipRequest(str(tmp_path / "broken.mp4")))
    clips = ClipDataset(requests, num_frames=4, size=32, strategy="middle")
    with caplog.at_level(logging.WARNING):
        batch = ValCollate()([clips[i] for i in range(len(clips))])
    assert batch["index"].tolist() == [0, 2, 3] and batch["video"].shape == (3, 4, 3, 32, 32)
    assert any("broken.mp4" in r.message for r in caplog.records)
    reference = VideoCaptionDataset(entries, videos, num_frames=4, strategy="middle",
                                    transform=lambda f: eval_transform(f, 32))
    torch.testing.assert_close(batch["video"], torch.stack([reference[i]["video"] for i in range(3)]), rtol=0, atol=0)

    Image.fromarray(np.arange(40 * 50 * 3, dtype=np.uint8).reshape(40, 50, 3)).save(tmp_path / "im.png")
    image = ClipDataset([ClipRequest(str(tmp_path / "im.png"))], num_frames=4, size=32)[0]["video"]
    assert image.shape == (1, 1, 3, 32, 32)
    torch.testing.assert_close(image[0], eval_transform(read_image(tmp_path / "im.png"), 32), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------- model


def test_frame_independent_baseline_ignores_frame_order():
    from vtr.model.retrieval import build_model, config_for

    torch.manual_seed(0)
    cfg = config_for("videomamba_t16_minilm", img_size=32, num_frames=4, vision={"depth": 2}, frame_independent=True)
    model = build_model(cfg, text_pretrained=False).eval()
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        out = model.encode_video(video)
        rev = model.encode_video(video.flip(1))
        one = model.encode_video(video[:, 2:3])  # a single frame is an image
    assert out.embeds.shape == (2, 4, 512) and out.tokens.shape == (2, 4 * 4, 192)
    torch.testing.assert_close(out.embeds.flip(1), rev.embeds)  # per-frame features, no temporal mixing
    torch.testing.assert_close(out.embeds[:, 2:3], one.embeds, rtol=1e-5, atol=1e-5)
    text = torch.randn(3, 512)
    torch.testing.assert_close(model.similarity(out.embeds, text), model.similarity(rev.embeds, text))
    with pytest.raises(ConfigError, match="masking"):
        model.encode_video(video, mask=torch.zeros(2, 1 + 4 * 4, dtype=torch.bool))


def test_teacher_is_frozen_masks_per_media_and_stays_out_of_checkpoints(world):
    teacher = "{embed_dim: 48, vision_cfg: {image_size: 32, layers: 1, width: 64, head_width: 32, patch_size: 16}}"
    cfg = tiny_cfg(world, "losses.uta=1", f"teacher.config={teacher}", "teacher.allow_random=true")
    module = RetrievalLitModule(cfg)
    assert module.teacher is not None and not any(p.requires_grad for p in module.teacher.parameters())
    assert module.model.vision_encoder.cfg.clip_output_dim == 48
    assert module.masking_for(torch.zeros(1, 4, 3, 32, 32)) == ("attention", 0.8)
    assert module.masking_for(torch.zeros(1, 1, 3, 32, 32)) == ("attention", 0.5)
    groups = official_param_groups(module.model.named_parameters(), 0.05)
    assert not any(n.startswith("teacher") for g in groups for n in g["param_names"])
    tok = module.model.tokenize(["a red circle moves left", "a blue square grows"])
    kind, ratio = module.masking_for(torch.zeros(2, 4, 3, 32, 32))
    out = module.model.training_losses(torch.randn(2, 4, 3, 32, 32), tok["input_ids"], tok["attention_mask"],
                                       weights=module.loss_weights, teacher=module.teacher, mask_kind=kind,
                                       mask_ratio=ratio)
    assert {"vtc", "vtm", "mlm", "uta"} <= set(out) and torch.isfinite(out["loss"])
    ckpt = {"state_dict": module.state_dict()}
    assert any(k.startswith("teacher.") for k in ckpt["state_dict"])
    module.on_save_checkpoint(ckpt)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    module.on_load_checkpoint(ckpt)  # the teacher's own weights are put back, so strict loading works
    module.load_state_dict(ckpt["state_dict"])
    with pytest.raises(ConfigError, match="frame-mean"):
        tiny_cfg(world, "losses.uta=1", f"teacher.config={teacher}", "model.frame_independent=true")


def test_a_few_steps_on_a_fixed_batch_reduce_every_loss(world):
    """Optimising the total on one batch lowers VTC, VTM and MLM each (same MLM mask / VTM negatives draws).

    The ITM head starts biased towards "match" so that VTM starts clearly above its trivial floor (the entropy of
    the 1:2 positive/negative split, ~0.64, where a fresh head already sits and a few steps may not get below).
    """
    from vtr.training.config import DataSource

    cfg = tiny_cfg(world, *NO_DROPOUT)
    L.seed_everything(0, verbose=False)
    model = RetrievalLitModule(cfg).model.train()
    with torch.no_grad():
        model.itm_head.bias.copy_(torch.tensor([0.0, 1.5]))
    ds = TrainCaptionDataset(DataSource(str(world / "train.json"), str(world / "videos")), 4, 32)
    batch = TrainCollate(32)([ds[(i, 0)] for i in range(4)])
    opt = torch.optim.AdamW(official_param_groups(model.named_parameters(), 0.05), lr=3e-4)

    def losses(step: bool) -> dict[str, float]:
        gen = torch.Generator().manual_seed(7)  # same MLM mask and VTM negatives every time
        out = model.training_losses(batch["video"], batch["input_ids"], batch["attention_mask"], idx=batch["idx"],
                                    weights=LossWeights(uta=0), generator=gen)
        if step:
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
        return {k: float(v.detach()) for k, v in out.items()}

    before = losses(step=False)
    for _ in range(4):
        losses(step=True)
    after = losses(step=False)
    assert set(before) == {"vtc", "vtm", "mlm", "loss"}
    for name in ("vtc", "vtm", "mlm"):
        assert after[name] < before[name], (name, before, after)


# ---------------------------------------------------------------------------------------------------- runs


def _metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(path) as fh:
            rows += list(csv.DictReader(fh))
    return rows


def test_resume_repeats_the_uninterrupted_run_and_export_round_trips(world, tmp_path):
    from vtr.model.registry import create_model, installed_models
    from vtr.training.run import train

    opts = [f"data.train={world}", *TINY, "model.drop_path_rate=0.1", "schedule.max_steps=3",
            "trainer.val_every_n_epochs=0", "trainer.keep_checkpoints=0"]
    home = tmp_path / "home"
    full = LossRecorder()
    summary = train("shapes_tiny", [*opts, f"data.val={world}"], name="tiny", home=home, out=tmp_path / "a",
                    callbacks=[full])
    assert summary["global_step"] == 3 and len(full.steps) == 3
    assert summary["metrics"]["t2v_r1"] >= 0 and "temporal_r1" in summary["metrics"]  # final validation ran
    rows = _metrics_rows(tmp_path / "a")
    assert {"train/vtc", "train/vtm", "train/mlm", "train/loss", "train/lr", "train/temp"} <= set(rows[0])

    # interrupted after 2 steps (mid-epoch: 4 batches per epoch), then resumed from last.ckpt
    first, rest = LossRecorder(), LossRecorder()
    train("shapes_tiny", opts, home=home, out=tmp_path / "b", export=False, callbacks=[first],
          trainer_kwargs={"max_steps": 2})
    resumed = train("shapes_tiny", opts, home=home, out=tmp_path / "b", export=False, callbacks=[rest],
                    resume="last")
    assert resumed["global_step"] == 3 and list(rest.steps) == [3]
    assert rest.steps[3][1] == full.steps[3][1]  # the same batch
    assert rest.steps[3][0] == pytest.approx(full.steps[3][0], rel=1e-5, abs=1e-6)  # and the same loss

    # the exported model equals the checkpointed weights, and create_model finds it by name
    assert installed_models(home)["tiny"] == summary["model_dir"]
    meta = json.loads((Path(summary["model_dir"]) / "meta.json").read_text())
    assert meta["training"]["config"]["model"]["arch"] == "videomamba_t16_minilm"
    assert meta["training"]["metrics"] == summary["metrics"]
    exported = create_model("tiny", home=home).eval()
    ckpt = torch.load(summary["checkpoint"], map_location="cpu", weights_only=False)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    ref = RetrievalLitModule(load_config("shapes_tiny", opts)).model
    ref.load_state_dict({k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")})
    ref.eval()
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        tok = ref.tokenize(["a red circle moves left", "a blue square grows"])
        a_v, b_v = ref.encode_video(video).embeds, exported.encode_video(video).embeds
        a_t, b_t = ref.encode_text(**tok).embeds, exported.encode_text(**tok).embeds
    torch.testing.assert_close(a_v, b_v, rtol=0, atol=0)
    torch.testing.assert_close(a_t, b_t, rtol=0, atol=0)


DDP_SCRIPT = """
import json, sys
from vtr.training.run import train
summary = train("shapes_tiny", sys.argv[3:], home=sys.argv[1], out=sys.argv[2])
if summary["model_dir"]:
    print("SUMMARY " + json.dumps(summary))
"""


@pytest.mark.slow  # in the full default run its gloo rendezvous port collided (EADDRINUSE) twice; alone it passes
def test_two_process_ddp_on_cpu_matches_single_process_vtc(world, tmp_path):
    """Lightning strategy=ddp with 2 CPU processes (gloo): VTC at step 0 equals VTC of one process on the
    concatenated global batch (same init, dropout off, keyed data randomness)."""
    opts = [f"data.train={world}", *TINY, *NO_DROPOUT, "data.batch_size=3", "trainer.num_threads=1",
            "schedule.max_steps=2", "trainer.val_every_n_epochs=0", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp"]
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "home"), str(tmp_path / "run"), *opts],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.split("SUMMARY ", 1)[1])
    assert summary["world_size"] == 2 and summary["metrics"] == {}
    assert summary["global_step"] == 2 and summary["train_samples"] == 12
    logged = [float(r["train/vtc"]) for r in _metrics_rows(tmp_path / "run") if r.get("train/vtc")]

    cfg = load_config("shapes_tiny", opts)
    L.seed_everything(cfg.seed, verbose=False)  # as train() does before building the module
    module = RetrievalLitModule(cfg)
    dm = RetrievalDataModule(cfg, 4, 32, 32)
    dm.setup("fit")
    groups = [list(range(len(dm.train_set)))]
    samplers = [MediaBatchSampler(groups, 3, seed=cfg.seed, rank=r, world=2) for r in range(2)]
    keys = [i for s in samplers for i in s.epoch_batches(0)[0]]  # rank 0's first batch, then rank 1's
    batch = TrainCollate(32)([dm.train_set[(i, 0)] for i in keys])

    with torch.no_grad():
        out = module.model.train().training_losses(batch["video"], batch["input_ids"], batch["attention_mask"],
                                                   idx=batch["idx"], weights=LossWeights(vtm=0, mlm=0, uta=0))
    assert logged[0] == pytest.approx(float(out["vtc"]), rel=1e-5)


def test_cli_train_json_and_errors(tmp_path, world):
    env = {**os.environ, "VTR_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "vtr.cli.app", "train"]
    out = subprocess.run([*cmd, "shapes_tiny", f"data.train={world}", *TINY, "schedule.max_steps=1",
                          "trainer.progress_bar=true", "--name", "cli", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)  # stdout is exactly one JSON document; progress and logs go to stderr
    assert summary["global_step"] == 1 and summary["model_dir"] == str(tmp_path / "models" / "cli")
    assert Path(summary["run_dir"]) == tmp_path / "runs" / "cli" and "Epoch 0" in out.stderr
    out = subprocess.run([*cmd, "shapes_tiny", "optim.lrr=1"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "optim.lr" in out.stderr
    out = subprocess.run([*cmd, "shapes_tiny"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and "data.world" in out.stderr
