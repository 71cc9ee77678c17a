"""Evaluation-data discovery on tiny fixture trees in the official (and common) layouts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vtr.errors import ConfigError
from vtr.evaluation.datasets import DATASETS, discover, get_spec


def write_json(path: Path, entries: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def touch_videos(folder: Path, names: list[str]) -> None:
    for name in names:
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()


MSRVTT = [
    {"video": "video7020.mp4", "caption": "A woman is Singing!", "duration": 10.8},
    {"video": "video7021.mp4", "caption": "a man / a dog (running)"},
    {"video": "video7022.mp4", "caption": "cooking-show"},
]


def test_registry_protocols():
    assert set(DATASETS) == {"msrvtt", "didemo", "anet", "lsmdc", "msvd", "custom"}
    assert [DATASETS[d].max_txt_l for d in ("msrvtt", "didemo", "anet", "lsmdc", "msvd")] == [32, 64, 150, 96, 64]
    assert DATASETS["didemo"].max_seconds == 30 and DATASETS["didemo"].paragraph and DATASETS["anet"].paragraph
    assert not DATASETS["msvd"].paragraph and DATASETS["msrvtt"].max_seconds is None
    assert all(s.num_frames == 8 and s.sampling == "middle" for s in DATASETS.values())
    assert get_spec("ActivityNet").name == "anet" and get_spec("MSRVTT").name == "msrvtt"
    with pytest.raises(ConfigError, match="known: msrvtt"):
        get_spec("kinetics")


def test_msrvtt_official_layout(tmp_path):
    ann = write_json(tmp_path / "anno_downstream" / "msrvtt_ret_test1k.json", MSRVTT)
    touch_videos(tmp_path / "MSRVTT_Videos", [e["video"] for e in MSRVTT])
    (tmp_path / "videos").mkdir()  # an empty candidate folder does not win over the one holding the videos
    ds = discover("msrvtt", tmp_path)
    assert ds.annotation == ann and ds.annotation_format == "json"
    assert ds.annotation_sha256 == hashlib.sha256(ann.read_bytes()).hexdigest()
    assert ds.video_root == tmp_path / "MSRVTT_Videos"
    assert ds.video_paths == [str(tmp_path / "MSRVTT_Videos" / e["video"]) for e in MSRVTT]
    assert ds.texts == ["a woman is singing", "a man a dog running", "cooking show"]
    assert ds.txt2vid == [0, 1, 2] and ds.vid2txt == [[0], [1], [2]]
    assert ds.complete and ds.num_missing == 0 and not ds.extension_fallbacks
    assert (ds.max_txt_l, ds.num_frames, ds.sampling, ds.max_seconds, ds.paragraph) == (32, 8, "middle", None, False)
    summary = ds.summary()
    json.dumps(summary)
    assert summary["num_videos"] == 3 and summary["num_missing_videos"] == 0


def test_msrvtt_annotation_at_root_and_videos_folder(tmp_path):
    write_json(tmp_path / "msrvtt_ret_test1k.json", MSRVTT)
    touch_videos(tmp_path / "videos", [e["video"] for e in MSRVTT])
    ds = discover("msrvtt", tmp_path)
    assert ds.annotation == tmp_path / "msrvtt_ret_test1k.json" and ds.video_root == tmp_path / "videos"


def test_videos_beside_the_annotation(tmp_path):
    write_json(tmp_path / "anno_downstream" / "msrvtt_ret_test1k.json", MSRVTT)
    touch_videos(tmp_path / "anno_downstream", [e["video"] for e in MSRVTT])
    assert discover("msrvtt", tmp_path).video_root == tmp_path / "anno_downstream"


CSV_TEXT = (
    "key,vid_key,video_id,sentence\n"
    "ret0,msr7020,video7020,a woman is singing\n"
    'ret1,msr7021,video7021,"a man, running"\n'
)


@pytest.mark.parametrize(
    "csv_dir,video_dir", [("msrvtt_data", "MSRVTT/videos/all"), ("", "videos/all"), ("MSRVTT", "MSRVTT/videos/all")]
)
def test_msrvtt_csv_layout(tmp_path, csv_dir, video_dir):
    csv_path = tmp_path / csv_dir / "MSRVTT_JSFUSION_test.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text(CSV_TEXT, encoding="utf-8")
    touch_videos(tmp_path / video_dir, ["video7020.mp4", "video7021.mp4"])
    ds = discover("msrvtt", tmp_path)
    assert ds.annotation == csv_path and ds.annotation_format == "csv"
    assert ds.video_root == tmp_path / video_dir
    assert ds.video_names == ["video7020.mp4", "video7021.mp4"]
    assert ds.texts == ["a woman is singing", "a man running"]
    assert ds.txt2vid == [0, 1]


def test_msrvtt_json_is_preferred_over_csv(tmp_path):
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text(CSV_TEXT, encoding="utf-8")
    write_json(tmp_path / "anno_downstream" / "msrvtt_ret_test1k.json", MSRVTT)
    touch_videos(tmp_path / "MSRVTT_Videos", [e["video"] for e in MSRVTT])
    assert discover("msrvtt", tmp_path).annotation_format == "json"


def test_csv_without_the_needed_columns(tmp_path):
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_text("key,caption\na,b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="video_id"):
        discover("msrvtt", tmp_path)


DIDEMO = [
    {"video": "1234@N00_567.mp4", "caption": ["The dog runs.", "It jumps (high)!", "A cat watches"]},
    {"video": "89@N01_2.mp4", "caption": ["Camera pans-left"]},
    {"video": "77@N02_3.mp4", "caption": ["first", "second"]},
]


def test_didemo_paragraphs_and_extension_fallback(tmp_path):
    write_json(tmp_path / "anno_downstream" / "didemo_ret_test.json", DIDEMO)
    # on disk the first video is a .mov and the third a .mkv (the annotation names .mp4)
    touch_videos(tmp_path / "DiDeMo", ["1234@N00_567.mov", "89@N01_2.mp4", "77@N02_3.mkv", "77@N02_3.txt"])
    ds = discover("didemo", tmp_path)
    assert ds.texts == ["the dog runs it jumps high a cat watches", "camera pans left", "first second"]
    assert ds.txt2vid == [0, 1, 2] and ds.vid2txt == [[0], [1], [2]]
    assert ds.paragraph and ds.max_seconds == 30 and ds.max_txt_l == 64
    assert ds.video_paths == [
        str(tmp_path / "DiDeMo" / "1234@N00_567.mov"),
        str(tmp_path / "DiDeMo" / "89@N01_2.mp4"),
        str(tmp_path / "DiDeMo" / "77@N02_3.mkv"),
    ]
    assert ds.extension_fallbacks == {"1234@N00_567.mp4": "1234@N00_567.mov", "77@N02_3.mp4": "77@N02_3.mkv"}
    assert ds.summary()["num_extension_fallbacks"] == 2
    assert discover("didemo", tmp_path, max_seconds=0).max_seconds is None


def test_extension_fallback_prefers_the_listed_order(tmp_path):
    write_json(tmp_path / "didemo_ret_val.json", [{"video": "clip", "caption": ["x"]}])
    touch_videos(tmp_path / "DiDeMo", ["clip.avi", "clip.webm"])
    ds = discover("didemo", tmp_path, split="val")
    assert ds.annotation.name == "didemo_ret_val.json"
    assert ds.video_paths == [str(tmp_path / "DiDeMo" / "clip.webm")]


def test_anet_uses_the_val_file_and_lsmdc_subfolders(tmp_path):
    anet = [{"video": "v_abc.mp4", "caption": ["one", "two"]}, {"video": "v_def.mkv", "caption": ["three"]}]
    write_json(tmp_path / "anno_downstream" / "anet_ret_val.json", anet)
    touch_videos(tmp_path / "val", ["v_abc.mp4", "v_def.mkv"])
    ds = discover("anet", tmp_path)
    assert ds.annotation.name == "anet_ret_val.json" and ds.video_root == tmp_path / "val"
    assert ds.texts == ["one two", "three"] and ds.max_txt_l == 150

    lsmdc = [{"video": "1001_Movie/1001_Movie_00.00.01-00.00.03.avi", "caption": "SOMEONE smiles."}]
    write_json(tmp_path / "anno_downstream" / "lsmdc_ret_test_1000.json", lsmdc)
    touch_videos(tmp_path / "LSMDC", [lsmdc[0]["video"]])
    ds = discover("lsmdc", tmp_path)
    assert ds.video_paths == [str(tmp_path / "LSMDC" / lsmdc[0]["video"])] and ds.texts == ["someone smiles"]
    assert ds.max_txt_l == 96


def test_msvd_every_caption_is_a_query(tmp_path):
    msvd = [
        {"video": "-4wsuPCjDBc_5_15.avi", "caption": ["a man plays", "someone plays", "guitar"]},
        {"video": "abc_1_2.avi", "caption": ["a cat"]},
        {"video": "xyz_3_9.avi", "caption": ["two", "dogs"]},
    ]
    write_json(tmp_path / "anno_downstream" / "msvd_ret_test.json", msvd)
    touch_videos(tmp_path / "MSVD_Videos", [e["video"] for e in msvd])
    ds = discover("msvd", tmp_path)
    assert ds.texts == ["a man plays", "someone plays", "guitar", "a cat", "two", "dogs"]
    assert ds.txt2vid == [0, 0, 0, 1, 2, 2]
    assert ds.vid2txt == [[0, 1, 2], [3], [4, 5]]
    assert not ds.paragraph and ds.max_txt_l == 64


def test_missing_videos_are_reported_and_left_out(tmp_path):
    msvd = [
        {"video": "a.avi", "caption": ["a1", "a2"]},
        {"video": "b.avi", "caption": ["b1", "b2", "b3"]},
        {"video": "c.avi", "caption": ["c1"]},
    ]
    write_json(tmp_path / "msvd_ret_test.json", msvd)
    touch_videos(tmp_path / "MSVD_Videos", ["a.avi", "c.avi"])
    ds = discover("msvd", tmp_path)
    assert ds.missing_videos == ["b.avi"] and ds.num_missing == 1 and not ds.complete
    assert ds.video_names == ["a.avi", "c.avi"]
    assert ds.texts == ["a1", "a2", "c1"] and ds.txt2vid == [0, 0, 1] and ds.vid2txt == [[0, 1], [2]]
    assert (ds.num_annotated_videos, ds.num_annotated_texts, ds.num_dropped_texts) == (3, 6, 3)
    s = ds.summary()
    assert s["num_missing_videos"] == 1 and s["missing_videos"] == ["b.avi"] and s["num_dropped_texts"] == 3
    with pytest.raises(ConfigError, match=r"1 of the 3 videos .* missing.*'b\.avi'"):
        discover("msvd", tmp_path, strict=True)


def test_missing_annotation_lists_every_candidate(tmp_path):
    with pytest.raises(ConfigError) as info:
        discover("msrvtt", tmp_path)
    msg = str(info.value)
    for cand in [
        tmp_path / "anno_downstream" / "msrvtt_ret_test1k.json",
        tmp_path / "msrvtt_ret_test1k.json",
        tmp_path / "MSRVTT_JSFUSION_test.csv",
        tmp_path / "msrvtt_data" / "MSRVTT_JSFUSION_test.csv",
    ]:
        assert str(cand) in msg
    assert "--annotation" in msg and "--video-root" in msg
    with pytest.raises(ConfigError, match="does not exist"):
        discover("didemo", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="no split 'train'"):
        discover("didemo", tmp_path, split="train")
    with pytest.raises(ConfigError, match="--annotation"):
        discover("custom", tmp_path)
    with pytest.raises(ConfigError, match="--data-root"):
        discover("msrvtt")


def test_missing_videos_everywhere_lists_the_folders_tried(tmp_path):
    write_json(tmp_path / "anno_downstream" / "msrvtt_ret_test1k.json", MSRVTT)
    (tmp_path / "MSRVTT_Videos").mkdir()
    with pytest.raises(ConfigError) as info:
        discover("msrvtt", tmp_path)
    msg = str(info.value)
    assert "video7020.mp4" in msg and "--video-root" in msg
    assert str(tmp_path / "MSRVTT_Videos") in msg and str(tmp_path / "videos") in msg
    assert str(tmp_path / "MSRVTT" / "videos" / "all") in msg
    with pytest.raises(ConfigError, match="--video-root"):
        discover("msrvtt", tmp_path, video_root=tmp_path / "not-there")


def test_explicit_annotation_and_video_root(tmp_path):
    ann = write_json(tmp_path / "elsewhere" / "mine.json", MSRVTT[:2])
    touch_videos(tmp_path / "clips", ["video7020.mp4", "video7021.mp4"])
    # a video root holding the files decides even when the data root has another copy
    touch_videos(tmp_path / "MSRVTT_Videos", ["video7020.mp4", "video7021.mp4"])
    ds = discover("msrvtt", tmp_path, annotation=ann, video_root=tmp_path / "clips")
    assert ds.annotation == ann and ds.video_root == tmp_path / "clips"
    # a relative annotation is looked up under the data root first
    ds = discover("msrvtt", tmp_path, annotation="elsewhere/mine.json")
    assert ds.annotation == tmp_path / "elsewhere" / "mine.json" and ds.video_root == tmp_path / "MSRVTT_Videos"
    with pytest.raises(ConfigError, match="annotation file not found"):
        discover("msrvtt", tmp_path, annotation="nope.json")


def test_custom_dataset_options(tmp_path):
    entries = [{"video": "a.webm", "caption": ["Hello there", "General Kenobi"]}, {"video": "b.mp4", "caption": "x"}]
    ann = write_json(tmp_path / "my" / "ann.json", entries)
    touch_videos(tmp_path / "my", ["a.webm", "b.mp4"])  # beside the JSON, no data root
    ds = discover("custom", annotation=ann)
    assert ds.video_root == tmp_path / "my" and ds.texts == ["hello there", "general kenobi", "x"]
    assert (ds.max_txt_l, ds.paragraph, ds.max_seconds) == (32, False, None)
    ds = discover("custom", annotation=ann, paragraph=True, max_txt_l=77, max_seconds=12.5, num_frames=16)
    assert ds.texts == ["hello there general kenobi", "x"] and ds.vid2txt == [[0], [1]]
    assert (ds.max_txt_l, ds.paragraph, ds.max_seconds, ds.num_frames) == (77, True, 12.5, 16)
