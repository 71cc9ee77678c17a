"""The cached text tower (search start-up): same tokens as the transformers tokenizer, same embeddings and
search answers as the full model, used without loading the model, rebuilt when damaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vtr.data.video_writer import write_video
from vtr.encoders.bert import load_tokenizer, tokenize
from vtr.library import Library
from vtr.model.registry import save_model_dir
from vtr.model.retrieval import build_model, config_for
from vtr.model.text_tower import cache_path, load_text_tower, tokenize_fast

TEXTS = ["a red circle moves left", "A Person is CHOPPING onions!!", "x", "naïve café — über 2 squares, 3.5 s",
         " ".join(["a very long caption"] * 40), "don't stop: #1 (really) [sic]"]


def test_fast_tokenizer_matches_transformers():
    for max_len in (8, 32):
        ids, mask = tokenize_fast(TEXTS, max_len)
        ref = tokenize(load_tokenizer(), TEXTS, max_len)
        assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("tower")
    torch.manual_seed(0)
    model = build_model(config_for("videomamba_t16_minilm", img_size=32, num_frames=2, vision={"depth": 1}))
    model_dir = save_model_dir(model, root / "model")
    videos = root / "videos"
    videos.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        write_video(videos / f"c{i}.mp4", rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
    home = root / "home"
    Library(home=home, model=str(model_dir), device="cpu").index([videos], workers=0, progress=False)
    return home, model_dir


def test_search_uses_the_cached_tower_without_the_model(indexed, monkeypatch):
    home, model_dir = indexed
    full = Library(home=home, device="cpu")
    expected = full.search(TEXTS, k=4)  # loads the full model and writes the cache
    direct = full.encode_text(TEXTS)
    sha = full._model_identity()[1]
    path = cache_path(home, sha, full.model.cfg.max_txt_l)
    assert path.is_file()

    import vtr.model.registry as registry

    def no_model(*a, **kw):
        raise AssertionError("the full model was loaded although the text tower is cached")

    monkeypatch.setattr(registry, "create_model", no_model)
    fast = Library(home=home, device="cpu")
    got = fast.search(TEXTS, k=4)
    assert fast._model is None and fast._tower is not None
    torch.testing.assert_close(fast.encode_text(TEXTS), direct, rtol=0, atol=1e-5)
    for want, have in zip(expected, got, strict=True):
        assert [h.path for h in have] == [h.path for h in want]
        np.testing.assert_allclose([h.score for h in have], [h.score for h in want], atol=1e-5)


def test_damaged_cache_is_dropped(tmp_path):
    path = tmp_path / "tower.pt"
    path.write_bytes(b"not torchscript")
    assert load_text_tower(path, 32) is None and not path.exists()
