"""`vtr serve --db postgresql+psycopg://...`: the server searches, reports status and finds files through a
PostgreSQL catalog as it does through SQLite (FastAPI's test client), and through an on-disk index without
loading the in-memory FAISS index."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import small_library  # noqa: E402

from vtr.index.store import LibraryStore  # noqa: E402
from vtr.library import Library  # noqa: E402
from vtr.serve.server import build_app  # noqa: E402

QUERY = "a red circle moves left"


@pytest.mark.postgres
def test_serve_on_a_postgresql_catalog(tmp_path, pg_url, monkeypatch):
    home, paths, _ = small_library(tmp_path, num_videos=6, db_url=pg_url)
    assert not (home / "catalog.db").exists()  # the catalog is the database
    with Library(home=home, device="cpu", db_url=pg_url) as reference:
        want = [h.to_dict() for h in reference.search(QUERY, k=4)[0]]
    with TestClient(build_app(home, device="cpu", db_url=pg_url), base_url="http://127.0.0.1") as client:
        st = client.get("/api/status").json()
        assert st["ready"] and st["videos"]["indexed"] == len(paths) and st["searched_by"] == "faiss"
        got = client.get("/api/search", params={"q": QUERY, "k": 4}).json()["results"]
        assert [(g["path"], g["vector_id"], g["start_s"]) for g in got] == [
            (w["path"], w["vector_id"], w["start_s"]) for w in want]
        assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-5)
        video = client.get(f"/api/videos/{got[0]['video_id']}/file")
        assert video.status_code == 200 and video.content == open(got[0]["path"], "rb").read()
        similar = client.get("/api/similar", params={"segment_id": got[0]["segment_id"], "k": 3}).json()["results"]
        assert len(similar) == 3 and got[0]["vector_id"] not in {h["vector_id"] for h in similar}

    # an on-disk build: a new server answers from it and never loads the in-memory FAISS index
    Library(home=home, db_url=pg_url).build_ondisk("IVF2,Flat")
    loads = []
    real = LibraryStore.check
    monkeypatch.setattr(LibraryStore, "check", lambda self: loads.append(self.read_only) or real(self))
    with TestClient(build_app(home, device="cpu", db_url=pg_url), base_url="http://127.0.0.1") as client:
        st = client.get("/api/status").json()
        assert st["searched_by"] == "ondisk" and st["faiss_vectors"] is None and st["ondisk"]["current"]
        got = client.get("/api/search", params={"q": QUERY, "k": 4, "nprobe": 2}).json()["results"]
        assert [g["vector_id"] for g in got] == [w["vector_id"] for w in want]  # nprobe = nlist: exact
    assert loads == []
