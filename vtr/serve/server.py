"""Start ``vtr serve``: check the bind, open the library once, warm the model, run uvicorn."""

from __future__ import annotations

import logging
import os
import sys

from vtr.errors import ConfigError
from vtr.serve import DEFAULT_HOST, DEFAULT_PORT
from vtr.serve.security import allowed_hosts, check_bind

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # uvicorn answers 503 beyond this many concurrent connections


def build_app(home: str | os.PathLike | None = None, index: str = "default", model: str | None = None,
              host: str = DEFAULT_HOST, token: str | None = None, device: str = "auto", db_url: str | None = None,
              warm: bool = True):
    """The app over ``index`` of ``home`` (the model and the read-only store are loaded once, here or later)."""
    try:
        from vtr.serve.app import create_app
    except ImportError as e:
        raise ConfigError(f"vtr serve needs FastAPI and uvicorn ({e.name} is missing): pip install 'vtr[serve]'") \
            from e
    from vtr.home import data_home
    from vtr.library import Library
    from vtr.serve.backend import Backend

    check_bind(host, token)
    home_path = data_home(home)
    library = Library(home=home_path, index=index, model=model, device=device, db_url=db_url)
    backend = Backend(library, home_path, index)
    if warm:
        warm_up(backend)
    return create_app(backend, token=token, allowed_hosts=allowed_hosts(host, token))


def warm_up(backend) -> None:
    """Open the store and load the model now, so the first search is as fast as the rest (no index: later)."""
    st = backend.status()
    if not st["ready"]:
        print(f"vtr serve: {st['message']}", file=sys.stderr)
        return
    backend.search("warm up", k=1, rerank=False, nprobe=None)  # loads the index's model, runs one search


def run_server(home: str | os.PathLike | None = None, index: str = "default", model: str | None = None,
               host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None, device: str = "auto",
               db_url: str | None = None) -> None:
    """Serve until interrupted (uvicorn, one process; requests run in its thread pool)."""
    try:
        import uvicorn
    except ImportError as e:
        raise ConfigError("vtr serve needs uvicorn: pip install 'vtr[serve]'") from e
    app = build_app(home, index, model, host, token, device, db_url)
    shown = f"[{host}]" if ":" in host else host
    print(f"vtr serve: http://{shown}:{port}/  (API docs at /docs; Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning", limit_concurrency=MAX_CONNECTIONS,
                h11_max_incomplete_event_size=16 * 1024, server_header=False)
