"""``vtr serve``: a JSON API and a web page to search one library, see the hits and play them.

FastAPI + uvicorn (the ``vtr[serve]`` extra). This module imports neither, so :func:`serve_hint` works without
the extra; :func:`vtr.serve.server.run_server` starts the server and :func:`vtr.serve.app.create_app` builds it.
"""

from __future__ import annotations

import os
import shlex

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "serve_hint"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def serve_hint(home: str | os.PathLike | None, index: str = "default") -> str:
    """The ``vtr serve`` command line (shell-quoted) that serves ``index`` of the data home ``home`` on
    ``http://127.0.0.1:8765/`` (e.g. ``vtr serve --home /data/vtr --index demo``)."""
    parts = ["vtr", "serve"]
    if home is not None:
        parts += ["--home", os.fspath(home)]
    if index != "default":
        parts += ["--index", index]
    return shlex.join(parts)
