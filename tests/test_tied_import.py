"""Checkpoint import when the MLM decoder and the word embeddings (tied in BERT) hold different values."""

from __future__ import annotations

import pytest
import torch
from test_retrieval_model import to_official_layout

import vtr.model.registry as registry
from vtr.model.registry import create_model, import_official_checkpoint, load_official_weights
from vtr.model.retrieval import build_model, config_for

WORD = "text_encoder.bert.embeddings.word_embeddings.weight"
DECODER = "text_encoder.cls.predictions.decoder.weight"
CAPTIONS = ["a red circle moves left", "two men talk on a beach", "x"]


def small(**kw):
    return config_for("videomamba_t16_minilm", img_size=64, vision={"depth": 2}, **kw)


def text_embeds(model) -> torch.Tensor:
    with torch.no_grad():
        tok = model.tokenize(CAPTIONS)
        return model.encode_text(tok["input_ids"], tok["attention_mask"]).embeds


@pytest.fixture(scope="module")
def differing():
    """A small model in the official layout whose MLM decoder key differs from its word-embedding key."""
    torch.manual_seed(0)
    src = build_model(small(num_frames=4), text_pretrained=False).eval()
    sd = to_official_layout(src)
    sd[DECODER] = (sd[WORD].float() + 0.5 * torch.randn(sd[WORD].shape)).to(torch.bfloat16)
    with torch.no_grad():  # the source as the bf16 file holds it
        for p in src.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return src, sd


def test_word_embeddings_come_from_the_embeddings_key(differing):
    src, sd = differing
    model = build_model(small(num_frames=4), text_pretrained=False).eval()
    report = load_official_weights(model, dict(sd))
    assert report["mlm_decoder_untied"] is True and report["mlm_head"] is True
    te = model.text_encoder
    torch.testing.assert_close(te.embeddings.word_embeddings.weight, sd[WORD].float(), rtol=0, atol=0)
    torch.testing.assert_close(te.cls.predictions.decoder.weight, sd[DECODER].float(), rtol=0, atol=0)
    assert te.cls.predictions.decoder.weight is not te.embeddings.word_embeddings.weight
    torch.testing.assert_close(text_embeds(model), text_embeds(src), rtol=0, atol=1e-6)
    # the same checkpoint with equal matrices stays tied (one tensor)
    same = dict(sd, **{DECODER: sd[WORD]})
    tied = build_model(small(num_frames=4), text_pretrained=False).eval()
    assert load_official_weights(tied, same)["mlm_decoder_untied"] is False
    assert tied.text_encoder.cls.predictions.decoder.weight is tied.text_encoder.embeddings.word_embeddings.weight


def test_import_drops_a_differing_mlm_head_and_says_so(differing, tmp_path, monkeypatch):
    src, sd = differing
    path = tmp_path / "finetuned.pth"
    torch.save({"model": sd}, path)
    monkeypatch.setattr(registry, "config_for", lambda name, **kw: small(**kw))  # the import path, small sizes
    info = import_official_checkpoint(path, home=tmp_path)
    assert "differs" in info["report"]["mlm_head_dropped"]
    model = create_model(info["name"], home=tmp_path).eval()
    assert not model.text_encoder.has_mlm_head
    torch.testing.assert_close(text_embeds(model), text_embeds(src), rtol=0, atol=1e-6)
    # what the decoder key would have given instead (the old behaviour): different features everywhere
    wrong = build_model(small(num_frames=4, mlm_head=False), text_pretrained=False).eval()
    load_official_weights(wrong, dict(sd, **{WORD: sd[DECODER]}))
    assert (text_embeds(wrong) - text_embeds(src)).abs().max() > 1e-3
