"""The vtr-shapes synthetic world: layout, official format, determinism, temporal negatives, held-out combos."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from vtr.data.synth import (
    COLORS,
    GENERATOR_VERSION,
    SHAPES,
    CaptionStyle,
    Event,
    WorldSummary,
    events_of,
    generate_world,
    make_caption,
    parse_caption,
)
from vtr.errors import ConfigError

NUM_VIDEOS = 40


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _clean(caption: str) -> str:
    """The official caption cleaning."""
    caption = caption.lower()
    caption = re.sub(r"[,.'!?\"()*#:;~]", "", caption)
    return caption.replace("-", " ").replace("/", " ")


def _combos(record: dict[str, Any]) -> set[tuple[str, str]]:
    out = set().union(*(e.combos() for e in events_of(record)))
    if record["distractor"] is not None:
        out.add((record["distractor"]["shape"], record["distractor"]["color"]))
    return out


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("synth")
    calls: list[tuple[int, int]] = []
    a = generate_world(root / "a", NUM_VIDEOS, seed=5, workers=2, progress=lambda d, t: calls.append((d, t)))
    a2 = generate_world(root / "a2", NUM_VIDEOS, seed=5, workers=1)
    b = generate_world(root / "b", NUM_VIDEOS, seed=6, workers=1)
    return {"a": a, "a2": a2, "b": b, "progress": calls}


@pytest.fixture(scope="module")
def world(worlds: dict[str, Any]) -> WorldSummary:
    return worlds["a"]


def test_layout_and_summary_counts(world: WorldSummary, worlds: dict[str, Any]) -> None:
    train, test = _load(world.train_json), _load(world.test_json)
    mp4s = sorted(p.name for p in world.videos_dir.glob("*.mp4"))
    assert world.num_videos == NUM_VIDEOS == len(mp4s) == len(train) + len(test)
    assert sorted(r["video"] for r in train + test) == mp4s
    assert (world.num_train, world.num_test) == (len(train), len(test)) == (32, 8)
    partners = [r for r in test if r["temporal_role"] in ("reversed", "swapped")]
    groups = {r["temporal_group"] for r in test if r["temporal_group"]}
    assert world.num_temporal_negatives == world.num_temporal_groups == len(partners) == len(groups) == 4
    assert world.num_heldout_test == sum(r["heldout_combo"] for r in test) >= 1

    info = _load(world.world_json)
    assert info["generator_version"] == world.generator_version == GENERATOR_VERSION
    assert info["seed"] == world.seed == 5
    for key in ("num_videos", "num_train", "num_test", "num_temporal_groups", "num_temporal_negatives",
                "num_heldout_test"):
        assert info[key] == getattr(world, key), key
    assert [tuple(c) for c in info["heldout_combos"]] == world.heldout_combos
    assert json.loads(json.dumps(world.to_dict()))["num_videos"] == NUM_VIDEOS

    calls = worlds["progress"]
    assert calls[0] == (0, NUM_VIDEOS) and calls[-1] == (NUM_VIDEOS, NUM_VIDEOS)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_official_annotation_format(world: WorldSummary) -> None:
    train, test = _load(world.train_json), _load(world.test_json)
    for record in train:
        caps = record["caption"]
        assert isinstance(caps, list) and 2 <= len(caps) <= 3 and len(set(caps)) == len(caps)
    for record in test:
        assert isinstance(record["caption"], str)
    for record in train + test:
        assert isinstance(record["video"], str) and not Path(record["video"]).is_absolute()
        caps = record["caption"] if isinstance(record["caption"], list) else [record["caption"]]
        for cap in caps:
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", cap), cap
            assert _clean(cap) == cap
        assert record["duration"] == pytest.approx(record["num_frames"] / record["fps"])
        assert isinstance(record["heldout_combo"], bool)


def test_captions_describe_the_events(world: WorldSummary) -> None:
    for record in _load(world.train_json) + _load(world.test_json):
        caps = record["caption"] if isinstance(record["caption"], list) else [record["caption"]]
        for cap in caps:
            assert parse_caption(cap) == events_of(record), cap
        spans = [e["frames"] for e in record["events"]]
        assert spans[0][0] == 0 and spans[-1][1] == record["num_frames"]
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_make_caption_and_reversal() -> None:
    ev = Event("move", "circle", "red", direction="left")
    assert make_caption([ev]) == "a red circle moves left"
    assert make_caption([ev.reversed()]) == "a red circle moves right"
    two = [ev, Event("appear", "square", "blue")]
    assert make_caption(two) == "a red circle moves left then a blue square appears"
    rng = np.random.default_rng(0)
    for _ in range(300):
        style = CaptionStyle.sample(rng)
        assert parse_caption(make_caption(two, style, texture="dots")) == two
        assert parse_caption(make_caption(two[::-1], style)) == two[::-1]
        recolor = Event("recolor", "cross", "orange", to_color="white")
        text = make_caption([recolor], style, distractor=("triangle", "green"), texture="noise")
        assert parse_caption(text) == [recolor]
        assert parse_caption(make_caption([recolor.reversed()], style)) == [recolor.reversed()]
    for shape in SHAPES:
        for color in COLORS:
            for e in (Event("grow", shape, color), Event("appear", shape, color),
                      Event("move", shape, color, direction="up")):
                assert e.reversed() != e and e.reversed().reversed() == e
    with pytest.raises(ValueError):
        parse_caption("a cat sits on a mat")


def test_videos_decode_with_declared_shape(world: WorldSummary) -> None:
    sizes = set()
    for record in _load(world.train_json) + _load(world.test_json):
        frames = _decode(world.videos_dir / record["video"])
        t, h, w, c = frames.shape
        assert (t, h, w, c) == (record["num_frames"], record["height"], record["width"], 3)
        assert 8 <= t <= 32 and 64 <= h <= 224 and 64 <= w <= 224 and h % 2 == 0 and w % 2 == 0
        assert frames.std() > 5  # a textured background and visible shapes, not a blank clip
        sizes.add((h, w))
    assert len(sizes) > 5


def test_determinism(worlds: dict[str, Any]) -> None:
    a, a2, b = worlds["a"], worlds["a2"], worlds["b"]
    for name in ("train.json", "test.json", "world.json"):
        assert (a.out_dir / name).read_bytes() == (a2.out_dir / name).read_bytes(), name
        assert (a.out_dir / name).read_bytes() != (b.out_dir / name).read_bytes(), name
    names = sorted(p.name for p in a.videos_dir.glob("*.mp4"))
    # Same machine, 2 workers vs 1: identical bytes (libx264 is deterministic for a given thread count).
    for name in names:
        assert (a.videos_dir / name).read_bytes() == (a2.videos_dir / name).read_bytes(), name
    for name in names[:3] + names[-3:]:
        assert np.array_equal(_decode(a.videos_dir / name), _decode(a2.videos_dir / name))
    assert (a.videos_dir / names[0]).read_bytes() != (b.videos_dir / names[0]).read_bytes()


def test_temporal_groups_are_reordered_frames(world: WorldSummary) -> None:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in _load(world.test_json):
        if record["temporal_group"] is not None:
            groups[record["temporal_group"]].append(record)
    assert groups
    for members in groups.values():
        assert len(members) == 2
        orig, partner = members
        assert orig["temporal_role"] == "original" and partner["temporal_role"] in ("reversed", "swapped")
        for key in ("background", "distractor", "num_frames", "height", "width", "heldout_combo"):
            assert orig[key] == partner[key], key
        assert orig["caption"] != partner["caption"]
        assert _combos(orig) == _combos(partner)
        ev, pev = events_of(orig), events_of(partner)
        fa, fb = (_decode(world.videos_dir / r["video"]).astype(np.float32) for r in (orig, partner))
        if partner["temporal_role"] == "reversed":
            assert len(ev) == 1 and pev == [ev[0].reversed()]
            expected = fa[::-1]
        else:
            assert len(ev) == 2 and pev == ev[::-1]
            cut = orig["events"][0]["frames"][1]
            assert partner["events"][1]["frames"] == [fa.shape[0] - cut, fa.shape[0]]
            expected = np.concatenate([fa[cut:], fa[:cut]])
        # The partner's frames are the original's, reordered (up to H.264 noise)...
        aligned = float(((expected - fb) ** 2).mean())
        assert aligned < 10.0
        # ...so the two clips hold the same multiset of frames (compare per-frame signatures)...
        sig_a = np.sort(fa.reshape(len(fa), -1).mean(1))
        sig_b = np.sort(fb.reshape(len(fb), -1).mean(1))
        assert np.abs(sig_a - sig_b).max() < 1.0
        # ...but in a different order.
        assert float(((fa - fb) ** 2).mean()) > 4 * aligned


def test_heldout_combos_only_in_test(world: WorldSummary) -> None:
    heldout = set(world.heldout_combos)
    assert len(heldout) == 4
    assert len({s for s, _ in heldout}) == len({c for _, c in heldout}) == 4
    train, test = _load(world.train_json), _load(world.test_json)
    for record in train:
        assert not record["heldout_combo"]
        assert not _combos(record) & heldout, record["video"]
    for record in test:
        assert record["heldout_combo"] == bool(_combos(record) & heldout)
    assert any(r["heldout_combo"] for r in test)
    seen = set().union(*(_combos(r) for r in train))
    assert {s for s, _ in heldout} <= {s for s, _ in seen}  # the shapes and colours themselves do occur
    assert {c for _, c in heldout} <= {c for _, c in seen}


def test_bad_arguments(tmp_path: Path, world: WorldSummary) -> None:
    with pytest.raises(ConfigError):
        generate_world(tmp_path / "x", 1, seed=0)
    with pytest.raises(ConfigError):
        generate_world(tmp_path / "x", 10, seed=0, test_fraction=1.0)
    with pytest.raises(ConfigError):
        generate_world(tmp_path / "x", 10, seed=-1)
    with pytest.raises(ConfigError, match="already"):
        generate_world(world.out_dir, 10, seed=0)


def test_overwrite_replaces_previous_world(tmp_path: Path) -> None:
    first = generate_world(tmp_path, 12, seed=1, workers=1)
    assert len(list(first.videos_dir.glob("*.mp4"))) == 12
    second = generate_world(tmp_path, 6, seed=2, test_fraction=0.34, workers=1, overwrite=True)
    assert len(list(second.videos_dir.glob("*.mp4"))) == second.num_videos == 6
    assert second.num_test == 2 and second.num_temporal_groups == 1


def test_plain_captions_one_fixed_wording(tmp_path: Path) -> None:
    """The demo's world: one caption per clip, the first wording of every part, parsed back to the clip's events;
    a reversed partner's caption is the opposite event's."""
    world = generate_world(tmp_path / "w", num_videos=20, seed=3, two_event_fraction=0.0, distractor_fraction=0.0,
                           plain_captions=True)
    train, test = _load(world.train_json), _load(world.test_json)
    assert all(len(r["caption"]) == 1 for r in train)
    for r in train + test:
        text = r["caption"][0] if isinstance(r["caption"], list) else r["caption"]
        assert text == make_caption(events_of(r))  # the default style: "a red circle moves left"
        assert parse_caption(text) == events_of(r)
    groups = defaultdict(list)
    for r in test:
        if r["temporal_group"]:
            groups[r["temporal_group"]].append(r["caption"])
    assert groups and all(len(set(c)) == 2 for c in groups.values())
    assert _load(world.world_json)["options"]["plain_captions"] is True
