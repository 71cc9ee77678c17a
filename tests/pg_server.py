"""A throw-away PostgreSQL server for the catalog and store tests (Debian's ``postgresql`` package, no service).

``pg_server`` (session): ``initdb`` + ``pg_ctl start`` on a temp dir, listening on 127.0.0.1 on a free port
(as the ``postgres`` user when the tests run as root: initdb refuses root), stopped at the end of the session.
``pg_url`` (per test): a fresh database on it, as a ``postgresql+psycopg://`` URL, dropped afterwards.

Without the server binaries or psycopg the PostgreSQL cases skip, unless ``VTR_REQUIRE_POSTGRES=1`` (CI sets
it after installing both) makes that a failure.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["pg_server", "pg_url"]


def _pg_bindir() -> Path | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _unavailable(why: str) -> None:
    if os.environ.get("VTR_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL tests required but {why}")
    pytest.skip(f"no PostgreSQL for the tests: {why} (apt-get install postgresql; pip install 'psycopg[binary]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One ``postgres`` process on a temp data dir."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="vtr-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "postgres" if os.geteuid() == 0 else None  # initdb and postgres refuse to run as root
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "vtr", "-E", "UTF8", "--locale=C", "-N")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "-t", "60", "start")
        self._names = itertools.count()

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run([str(self.bindir / tool), *args], user=self.user, capture_output=True, text=True,
                             cwd=self.root)
        if out.returncode:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr[-2000:]}{log[-2000:]}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://vtr@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=vtr dbname=postgres", autocommit=True) as c:
            c.execute(sql)

    def create_database(self) -> str:
        name = f"vtr_test_{os.getpid()}_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed")
    bindir = _pg_bindir()
    if bindir is None:
        _unavailable("initdb/pg_ctl are not installed")
    server = PgServer(bindir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)
