"""The FastAPI app of ``vtr serve``: a read-only JSON API over one library and the page that uses it.

Every endpoint is a GET that reads: none changes the index. Files are served by catalog id only. Errors are
JSON ``{"detail": ...}`` with a status code, never a traceback. OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import time
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import vtr
from vtr.errors import VideoDecodeError, VtrError
from vtr.serve.backend import Backend, FileChangedError, NotFoundError, NotReadyError, check_unchanged
from vtr.serve.security import COOKIE, token_ok
from vtr.serve.thumbnails import ThumbnailCache, thumbnail_key

log = logging.getLogger(__name__)

MAX_K = 100
MAX_QUERY_CHARS = 500
MAX_NPROBE = 65536
MAX_BODY_BYTES = 16 * 1024  # every endpoint is a GET: a request with a larger body is refused
OPEN_PATHS = ("/login",)  # reachable without the token (it is where the token is given)
# The page loads only its own script, style, thumbnails and videos (no inline code, no other origin).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")

Id = Annotated[int, "catalog id"]


def _static_dir():
    return resources.files("vtr.serve") / "static"


def _host_name(header: str) -> str:
    """The name part of a Host header (``[::1]:8765`` -> ``[::1]``, ``localhost:8765`` -> ``localhost``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def create_app(backend: Backend, *, token: str | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app over ``backend``; with ``token``, every request but ``/login`` must carry it; with
    ``allowed_hosts`` (no ``"*"``), requests naming another Host are refused (DNS rebinding)."""
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        backend.library.close()  # release the read-only store when the server stops

    app = FastAPI(title="vtr", lifespan=lifespan, version=vtr.__version__, summary="Search your videos with language.",
                  description="Read-only API of `vtr serve`: text search, more-like-this, status, video metadata, "
                  "thumbnails and the videos themselves (HTTP range requests). With `--token`, send "
                  "`Authorization: Bearer TOKEN` or open `/login?token=TOKEN` once.")
    thumbs = ThumbnailCache(backend.home)
    hosts = None if allowed_hosts is None or "*" in allowed_hosts else {h.lower() for h in allowed_hosts}
    static = _static_dir()

    # ------------------------------------------------------------------ errors: JSON with a status code

    def error(status: int, detail: Any) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(NotReadyError)
    async def _not_ready(_: Request, e: NotReadyError) -> JSONResponse:
        return error(503, str(e))

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, e: NotFoundError) -> JSONResponse:
        return error(404, str(e))

    @app.exception_handler(FileChangedError)
    async def _changed(_: Request, e: FileChangedError) -> JSONResponse:
        return error(409, str(e))

    @app.exception_handler(VideoDecodeError)
    async def _undecodable(_: Request, e: VideoDecodeError) -> JSONResponse:
        return error(422, str(e))

    @app.exception_handler(VtrError)
    async def _vtr_error(_: Request, e: VtrError) -> JSONResponse:
        return error(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        problems = [{"loc": list(p.get("loc", ())), "msg": p.get("msg", "")} for p in e.errors()]
        message = "; ".join(f"{'.'.join(str(x) for x in p['loc'][1:]) or 'request'}: {p['msg']}" for p in problems)
        return JSONResponse({"detail": message, "errors": problems}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": e.detail}, status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("error answering %s %s", request.method, request.url.path)
        return error(500, f"internal error ({type(e).__name__}); see the server log")

    # ------------------------------------------------------------------ guards: token, sizes, methods

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if hosts is not None and _host_name(request.headers.get("host", "")) not in hosts:
            return error(400, "unexpected Host header (this server answers to its loopback names only)")
        if request.method not in ("GET", "HEAD"):
            return error(405, "this server is read-only: GET only")
        size = request.headers.get("content-length")
        if (size and (not size.isdigit() or int(size) > MAX_BODY_BYTES)) or "transfer-encoding" in request.headers:
            return error(413, f"request body too large (at most {MAX_BODY_BYTES} bytes; endpoints take none)")
        if token and request.url.path not in OPEN_PATHS and not token_ok(
                token, request.headers.get("authorization"), request.cookies.get(COOKIE)):
            return JSONResponse({"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN' or open "
                                           "/login?token=TOKEN"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    # ------------------------------------------------------------------ the page

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"),
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                     "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                                     "Content-Security-Policy": PAGE_CSP})

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/login", include_in_schema=False)
    def login(token_: Annotated[str, Query(alias="token", max_length=512)]) -> Response:
        if not token or not token_ok(token, None, token_):
            return error(401, "wrong token")
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, token_, httponly=True, samesite="strict")
        return resp

    # ------------------------------------------------------------------ the API

    @app.get("/api/search", summary="Text search: the k best segments for a query")
    def search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        rerank: Annotated[bool, Query(description="Re-score the candidates with the ITM head (slower)")] = False,
        nprobe: Annotated[int | None, Query(ge=1, le=MAX_NPROBE, description="IVF lists searched")] = None,
    ) -> dict[str, Any]:
        if not q.strip():
            raise RequestValidationError([{"loc": ("query", "q"), "msg": "the query is blank"}])
        t0 = time.perf_counter()
        results = backend.search(q, k, rerank, nprobe)
        return {"query": q, "k": k, "results": results, "took_ms": round(1000 * (time.perf_counter() - t0), 2)}

    @app.get("/api/similar", summary="More like this: segments like an indexed video or segment")
    def similar(
        video_id: Annotated[int | None, Query(ge=0)] = None,
        segment_id: Annotated[int | None, Query(ge=0)] = None,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> dict[str, Any]:
        if (video_id is None) == (segment_id is None):
            raise RequestValidationError([{"loc": ("query", "video_id"),
                                           "msg": "give exactly one of video_id and segment_id"}])
        t0 = time.perf_counter()
        if segment_id is not None:
            results, query = backend.similar_to_segment(segment_id, k), {"segment_id": segment_id}
        else:
            results, query = backend.similar_to_video(video_id, k), {"video_id": video_id}
        return {"query": query, "k": k, "results": results, "took_ms": round(1000 * (time.perf_counter() - t0), 2)}

    @app.get("/api/status", summary="Index status: videos, segments, failures with reasons, generation")
    def status() -> dict[str, Any]:
        return backend.status()

    @app.get("/api/videos/{video_id}", summary="A video's metadata and segments")
    def video(video_id: Id) -> dict[str, Any]:
        row, segments = backend.video(video_id)
        return {"id": row.id, "path": row.display, "name": row.display.rsplit("/", 1)[-1], "size": row.size,
                "duration": row.duration, "fps": row.fps, "width": row.width, "height": row.height,
                "status": row.status, "error": row.error, "content_hash": row.content_hash,
                "video_url": f"/api/videos/{row.id}/file",
                "segments": [{"id": s.id, "start_s": s.start_s, "end_s": s.end_s,
                              "thumbnail_url": f"/api/segments/{s.id}/thumbnail.jpg"} for s in segments]}

    @app.get("/api/videos/{video_id}/file", summary="The video file (HTTP range requests supported)",
             response_class=FileResponse)
    def video_file(video_id: Id) -> FileResponse:
        row = backend.video_file(video_id)
        media = mimetypes.guess_type(row.display)[0] or "application/octet-stream"
        return FileResponse(row.path, media_type=media, headers={"Cache-Control": "private, max-age=3600",
                                                                 "X-Content-Type-Options": "nosniff"})

    @app.get("/api/segments/{segment_id}", summary="A segment: its time span and video")
    def segment(segment_id: Id) -> dict[str, Any]:
        s = backend.segment(segment_id)
        return {"id": s.id, "start_s": s.start_s, "end_s": s.end_s, "video_id": s.video.id, "path": s.video.display,
                "thumbnail_url": f"/api/segments/{s.id}/thumbnail.jpg", "video_url": f"/api/videos/{s.video.id}/file"}

    @app.get("/api/segments/{segment_id}/thumbnail.jpg", summary="A JPEG of the segment's middle frame",
             response_class=FileResponse)
    def thumbnail(segment_id: Id) -> FileResponse:
        s = backend.segment(segment_id)
        v = s.video
        key = thumbnail_key(v.content_hash, v.path, v.size, v.mtime_ns)
        cached = thumbs.path_for(key, (s.start_s + s.end_s) / 2)
        if not cached.exists():
            check_unchanged(v)  # decode only the file the catalog indexed
        path = thumbs.get(v.path, key, s.start_s, s.end_s)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    return app
