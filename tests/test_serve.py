"""`vtr serve`'s JSON API through FastAPI's test client: search, more-like-this, status, thumbnails, range
requests, ids that do not exist, the token, traversal attempts, bad parameters, read-only-ness."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import small_library  # noqa: E402

from vtr.data.decode import probe_video, read_frames  # noqa: E402
from vtr.errors import ConfigError  # noqa: E402
from vtr.index.store import LibraryStore  # noqa: E402
from vtr.library import Library  # noqa: E402
from vtr.serve import serve_hint  # noqa: E402
from vtr.serve.server import build_app  # noqa: E402

LOCAL = "http://127.0.0.1"
QUERY = "a red circle moves left"


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """A home with 12 of 16 clips indexed (the test of new generations indexes the rest)."""
    return small_library(tmp_path_factory.mktemp("serve"), num_videos=16, indexed=12)


@pytest.fixture(scope="module")
def client(lib):
    home, _, _ = lib
    with TestClient(build_app(home, device="cpu"), base_url=LOCAL) as c:
        yield c


def _first_hit(client):
    return client.get("/api/search", params={"q": QUERY, "k": 3}).json()["results"][0]


def test_search_returns_the_library_records_with_ids(client, lib):
    home, _, _ = lib
    r = client.get("/api/search", params={"q": QUERY, "k": 5})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    with Library(home=home, device="cpu") as reference:
        want = [h.to_dict() for h in reference.search(QUERY, k=5)[0]]  # what `vtr search --json` prints
    assert len(got) == 5
    for g, w in zip(got, want, strict=True):
        for key in ("rank", "path", "start_s", "end_s", "vector_id", "model", "generation"):
            assert g[key] == w[key], key
        assert g["score"] == pytest.approx(w["score"], abs=1e-5)
        assert g["name"] == os.path.basename(w["path"])
    with LibraryStore.open(home, read_only=True) as store, store.catalog.read() as s:
        import sqlalchemy as sa

        from vtr.index.catalog import Segment, Video
        for g in got:
            seg = s.scalar(sa.select(Segment).where(Segment.id == g["segment_id"]))
            video = s.scalar(sa.select(Video).where(Video.id == g["video_id"]))
            assert seg.vector_id == g["vector_id"] and seg.video_id == video.id and video.path == g["path"]
            assert g["thumbnail_url"] == f"/api/segments/{seg.id}/thumbnail.jpg"
            assert g["video_url"] == f"/api/videos/{video.id}/file"


def test_more_like_this_ranks_by_the_stored_features(client, lib):
    home, _, _ = lib
    hit = _first_hit(client)
    r = client.get("/api/similar", params={"segment_id": hit["segment_id"], "k": 5})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    with LibraryStore.open(home, read_only=True) as store, store.catalog.read() as s:
        import sqlalchemy as sa

        from vtr.index.catalog import Segment
        ids = [int(i) for i in s.scalars(sa.select(Segment.vector_id))]
        vectors = store.get_embeddings(ids)
    dim = store.dim - 64
    q = vectors[ids.index(hit["vector_id"]), :dim]
    scores = vectors[:, :dim] @ (q / np.linalg.norm(q))
    order = [ids[i] for i in np.argsort(-scores) if ids[i] != hit["vector_id"]][:5]
    assert [g["vector_id"] for g in got] == order  # the query segment itself is left out
    assert [g["rank"] for g in got] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([g["score"] for g in got], np.sort(scores)[::-1][1:6], atol=1e-4)
    by_video = client.get("/api/similar", params={"video_id": hit["video_id"], "k": 5}).json()["results"]
    assert len(by_video) == 5 and all(g["video_id"] != hit["video_id"] for g in by_video)


def test_status_video_metadata_and_segments(client, lib):
    _, paths, _ = lib
    st = client.get("/api/status").json()
    assert st["ready"] and st["videos"]["indexed"] == 12 and st["segments"] >= 12 and st["failures"] == []
    assert st["generation"] >= 1 and st["message"] is None
    hit = _first_hit(client)
    meta = client.get(f"/api/videos/{hit['video_id']}").json()
    info = probe_video(hit["path"])
    assert meta["path"] == hit["path"] and meta["size"] == os.path.getsize(hit["path"])
    assert (meta["width"], meta["height"]) == (info.width, info.height)
    assert meta["duration"] == pytest.approx(info.duration, abs=1e-3)
    assert hit["segment_id"] in [s["id"] for s in meta["segments"]]
    seg = client.get(f"/api/segments/{hit['segment_id']}").json()
    assert (seg["start_s"], seg["end_s"], seg["video_id"]) == (hit["start_s"], hit["end_s"], hit["video_id"])


def test_thumbnail_is_the_middle_frame_and_is_cached(client, lib):
    from PIL import Image

    home, _, _ = lib
    hit = _first_hit(client)
    r = client.get(hit["thumbnail_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(np.float32)
    frame = read_frames(hit["path"], 1, "middle", window=(hit["start_s"], hit["end_s"])).frames[0]
    assert img.shape == frame.shape  # small clips keep their size (only wider than 320 px are scaled)
    assert np.abs(img - frame).mean() < 6  # JPEG of that very frame
    cached = list((home / "thumbnails").rglob("*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == r.content
    before = cached[0].stat().st_mtime_ns
    assert client.get(hit["thumbnail_url"]).content == r.content and cached[0].stat().st_mtime_ns == before


def test_video_range_requests(client):
    hit = _first_hit(client)
    data = open(hit["path"], "rb").read()
    full = client.get(hit["video_url"])
    assert full.status_code == 200 and full.content == data and full.headers["content-type"] == "video/mp4"
    assert full.headers.get("accept-ranges") == "bytes"
    part = client.get(hit["video_url"], headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    tail = client.get(hit["video_url"], headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == data[-50:]
    assert client.get(hit["video_url"], headers={"Range": f"bytes={len(data) + 10}-"}).status_code == 416


def test_unknown_ids_are_404(client):
    for url in ("/api/videos/987654", "/api/videos/987654/file", "/api/segments/987654",
                "/api/segments/987654/thumbnail.jpg", "/api/similar?segment_id=987654",
                "/api/similar?video_id=987654", "/api/nothing-here"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert isinstance(r.json()["detail"], str)


def test_traversal_attempts_are_refused(client):
    secret = "/etc/passwd"
    for url in ("/api/videos/..%2f..%2f..%2fetc%2fpasswd/file", "/api/videos/%2fetc%2fpasswd/file",
                "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
                "/static/%2e%2e/%2e%2e/server.py", "/static/..%2fserver.py", "/api/videos/1/file?path=/etc/passwd",
                f"/api/segments/0/thumbnail.jpg/..%2f..%2f{secret}"):
        r = client.get(url)
        if url.endswith("?path=/etc/passwd"):
            assert r.status_code in (200, 404) and b"root:" not in r.content  # the query is ignored: id 1's file
            continue
        assert r.status_code in (400, 404, 422), (url, r.status_code)
        assert b"root:" not in r.content and b"import" not in r.content
    assert client.get("/static/app.js").status_code == 200  # the real static files are there


def test_bad_parameters_are_422_with_a_message(client):
    for params in ({"q": QUERY, "k": 0}, {"q": QUERY, "k": 101}, {"q": ""}, {"q": "   "}, {"q": "x" * 501},
                   {"q": QUERY, "nprobe": 0}, {"q": QUERY, "k": "many"}, {}):
        r = client.get("/api/search", params=params)
        assert r.status_code == 422, params
        assert isinstance(r.json()["detail"], str) and r.json()["detail"], params
    for params in ({}, {"video_id": 1, "segment_id": 1}, {"segment_id": -3}):
        r = client.get("/api/similar", params=params)
        assert r.status_code == 422 and r.json()["detail"], params
    assert client.get("/api/videos/abc").status_code == 422


def test_nothing_changes_the_index(client):
    for method in ("post", "put", "delete", "patch"):
        r = getattr(client, method)("/api/search?q=x")
        assert r.status_code == 405 and "read-only" in r.json()["detail"]
    r = client.request("GET", "/api/status", content=b"x" * 20000)
    assert r.status_code == 413


def test_errors_are_json_never_tracebacks(lib, monkeypatch):
    home, _, _ = lib
    app = build_app(home, device="cpu", warm=False)
    from vtr.serve.backend import Backend

    def boom(*a, **kw):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Backend, "search", boom)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c:
        r = c.get("/api/search", params={"q": QUERY})
    assert r.status_code == 500 and r.json()["detail"].startswith("internal error")
    assert "secret internals" not in r.text and "Traceback" not in r.text


def test_concurrent_searches_are_batched_and_each_gets_its_own_answer(lib):
    from vtr.serve.backend import Backend

    home, _, _ = lib
    queries = [(f"a {c} {s} moves left", k) for c in ("red", "blue", "green") for s, k in (("circle", 3), ("star", 7))]
    with Library(home=home, device="cpu") as library:
        want = {q: [h.to_dict() for h in library.search(q, k=k)[0]] for q, k in queries}
        backend = Backend(library, home, "default")
        calls = []
        real = library.search

        def slow_search(texts, **kw):  # the first batch waits until every other request has queued behind it
            calls.append(len(texts))
            deadline = time.monotonic() + 30
            while len(calls) == 1 and len(backend._queue) < len(queries) - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            return real(texts, **kw)

        library.search = slow_search
        got: dict[str, list] = {}
        threads = [threading.Thread(target=lambda q=q, k=k: got.__setitem__(q, backend.search(q, k, False, None)))
                   for q, k in queries]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sum(calls) == len(queries) and len(calls) < len(queries)  # fewer encoder calls than requests
    for q, k in queries:
        assert len(got[q]) == k
        for g, w in zip(got[q], want[q], strict=True):
            assert (g["vector_id"], g["rank"]) == (w["vector_id"], w["rank"])
            assert g["score"] == pytest.approx(w["score"], abs=1e-5)


def test_token_is_required_off_loopback(lib):
    home, _, _ = lib
    with pytest.raises(ConfigError, match="--token"):
        build_app(home, host="0.0.0.0", device="cpu", warm=False)
    app = build_app(home, host="0.0.0.0", token="s3cret", device="cpu", warm=False)
    with TestClient(app, base_url="http://192.0.2.1") as c:
        for url in ("/", "/api/status", "/api/search?q=circle", "/static/app.js", "/docs", "/openapi.json"):
            assert c.get(url).status_code == 401, url
        assert c.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/login", params={"token": "nope"}, follow_redirects=False).status_code == 401
        r = c.get("/login", params={"token": "s3cret"}, follow_redirects=False)
        assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/status").status_code == 200  # the cookie now
        assert c.get("/").status_code == 200


def test_loopback_server_refuses_foreign_host_headers(client):
    assert client.get("/api/status", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding


def test_page_docs_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "/static/app.js" in page.text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/similar", "/api/status", "/api/videos/{video_id}/file"} <= set(paths)
    assert all(set(ops) == {"get"} for ops in paths.values())


def test_new_generations_are_seen_and_empty_home_says_what_to_run(client, lib, tmp_path):
    home, paths, model_dir = lib
    before = client.get("/api/status").json()
    Library(home=home, model=str(model_dir), device="cpu").index(paths, workers=0, progress=False)  # a writer
    after = client.get("/api/status").json()
    assert after["videos"]["indexed"] == 16 and after["generation"] > before["generation"]
    found = {h["path"] for h in client.get("/api/search", params={"q": QUERY, "k": 100}).json()["results"]}
    assert {str(p) for p in paths} <= found
    with TestClient(build_app(tmp_path / "empty", device="cpu"), base_url=LOCAL) as c:
        st = c.get("/api/status").json()
        assert st["ready"] is False and "vtr index" in st["hint"] and "vtr index" in st["message"]
        r = c.get("/api/search", params={"q": QUERY})
        assert r.status_code == 503 and "vtr index" in r.json()["detail"]


def test_serve_hint_and_cli_refuses_an_open_bind_without_token(tmp_path):
    hint = serve_hint(tmp_path / "my home", "demo")
    assert hint == f"vtr serve --home '{tmp_path / 'my home'}' --index demo"
    assert serve_hint(None) == "vtr serve"
    from typer.testing import CliRunner

    from vtr.cli.app import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--home", str(tmp_path)], env={"VTR_TOKEN": ""})
    assert isinstance(result.exception, ConfigError) and "--token" in str(result.exception)  # main(): exit 2
