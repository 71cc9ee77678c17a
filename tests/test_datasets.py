"""Caption cleaning, annotation files, the video-caption dataset and retrieval pairs."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from vtr.data.datasets import (
    VideoCaptionDataset,
    build_retrieval_pairs,
    collate_skip_none,
    load_annotations,
)
from vtr.data.text import pre_text
from vtr.data.transforms import eval_transform
from vtr.errors import ConfigError

SMALL = partial(eval_transform, size=32)

# ------------------------------------------------------------------ pre_text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("A Man, riding a horse!", "a man riding a horse"),
        ("<person> is talking to <Person>.", "person is talking to person"),
        ("a well-known cat/dog", "a well known cat dog"),
        ("Hello   world  \n", "hello world"),
        ("a - b", "a b"),  # '-' -> ' ' then the run of spaces collapses
        ('it\'s (really) #1: yes; ok~ *star* "quoted"?', "its really 1 yes ok star quoted"),
        ("  leading and trailing  ", "leading and trailing"),
        ("a\tb", "a\tb"),  # official quirk: only runs of 2+ whitespace are collapsed
        ("keep <b> & [x] $5", "keep <b> & [x] $5"),  # characters not in the list stay
    ],
)
def test_pre_text(raw: str, clean: str) -> None:
    assert pre_text(raw) == clean


def test_pre_text_max_words() -> None:
    assert pre_text("One two, three four.", max_words=2) == "one two"
    assert pre_text("one two", max_words=5) == "one two"
    assert pre_text("one two three", max_words=None) == "one two three"


# ------------------------------------------------------------------ annotations


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_load_annotations_keeps_other_keys(tmp_path: Path) -> None:
    data = [
        {"video": "a.mp4", "caption": "A cat.", "duration": 3.0},
        {"image": "b.jpg", "caption": ["x", "y"]},
    ]
    anns = load_annotations(_write_json(tmp_path / "ann.json", data))
    assert anns == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"video": "a.mp4", "caption": "x"}, "must be a JSON list"),
        ([{"caption": "x"}], "has no 'video'"),
        (["a.mp4"], "must be an object"),
        ([{"video": "", "caption": "x"}], "non-empty path"),
        ([{"video": "a.mp4"}], "has no 'caption'"),
        ([{"video": "a.mp4", "caption": 3}], "'caption' must be a string or a list of strings"),
        ([{"video": "a.mp4", "caption": ["ok", 3]}], "non-empty list of strings"),
        ([{"video": "a.mp4", "caption": []}], "non-empty list of strings"),
    ],
)
def test_load_annotations_errors(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_annotations(_write_json(tmp_path / "ann.json", data))


def test_load_annotations_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_annotations(tmp_path / "none.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_annotations(tmp_path / "broken.json")


# ------------------------------------------------------------------ dataset


def test_dataset_item(clip_video: Path, media_dir: Path) -> None:
    anns = [{"video": clip_video.name, "caption": ["A Dog runs!", "second"]}]
    ds = VideoCaptionDataset(
        anns, media_dir, num_frames=4, strategy="middle", transform=SMALL, caption_mode="first"
    )
    assert len(ds) == 1
    item = ds[0]
    assert item["video"].shape == (4, 3, 32, 32) and item["video"].dtype == torch.float32
    assert item["caption"] == "a dog runs"
    assert item["index"] == 0 and item["path"] == str(clip_video)
    assert ds.failures == []


def test_dataset_from_file_with_default_transform(clip_video: Path, media_dir: Path, tmp_path: Path) -> None:
    path = _write_json(tmp_path / "ann.json", [{"video": clip_video.name, "caption": "x"}])
    item = VideoCaptionDataset(path, media_dir, num_frames=2, strategy="middle")[0]
    assert item["video"].shape == (2, 3, 224, 224)


def test_dataset_caption_modes(clip_video: Path, media_dir: Path) -> None:
    anns = [{"video": clip_video.name, "caption": ["One.", "Two!", "Three?"]}]
    make = partial(VideoCaptionDataset, anns, media_dir, num_frames=1, strategy="middle", transform=SMALL)
    assert make(caption_mode="all")[0]["caption"] == "one two three"
    picked = {make(caption_mode="random")[0]["caption"] for _ in range(30)}
    assert picked <= {"one", "two", "three"} and len(picked) > 1
    torch.manual_seed(0)
    a = make(caption_mode="random")[0]["caption"]
    torch.manual_seed(0)
    assert make(caption_mode="random")[0]["caption"] == a
    with pytest.raises(ConfigError):
        make(caption_mode="bogus")


def test_dataset_rand_sampling_is_seeded(clip_video: Path, media_dir: Path) -> None:
    anns = [{"video": clip_video.name, "caption": "x"}]
    ds = VideoCaptionDataset(anns, media_dir, num_frames=4, strategy="rand", transform=SMALL)
    torch.manual_seed(1)
    a = ds[0]["video"]
    torch.manual_seed(1)
    assert torch.equal(ds[0]["video"], a)


def test_dataset_image_entry(image_file: Path, media_dir: Path) -> None:
    anns = [{"image": image_file.name, "caption": "A still."}]
    item = VideoCaptionDataset(anns, media_dir, num_frames=8, transform=SMALL)[0]
    assert item["video"].shape == (1, 3, 32, 32)
    assert item["caption"] == "a still"


def test_bad_files_are_recorded_and_skipped(
    clip_video: Path, bad_files: dict[str, Path], media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    anns = [
        {"video": clip_video.name, "caption": "good one"},
        {"video": str(bad_files["text"].relative_to(media_dir)), "caption": "bad"},
        {"video": "does/not/exist.mp4", "caption": "missing"},
        {"video": clip_video.name, "caption": "good two"},
    ]
    ds = VideoCaptionDataset(anns, media_dir, num_frames=2, strategy="middle", transform=SMALL)
    with caplog.at_level(logging.WARNING, logger="vtr.data.datasets"):
        assert ds[1] is None and ds[2] is None
        assert ds[1] is None  # a second failure of the same path is recorded but not logged again
    assert ds.failures == [
        (str(bad_files["text"]), "no_video_stream"),
        (str(media_dir / "does/not/exist.mp4"), "missing"),
        (str(bad_files["text"]), "no_video_stream"),
    ]
    assert len([r for r in caplog.records if "skipping" in r.getMessage()]) == 2

    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_skip_none))
    assert len(batches) == 1
    batch = batches[0]
    assert batch["video"].shape == (2, 2, 3, 32, 32)
    assert batch["caption"] == ["good one", "good two"]
    assert batch["index"].tolist() == [0, 3] and batch["index"].dtype == torch.long
    assert batch["path"] == [str(clip_video)] * 2


def test_collate_all_bad_is_none() -> None:
    assert collate_skip_none([None, None]) is None
    assert collate_skip_none([]) is None


# ------------------------------------------------------------------ retrieval pairs

ANNS = [
    {"video": "v0.mp4", "caption": ["A b.", "C-d"]},
    {"video": "v1.mp4", "caption": "E f!"},
    {"video": "v2.mp4", "caption": ["g"]},
]


def test_build_retrieval_pairs() -> None:
    texts, videos, txt2vid, vid2txt = build_retrieval_pairs(ANNS, paragraph=False)
    assert texts == ["a b", "c d", "e f", "g"]
    assert videos == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert txt2vid == [0, 0, 1, 2]
    assert vid2txt == [[0, 1], [2], [3]]


def test_build_retrieval_pairs_paragraph(tmp_path: Path) -> None:
    texts, videos, txt2vid, vid2txt = build_retrieval_pairs(ANNS, paragraph=True, media_root=tmp_path)
    assert texts == ["a b c d", "e f", "g"]  # joined with spaces, then cleaned
    assert videos == [str(tmp_path / f"v{i}.mp4") for i in range(3)]
    assert txt2vid == [0, 1, 2]
    assert vid2txt == [[0], [1], [2]]


def test_build_retrieval_pairs_validates() -> None:
    with pytest.raises(ConfigError):
        build_retrieval_pairs([{"video": "v.mp4"}], paragraph=False)
