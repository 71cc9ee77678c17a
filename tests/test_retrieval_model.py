"""Retrieval model: official checkpoint import, similarities, model directories, training forward/backward."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_videomamba import expected_keys

from vtr.errors import CheckpointError, ConfigError
from vtr.model.registry import (
    create_model,
    import_official_checkpoint,
    installed_models,
    load_model_dir,
    save_model_dir,
)
from vtr.model.retrieval import RetrievalModel, build_model, config_for


def official_text_keys(layers: int = 12, fusion: int = 9, hidden: int = 768, vision: int = 576,
                       ffn: int = 3072, vocab: int = 30522) -> dict[str, tuple[int, ...]]:
    """``text_encoder.*`` keys of the pretraining-form checkpoint (BertForMaskedLM), from the spec's list."""
    p = "text_encoder.bert."
    keys = {p + "embeddings.word_embeddings.weight": (vocab, hidden),
            p + "embeddings.position_embeddings.weight": (512, hidden),
            p + "embeddings.token_type_embeddings.weight": (2, hidden),
            p + "embeddings.LayerNorm.weight": (hidden,), p + "embeddings.LayerNorm.bias": (hidden,),
            p + "embeddings.position_ids": (1, 512)}

    def linear(name, out_f, in_f):
        keys[name + ".weight"], keys[name + ".bias"] = (out_f, in_f), (out_f,)

    for i in range(layers):
        q = f"{p}encoder.layer.{i}."
        for part in ("query", "key", "value"):
            linear(q + f"attention.self.{part}", hidden, hidden)
        linear(q + "attention.output.dense", hidden, hidden)
        keys[q + "attention.output.LayerNorm.weight"] = keys[q + "attention.output.LayerNorm.bias"] = (hidden,)
        linear(q + "intermediate.dense", ffn, hidden)
        linear(q + "output.dense", hidden, ffn)
        keys[q + "output.LayerNorm.weight"] = keys[q + "output.LayerNorm.bias"] = (hidden,)
        if i >= fusion:
            linear(q + "crossattention.self.query", hidden, hidden)
            linear(q + "crossattention.self.key", hidden, vision)
            linear(q + "crossattention.self.value", hidden, vision)
            linear(q + "crossattention.output.dense", hidden, hidden)
            keys[q + "crossattention.output.LayerNorm.weight"] = (hidden,)
            keys[q + "crossattention.output.LayerNorm.bias"] = (hidden,)
    c = "text_encoder.cls.predictions."
    keys[c + "bias"] = (vocab,)
    linear(c + "transform.dense", hidden, hidden)
    keys[c + "transform.LayerNorm.weight"] = keys[c + "transform.LayerNorm.bias"] = (hidden,)
    keys[c + "decoder.weight"], keys[c + "decoder.bias"] = (vocab, hidden), (vocab,)
    return keys


def official_keys() -> dict[str, tuple[int, ...]]:
    keys = {f"vision_encoder.{k}": v for k, v in expected_keys(32, 576).items()}
    keys.update(official_text_keys())
    keys.update({"vision_proj.weight": (512, 576), "vision_proj.bias": (512,), "text_proj.weight": (512, 768),
                 "text_proj.bias": (512,), "temp": (), "itm_head.weight": (2, 768), "itm_head.bias": (2,)})
    return keys


