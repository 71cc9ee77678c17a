"""`vtr index repair`, `status` and `search` on a SQLite catalog and on a PostgreSQL one (`--db`): the same --json
document; the FAISS file and the on-disk build re-checked and rebuilt from the catalog; only changed files
re-embedded; missing files counted; an unreachable database server is one line naming the fix."""

from __future__ import annotations

import json
import shutil
import socket

import jsonschema
import pytest
from conftest import tiny_model_dir

from vtr.cli.app import app
from vtr.cli.errors import run_cli
from vtr.data.synth import generate_world
from vtr.errors import CatalogUnreachableError
from vtr.library import Library
from vtr.schema import JSON_SCHEMA

VALIDATOR = jsonschema.Draft202012Validator(JSON_SCHEMA)
CPU = ["--device", "cpu", "--workers", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model and a small vtr-shapes world (indexed by each test into its own catalog)."""
    root = tmp_path_factory.mktemp("repair_db")
    world = generate_world(root / "world", num_videos=6, seed=5)
    return world, tiny_model_dir(root / "model")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request) -> list[str]:
    """The `--db URL` arguments of the catalog under test (none: SQLite in the home)."""
    return ["--db", request.getfixturevalue("pg_url")] if request.param == "postgresql" else []


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_cli(app, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_json(capsys, *args: str) -> dict:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    doc = json.loads(out)
    VALIDATOR.validate(doc)
    return doc


def test_repair_rechecks_faiss_and_reindexes_only_changes(world, db, tmp_path, capsys):
    world, model_dir = world
    videos = tmp_path / "videos"
    shutil.copytree(world.videos_dir, videos)
    files = sorted(videos.glob("*.mp4"))
    home = ["--home", str(tmp_path / "home")]
    first = cli_json(capsys, "index", str(videos), "--model", str(model_dir), *CPU, *home, *db)
    assert first["indexed"] == len(files)
    # the ondisk-only index of the same videos, and its on-disk build
    cli_json(capsys, "index", str(videos), "--index", "big", "--factory", "ondisk:IVF2,Flat", "--model",
             str(model_dir), *CPU, *home, *db)
    built = cli_json(capsys, "index", "ondisk", "--index", "big", *home, *db)
    assert (built["factory"], built["ntotal"]) == ("IVF2,Flat", len(files))
    indexes = tmp_path / "home" / "indexes"
    assert not (indexes / "big.faiss").exists()

    # damage: the FAISS file overwritten, the on-disk build's quantiser truncated, one file changed, one gone
    (indexes / "default.faiss").write_bytes(b"\0" * 64)
    populated = indexes / "big.ondisk" / "populated.index"
    populated.write_bytes(populated.read_bytes()[:100])
    shutil.copyfile(files[1], files[0])
    files[-1].unlink()

    report = cli_json(capsys, "index", "repair", *CPU, *home, *db)
    assert report["command"] == "index repair" and report["healthy"] is True
    assert report["restored_from"] is None and report["rebuilt"] is False
    if db:  # the database, named without a password; nothing restored there
        assert report["catalog"].startswith("postgresql+psycopg://vtr@127.0.0.1:")
    else:
        assert report["catalog"] == str((tmp_path / "home" / "catalog.db").resolve())
    by_name = {r["name"]: r for r in report["indexes"]}
    default, big = by_name["default"], by_name["big"]
    assert default["faiss"].startswith("rebuilt:") and default["ondisk"] == ""
    assert big["faiss"].startswith("none") and big["ondisk"].startswith("rebuilt:")
    assert "cannot be read" in big["ondisk"]
    for r in (default, big):  # only the changed file re-embedded, the deleted one counted
        assert (r["indexed"], r["unchanged"], r["failed"], r["missing"], r["error"]) == (1, len(files) - 2, 0, 1, "")
    assert not (indexes / "big.faiss").exists()

    # status, search (the FAISS file, and the rebuilt on-disk index) on the same catalog
    status = cli_json(capsys, "index", "status", *home, *db)
    assert status["vectors"] == status["faiss_vectors"] == len(files)  # the gone file stays until --prune
    big_status = cli_json(capsys, "index", "status", "--index", "big", *home, *db)
    assert big_status["searched_by"] == "ondisk" and big_status["faiss_ram_bytes"] == 0
    assert big_status["ondisk"]["current"] is True and big_status["ondisk"]["ntotal"] == big_status["vectors"]
    url = db[1] if db else None
    for index in ("default", "big"):
        with Library(home=tmp_path / "home", index=index, db_url=url, device="cpu", nprobe=2) as lib:
            twins = lib.search_video(files[0], k=2)  # re-embedded: the twin of the file it was copied from
        assert {t.path for t in twins} == {str(files[0]), str(files[1])}
        assert twins[0].score == pytest.approx(twins[1].score, abs=1e-5)
    hits = cli_json(capsys, "search", "a red circle", "-k", "3", "--index", "big", "--nprobe", "2", *home, *db)
    assert len(hits["queries"][0]["results"]) == 3


def test_unreachable_database_is_one_line_with_the_fix(tmp_path, capsys):
    pytest.importorskip("psycopg")
    (tmp_path / "home").mkdir()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://vtr:secret@127.0.0.1:{port}/vtr"
    for args in (["index", "repair"], ["index", "status"], ["search", "a dog"]):
        code, out, err = cli(capsys, *args, "--db", url, "--home", str(tmp_path / "home"))
        assert code == CatalogUnreachableError.exit_code, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "cannot reach the catalog database" in err and "start the database server or fix --db" in err
        assert f"127.0.0.1:{port}/vtr" in err and "secret" not in err and out == ""
