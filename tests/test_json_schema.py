"""One versioned --json schema (vtr.schema.JSON_SCHEMA) for search (one query, several, rerank, video), index,
index status, list and remove; failures in one shape everywhere. Runs the CLI in-process (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vtr.cli.app import app
from vtr.data.video_writer import write_video
from vtr.model.registry import save_model_dir
from vtr.model.retrieval import build_model, config_for
from vtr.schema import JSON_SCHEMA, SCHEMA_VERSION

VALIDATOR = jsonschema.Draft202012Validator(JSON_SCHEMA)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    torch.manual_seed(0)
    model = build_model(config_for("videomamba_t16_minilm", img_size=32, num_frames=2, vision={"depth": 1}))
    model_dir = save_model_dir(model, root / "model")
    videos = root / "videos"
    videos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        write_video(videos / f"clip{i}.mp4", rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    (videos / "broken.mp4").write_text("not a video")
    return root, model_dir, videos


def vtr_json(*args: str, home: Path) -> dict:
    """Run `vtr ARGS --json --home HOME` in-process; the stdout must be one JSON document that fits the schema."""
    result = CliRunner().invoke(app, [*args, "--json", "--home", str(home)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    VALIDATOR.validate(doc)
    assert doc["schema_version"] == SCHEMA_VERSION
    return doc


def same_query(a: dict, b: dict) -> bool:
    """Same query, same hits; scores to float32 rounding (a batch of queries is encoded together)."""
    def strip(q: dict) -> list:
        return [{k: v for k, v in h.items() if k != "score"} for h in q["results"]]

    scores = [(x["score"], y["score"]) for x, y in zip(a["results"], b["results"], strict=True)]
    return (a["query"], a["query_kind"], strip(a)) == (b["query"], b["query_kind"], strip(b)) and all(
        abs(x - y) < 1e-5 for x, y in scores)


def test_schema_itself_is_valid():
    jsonschema.Draft202012Validator.check_schema(JSON_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):  # the old bare list of hits is not a document
        VALIDATOR.validate([{"rank": 1, "score": 0.5, "path": "a.mp4"}])
    with pytest.raises(jsonschema.ValidationError):  # a hit must say what its score is
        VALIDATOR.validate({"schema_version": SCHEMA_VERSION, "command": "search", "index": "default",
                            "queries": [{"query": "q", "query_kind": "text", "results": [
                                {"rank": 1, "score": 0.5, "path": "a.mp4", "start_s": 0, "end_s": 1,
                                 "dual_score": None}]}]})


def test_every_command_speaks_the_schema(env, tmp_path):
    root, model_dir, videos = env
    home = tmp_path / "home"
    first = vtr_json("index", str(videos), "--model", str(model_dir), "--workers", "0", home=home)
    assert (first["command"], first["indexed"], first["failed"], first["failed_before"]) == ("index", 5, 1, 0)
    [fail] = first["failures"]
    assert Path(fail["path"]).name == "broken.mp4" and fail["reason"] == "no_video_stream" and fail["message"]
    again = vtr_json("index", str(videos), "--workers", "0", home=home)
    assert (again["indexed"], again["unchanged"], again["failed"], again["failed_before"]) == (0, 5, 1, 1)
    assert again["failures"][0]["path"] == fail["path"] and again["failures"][0]["reason"] == fail["reason"]

    status = vtr_json("index", "status", home=home)
    assert status["command"] == "index status" and status["failed"] == 1
    assert status["failures"][0].keys() == fail.keys() and status["failures"][0]["path"] == fail["path"]

    one = vtr_json("search", "a red circle", "-k", "3", home=home)
    assert [q["query"] for q in one["queries"]] == ["a red circle"]
    assert len(one["queries"][0]["results"]) == 3
    assert {h["score_kind"] for h in one["queries"][0]["results"]} == {"cosine"}
    assert all(h["dual_score"] is None for h in one["queries"][0]["results"])

    single = tmp_path / "one.txt"
    single.write_text("a red circle\n")
    assert vtr_json("search", "--from-file", str(single), "-k", "3", home=home) == one  # same shape, same answer
    several = tmp_path / "two.txt"
    several.write_text("a red circle\n# a comment\na blue square grows\n")
    two = vtr_json("search", "--from-file", str(several), "-k", "3", home=home)
    assert [q["query"] for q in two["queries"]] == ["a red circle", "a blue square grows"]
    assert same_query(two["queries"][0], one["queries"][0])  # batched with another query: same answer

    reranked = vtr_json("search", "a red circle", "-k", "2", "--rerank", home=home)
    hits = reranked["queries"][0]["results"]
    assert {h["score_kind"] for h in hits} == {"itm_logit"} and all(h["dual_score"] is not None for h in hits)
    assert [h["rank"] for h in hits] == [1, 2]

    like = vtr_json("search", "--video", str(videos / "clip2.mp4"), "-k", "1", home=home)
    assert like["queries"][0]["query_kind"] == "video"
    assert like["queries"][0]["results"][0]["path"] == str(videos / "clip2.mp4")

    listed = vtr_json("index", "list", home=home)
    assert [i["name"] for i in listed["indexes"]] == ["default"]
    assert vtr_json("index", "remove", home=home)["removed"] == "default"
    assert vtr_json("index", "list", home=home)["indexes"] == []