def to_official_layout(model: RetrievalModel) -> dict[str, torch.Tensor]:
    """The model's weights as the released files store them: text under text_encoder.bert./cls., bf16."""
    sd = {}
    for key, value in model.state_dict().items():
        if key.startswith("text_encoder.") and not key.startswith("text_encoder.cls."):
            key = "text_encoder.bert." + key[len("text_encoder."):]
        sd[key] = value.to(torch.bfloat16)
    sd["text_encoder.cls.predictions.decoder.weight"] = sd["text_encoder.bert.embeddings.word_embeddings.weight"]
    sd["text_encoder.bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    return sd


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A full-size videomamba_m16_umt with random weights, saved exactly in the official layout."""
    torch.manual_seed(0)
    src = build_model(config_for("videomamba_m16_umt"), text_pretrained=False).eval()
    with torch.no_grad():
        for p in src.parameters():
            if p.ndim <= 1:
                p.add_(0.02 * torch.randn_like(p))
        src.temp.fill_(0.07)
    sd = to_official_layout(src)
    assert {k: tuple(v.shape) for k, v in sd.items()} == official_keys()
    sd["clip_teacher.ln_post.weight"] = torch.ones(768, dtype=torch.bfloat16)  # tolerated, ignored
    path = tmp_path_factory.mktemp("ckpt") / "videomamba_m16_5M_f8_res224.pth"
    torch.save({"model": sd, "epoch": 9, "config": {"x": 1}}, path)
    with torch.no_grad():  # the source as the bf16 file holds it
        for p in src.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return src, path


def _scores(model: RetrievalModel, images: torch.Tensor, captions: list[str]):
    with torch.no_grad():
        vid = model.encode_video(images)
        tok = model.tokenize(captions)
        txt = model.encode_text(tok["input_ids"], tok["attention_mask"])
        sim = model.similarity(vid.embeds, txt.embeds)
        itm = model.itm_logits(vid.tokens[:1].expand(len(captions), -1, -1), txt.states, txt.mask)[:, 1]
    return sim, itm


def test_official_checkpoint_imports_and_reproduces(official, tmp_path):
    src, path = official
    info = import_official_checkpoint(path, home=tmp_path)
    assert info["name"] == "videomamba_m16_5M_f8_res224" and info["num_frames"] == 8
    assert info["report"]["mlm_head"] is True and info["report"]["ignored_prefixes"] == ["clip_teacher"]
    assert installed_models(tmp_path) == {info["name"]: info["path"]}
    model = create_model(home=tmp_path).eval()  # the first import becomes the default
    torch.manual_seed(1)
    images = torch.randn(2, 1, 3, 224, 224)  # T=1: image path, keeps the 32-layer forward quick on CPU
    captions = ["A person is chopping onions!", "a dog runs on the beach", "two men talk"]
    sim_src, itm_src = _scores(src, images, captions)
    sim_new, itm_new = _scores(model, images, captions)
    torch.testing.assert_close(sim_new, sim_src, rtol=0, atol=1e-6)
    torch.testing.assert_close(itm_new, itm_src, rtol=0, atol=1e-5)
    assert model.text_encoder.cls.predictions.decoder.weight is model.text_encoder.embeddings.word_embeddings.weight


def test_bad_checkpoints_register_nothing(official, tmp_path):
    _, path = official
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(path.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match="truncated"):
        import_official_checkpoint(trunc, home=tmp_path)
    vision_only = tmp_path / "vision.pth"
    torch.save({"vision_encoder.cls_token": torch.zeros(1, 1, 576),
                "vision_encoder.temporal_pos_embedding": torch.zeros(1, 8, 576)}, vision_only)
    with pytest.raises(CheckpointError, match="no text_encoder"):
        import_official_checkpoint(vision_only, home=tmp_path)
    assert installed_models(tmp_path) == {}


def test_cli_import_errors_are_one_line(tmp_path):
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a checkpoint")
    env = {**os.environ, "VTR_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "vtr.cli.app", "models", "import", str(bad)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 4 and "Traceback" not in out.stderr and "x.pth" in out.stderr
    listed = subprocess.run([sys.executable, "-m", "vtr.cli.app", "models", "list", "--json"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert json.loads(listed.stdout)["installed"] == {}


# ---------------------------------------------------------------- the small models


def tiny_cfg(**kw):
    return config_for("videomamba_t16_minilm", img_size=64, num_frames=4, vision={"depth": 2, **kw})


def test_model_directory_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    path = save_model_dir(model, tmp_path / "m")
    again = create_model(path).eval()
    video = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        a, b = model.encode_video(video), again.encode_video(video)
        tok = model.tokenize(["a red circle moves left"])
        ta, tb = model.encode_text(**tok), again.encode_text(**tok)
    torch.testing.assert_close(a.embeds, b.embeds, rtol=0, atol=0)
    torch.testing.assert_close(ta.embeds, tb.embeds, rtol=0, atol=0)
    assert again.weights_sha256 and len(again.weights_sha256) == 64
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_model_dir(path)


def test_unknown_model_name_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="videomamba_t16_minilm"):
        create_model("nope", home=tmp_path)
    with pytest.raises(ConfigError, match="vtr models import"):
        create_model(None, home=tmp_path)


def test_tiny_model_trains_with_teacher_forward_backward():
    from vtr.encoders.clip_teacher import create_clip_teacher

    torch.manual_seed(0)
    teacher = create_clip_teacher({"embed_dim": 48, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64,
                                                                    "head_width": 32, "patch_size": 16}})
    model = build_model(tiny_cfg(clip_output_dim=48)).train()
    video = torch.randn(3, 4, 3, 64, 64)
    tok = model.tokenize(["a red circle moves left", "a blue square grows", "a green triangle appears"])
    out = model.training_losses(video, tok["input_ids"], tok["attention_mask"], teacher=teacher,
                                mask_kind="attention", mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"uta", "vtc", "vtm", "mlm", "loss"}
    assert all(torch.isfinite(v) for v in out.values())
    torch.testing.assert_close(out["loss"], out["uta"] + out["vtc"] + out["vtm"] + out["mlm"])
    out["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert all(p.grad is None for p in teacher.parameters())


def test_temperature_is_clamped_each_training_step():
    model = build_model(tiny_cfg())
    with torch.no_grad():
        model.temp.fill_(5.0)
    tok = model.tokenize(["a", "b"])
    model.training_losses(torch.randn(2, 4, 3, 64, 64), tok["input_ids"], tok["attention_mask"])
    assert model.temp.item() == pytest.approx(0.5)


def _readme_parameter_counts() -> dict[str, int]:
    """``| `name` | ... | 190,354,621 |`` rows of README's model table."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return {m[1]: int(m[2].replace(",", "")) for m in re.finditer(r"^\| `(\w+)` \|.*\| ([\d,]+) \|$", readme, re.M)}


@pytest.mark.parametrize("name", __import__("vtr").list_models())
def test_every_registered_architecture_builds_round_trips_and_matches_readme(name, tmp_path, monkeypatch):
    from vtr.encoders.videomamba import VIDEO_ENCODERS

    # README's parameter count, on the meta device (no memory, no time)
    with torch.device("meta"):
        full = build_model(config_for(name), text_pretrained=False)
    assert sum(p.numel() for p in full.parameters()) == _readme_parameter_counts()[name]
    # shrunk, built for real: a model directory round trip gives the same outputs
    text = {"fusion_layer": 1, "num_fusion_layers": 1}
    torch.manual_seed(0)
    model = build_model(config_for(name, img_size=32, num_frames=2, vision={"depth": 2}, text=text),
                        text_pretrained=False).eval()
    path = save_model_dir(model, tmp_path / name)
    saved = json.loads((path / "config.json").read_text())
    assert saved["vision"]["depth"] == 2 and saved["vision"]["embed_dim"] == model.vision_encoder.cfg.embed_dim
    assert saved["text"]["hidden_size"] == model.text_encoder.config.hidden_size  # resolved, not only overrides
    # a saved directory keeps its meaning when a registry default changes later
    monkeypatch.setitem(VIDEO_ENCODERS[model.cfg.vision_encoder], "embed_dim", 64)
    again = load_model_dir(path).eval()
    video = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_video(video).embeds, model.encode_video(video).embeds, rtol=0, atol=0)


def test_model_directory_with_override_only_config_still_loads(tmp_path):
    """Directories written before configs were saved resolved (only overrides of the registry) still load."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg()).eval()
    path = save_model_dir(model, tmp_path / "m")
    (path / "config.json").write_text(json.dumps(model.cfg.to_dict()))  # the old format
    again = load_model_dir(path).eval()
    video = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_video(video).embeds, model.encode_video(video).embeds, rtol=0, atol=0)
