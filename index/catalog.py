"""The catalog: which videos are indexed, their segments and embeddings, and the indexes built over them.

SQLAlchemy 2 ORM over SQLite (``<home>/catalog.db``, WAL mode) by default, or any SQLAlchemy URL; PostgreSQL
(``postgresql+psycopg://...``) is tested as well (readers in REPEATABLE READ: one snapshot per read transaction).

The catalog is the point of truth of vtr's library: every embedding is stored here (``embeddings``), so
the FAISS index of a library is derived data that can always be rebuilt from it. Write transactions are
short and, on SQLite, take the write lock up front (``BEGIN IMMEDIATE``, waiting up to ``busy_timeout``);
read transactions see one committed snapshot from their first statement to their end (WAL readers never
block the writer nor are blocked by it).

Schema versions are applied by a small SQLAlchemy-native migration scheme (:data:`MIGRATIONS`): every
migration is a function of a connection, applied in order in one transaction when the catalog is opened,
and recorded in ``schema_version``. Migrations are frozen: they spell out their own DDL rather than use
the ORM models below (which always describe the current version).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from vtr.errors import CatalogUnreachableError, ConfigError
from vtr.home import data_home
from vtr.index.integrity import (
    guarded,
    home_writable,
    install_error_mapping,
    needs_check,
    quick_check,
    readonly_connect,
)

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.db"
STATUSES: tuple[str, ...] = ("indexed", "failed", "pending")
# Default wait for the write lock (another vtr process writing the same catalog), in seconds.
BUSY_TIMEOUT_S = 30.0
# Seconds to wait for a PostgreSQL server to answer a new connection.
PG_CONNECT_TIMEOUT_S = 10


def utcnow() -> _dt.datetime:
    """Naive UTC now (what the catalog's DateTime columns hold)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


# --------------------------------------------------------------------------- paths


def encode_path(path: str | os.PathLike | bytes) -> tuple[bytes, str]:
    """``(path_bytes, display)`` of a file name: the exact OS bytes and a printable UTF-8 string.

    Non-UTF-8 names survive through the bytes (``os.fsencode`` of the surrogateescape ``str``); the display
    string replaces undecodable bytes with U+FFFD and is only for people to read.
    """
    raw = os.fsencode(os.fspath(path))
    return raw, raw.decode("utf-8", "replace")


def decode_path(raw: bytes) -> str:
    """The ``str`` path (surrogateescape) of stored path bytes: usable with ``open`` / ``os.stat``."""
    return os.fsdecode(bytes(raw))


# --------------------------------------------------------------------------- ORM models (current schema)


class Base(DeclarativeBase):
    pass


class IndexRecord(Base):
    """One named index: the model it was built with, its FAISS factory and the state of its FAISS file.

    ``generation`` counts the catalog transactions that changed this index's vectors; ``faiss_generation``
    and ``faiss_checksum`` say which generation the FAISS file on disk was saved at and its sha256.
    Vector ids are ``next_vector_id`` onwards, starting at ``id << 40`` and never reused (so an id in a
    stale FAISS file can never be confused with a newer vector).
    """

    __tablename__ = "indexes"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True, nullable=False)
    model_name: Mapped[str] = mapped_column(sa.Text, nullable=False)
    weights_sha256: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    embedding_dim: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    factory: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_at: Mapped[_dt.datetime] = mapped_column(sa.DateTime, nullable=False)
    updated_at: Mapped[_dt.datetime] = mapped_column(sa.DateTime, nullable=False)
    vector_count: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    next_vector_id: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    # v2
    faiss_checksum: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    generation: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0, server_default="0")
    faiss_generation: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    # v3: how videos are cut into segments (vtr.segmentation.SegmentPolicy); NULL: not recorded (built before v3).
    # Deferred: a read-only opener may read a v2 catalog (it never migrates), where these columns do not exist.
    segment_s: Mapped[float | None] = mapped_column(sa.Float, nullable=True, deferred=True)
    stride_s: Mapped[float | None] = mapped_column(sa.Float, nullable=True, deferred=True)
    whole_up_to_s: Mapped[float | None] = mapped_column(sa.Float, nullable=True, deferred=True)


class Video(Base):
    """A video file of one index. ``path_bytes`` is the key (exact OS bytes); ``path`` is for display."""

    __tablename__ = "videos"
    __table_args__ = (
        sa.UniqueConstraint("index_id", "path_bytes", name="uq_videos_index_path"),
        sa.CheckConstraint("status IN ('indexed', 'failed', 'pending')", name="ck_videos_status"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    index_id: Mapped[int] = mapped_column(sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False)
    path: Mapped[str] = mapped_column(sa.Text, nullable=False)
    path_bytes: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)
    size: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    mtime_ns: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    content_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    duration: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    fps: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    width: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    updated_at: Mapped[_dt.datetime] = mapped_column(sa.DateTime, nullable=False)

    @property
    def fs_path(self) -> str:
        """The path as a ``str`` the OS accepts (surrogateescape for non-UTF-8 names)."""
        return decode_path(self.path_bytes)


class Segment(Base):
    """A time window ``[start_s, end_s)`` of a video and the id of its vector (in FAISS and ``embeddings``)."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(sa.ForeignKey("videos.id", ondelete="CASCADE"), nullable=False, index=True)
    start_s: Mapped[float] = mapped_column(sa.Float, nullable=False)
    end_s: Mapped[float] = mapped_column(sa.Float, nullable=False)
    vector_id: Mapped[int] = mapped_column(sa.BigInteger, unique=True, nullable=False)


class Embedding(Base):
    """A segment's embedding: ``vector`` is the L2-normalised float32 ``[D]`` as raw bytes.

    ``extra`` (optional) is an ``.npy`` blob with per-frame embeddings (e.g. ``[T, D]`` float32) for
    re-ranking / frame-mean similarity.
    """

    __tablename__ = "embeddings"

    vector_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    index_id: Mapped[int] = mapped_column(sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False, index=True)
    vector: Mapped[bytes] = mapped_column(sa.LargeBinary, nullable=False)
    # v2
    extra: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)


class SchemaVersion(Base):
    """One row per applied migration; the schema version is the largest ``version``."""

    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    applied_at: Mapped[_dt.datetime] = mapped_column(sa.DateTime, nullable=False)


# --------------------------------------------------------------------------- migrations


def _add_column(conn: Connection, table: str, column: sa.Column) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for ``column`` (type, nullability and server default)."""
    ddl = f"ALTER TABLE {table} ADD COLUMN {column.name} {column.type.compile(dialect=conn.dialect)}"
    if column.server_default is not None:
        ddl += f" DEFAULT {column.server_default.arg}"  # type: ignore[attr-defined]
    if not column.nullable:
        ddl += " NOT NULL"
    conn.exec_driver_sql(ddl)


def _migration_1(conn: Connection) -> None:
    """v1: videos, segments, indexes, embeddings (vector only), schema_version."""
    md = sa.MetaData()
    sa.Table(
        "schema_version",
        md,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("applied_at", sa.DateTime, nullable=False),
    )
    sa.Table(
        "indexes",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("weights_sha256", sa.String(64)),
        sa.Column("embedding_dim", sa.Integer, nullable=False),
        sa.Column("factory", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("vector_count", sa.BigInteger, nullable=False),
        sa.Column("next_vector_id", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    sa.Table(
        "videos",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("index_id", sa.Integer, sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("path_bytes", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("mtime_ns", sa.BigInteger),
        sa.Column("content_hash", sa.String(64)),
        sa.Column("duration", sa.Float),
        sa.Column("fps", sa.Float),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("index_id", "path_bytes", name="uq_videos_index_path"),
        sa.CheckConstraint("status IN ('indexed', 'failed', 'pending')", name="ck_videos_status"),
    )
    sa.Table(
        "segments",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("video_id", sa.Integer, sa.ForeignKey("videos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("start_s", sa.Float, nullable=False),
        sa.Column("end_s", sa.Float, nullable=False),
        sa.Column("vector_id", sa.BigInteger, nullable=False, unique=True),
    )
    sa.Table(
        "embeddings",
        md,
        sa.Column("vector_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("index_id", sa.Integer, sa.ForeignKey("indexes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    md.create_all(conn)


def _migration_2(conn: Connection) -> None:
    """v2: per-frame ``embeddings.extra``; FAISS file bookkeeping on ``indexes``; foreign-key indexes."""
    _add_column(conn, "embeddings", sa.Column("extra", sa.LargeBinary, nullable=True))
    _add_column(conn, "indexes", sa.Column("faiss_checksum", sa.String(64), nullable=True))
    _add_column(conn, "indexes", sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"))
    _add_column(conn, "indexes", sa.Column("faiss_generation", sa.BigInteger, nullable=True))
    conn.exec_driver_sql("CREATE INDEX ix_segments_video_id ON segments (video_id)")
    conn.exec_driver_sql("CREATE INDEX ix_embeddings_index_id ON embeddings (index_id)")


def _migration_3(conn: Connection) -> None:
    """v3: each index records its segmentation policy (NULL for indexes built before)."""
    for name in ("segment_s", "stride_s", "whole_up_to_s"):
        _add_column(conn, "indexes", sa.Column(name, sa.Float, nullable=True))


# version -> the function that upgrades a catalog of version - 1 to it. Append only; never edit one.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _migration_1, 2: _migration_2, 3: _migration_3}
CURRENT_VERSION = max(MIGRATIONS)
# The oldest schema a read-only opener reads as it is (v3 only added nullable, deferred columns).
MIN_READ_VERSION = 2


def schema_version(conn: Connection) -> int:
    """The schema version of the database behind ``conn`` (0: empty, no vtr tables)."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar() or 0)


def migrate(engine: Engine, target: int | None = None) -> tuple[int, int]:
    """Bring the database to version ``target`` (default: current) in one transaction; ``(before, after)``.

    Concurrent openers are serialised by the write lock, and each re-reads the version inside its own
    transaction, so a migration is applied once. A catalog newer than this vtr raises ConfigError.
    """
    target = CURRENT_VERSION if target is None else target
    if target not in MIGRATIONS:
        raise ValueError(f"unknown schema version {target} (known: {sorted(MIGRATIONS)})")
    with engine.execution_options(vtr_begin="BEGIN IMMEDIATE").begin() as conn:
        if conn.dialect.name == "postgresql":  # serialise concurrent openers (SQLite: BEGIN IMMEDIATE does)
            from vtr.index.pg_lock import MIGRATION_KEY, VTR_LOCK_CLASS

            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": VTR_LOCK_CLASS, "k": MIGRATION_KEY})
        before = schema_version(conn)
        if before > CURRENT_VERSION:
            raise ConfigError(
                f"the catalog {engine.url!r} has schema version {before}, newer than this vtr understands "
                f"({CURRENT_VERSION}); upgrade vtr"
            )
        for version in range(before + 1, target + 1):
            log.info("catalog: migrating schema to version %d", version)
            MIGRATIONS[version](conn)
            conn.execute(
                sa.text("INSERT INTO schema_version (version, applied_at) VALUES (:v, :t)"),
                {"v": version, "t": utcnow()},
            )
        return before, max(before, target)


# --------------------------------------------------------------------------- engine


def _install_sqlite_events(engine: Engine, busy_timeout_s: float, wal: bool, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        # Let SQLAlchemy's "begin" event (below) emit BEGIN itself: pysqlite would otherwise start
        # transactions only at the first write, so a reader's SELECTs would not share one snapshot.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:  # errors here (a damaged file) reach the caller as sqlite3 errors: mapped by `guarded`
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if wal and not read_only:
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            if read_only:
                cur.execute("PRAGMA query_only = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("vtr_begin", "BEGIN"))


def create_catalog_engine(
    db_url: str | None = None,
    path: str | os.PathLike | bytes | None = None,
    *,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
    read_only: bool = False,
) -> Engine:
    """An engine for a SQLite file ``path`` (WAL, any file name) or for an SQLAlchemy ``db_url``."""
    if (db_url is None) == (path is None):
        raise ValueError("give exactly one of db_url and path")
    if path is not None:
        raw = os.fsencode(os.fspath(path))
        # A read-only home (read-only mount, no write permission) is opened with mode=ro / immutable=1.
        ro_file = read_only and not home_writable(Path(os.fsdecode(raw)).parent)
        engine = sa.create_engine(
            "sqlite+pysqlite://",
            creator=lambda: guarded(raw, lambda: readonly_connect(raw, busy_timeout_s) if ro_file else
                                    sqlite3.connect(raw, check_same_thread=False, timeout=busy_timeout_s)),
            poolclass=sa.pool.QueuePool,
        )
        _install_sqlite_events(engine, busy_timeout_s, wal=not ro_file, read_only=read_only)
        install_error_mapping(engine, os.fsdecode(raw))
        return engine
    assert db_url is not None
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        memory = url.database in (None, "", ":memory:")
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s})
        _install_sqlite_events(engine, busy_timeout_s, wal=not memory, read_only=read_only)
        install_error_mapping(engine, None if memory else url.database)
        return engine
    if url.get_backend_name() == "postgresql":
        # Readers see one snapshot from their first statement to their end (as SQLite WAL readers do); the one
        # writer (advisory lock, see vtr.index.pg_lock) commits in READ COMMITTED (Catalog.write).
        connect_args: dict[str, object] = {"options": "-c default_transaction_read_only=on"} if read_only else {}
        if "connect_timeout" not in url.query:  # an unreachable host fails in seconds, not minutes
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        try:
            return sa.create_engine(url, pool_pre_ping=True, isolation_level="REPEATABLE READ",
                                    connect_args=connect_args)
        except ImportError as exc:
            raise ConfigError(f"--db {safe_url(db_url)}: the PostgreSQL driver is missing ({exc}); "
                              "pip install 'vtr[postgres]'") from exc
    return sa.create_engine(url, pool_pre_ping=True)


def safe_url(db_url: str) -> str:
    """``db_url`` with its password masked (for messages)."""
    try:
        return sa.engine.make_url(db_url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given, minus anything after '@'-less user info
        return db_url.split("@")[-1]


def check_reachable(engine: Engine, db_url: str) -> None:
    """Connect once: CatalogUnreachableError (one line, with the fix) when the database server cannot be reached."""
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:  # OperationalError (refused, timeout, unknown database, bad password), ...
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise CatalogUnreachableError(
            f"cannot reach the catalog database {safe_url(db_url)} ({reason}): start the database server or fix "
            "--db (postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DATABASE)") from exc


def _quick_check(engine: Engine, path: Path) -> None:
    """``PRAGMA quick_check`` of the catalog file (CatalogCorruptError when it fails)."""
    conn = engine.raw_connection()
    try:
        quick_check(conn.driver_connection, path)
    finally:
        conn.close()


class Catalog:
    """A catalog database: sessions for short read / write transactions, migrated on open.

    Use :meth:`open`. ``read_only`` catalogs refuse writes (SQLite ``query_only``) and do not migrate.
    """

    def __init__(self, engine: Engine, *, path: Path | None = None, read_only: bool = False,
                 schema: int = CURRENT_VERSION) -> None:
        self.engine = engine
        self.path = path
        self.read_only = read_only
        self.schema = schema  # the schema version this catalog had when opened (read-only: maybe older)
        self._writer = engine.execution_options(vtr_begin="BEGIN IMMEDIATE")
        if engine.dialect.name == "postgresql":
            self._writer = engine.execution_options(isolation_level="READ COMMITTED")

    @classmethod
    def open(
        cls,
        home: str | os.PathLike | None = None,
        db_url: str | None = None,
        *,
        read_only: bool = False,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> Catalog:
        """Open (and create / migrate, unless ``read_only``) ``db_url`` or ``<home>/catalog.db``."""
        path: Path | None = None
        if db_url is None:
            path = data_home(home, create=not read_only) / CATALOG_FILE
            if read_only and not path.exists():
                raise ConfigError(f"no vtr catalog at {str(path)!r}: index some videos first (vtr index)")
            engine = create_catalog_engine(path=path, busy_timeout_s=busy_timeout_s, read_only=read_only)
        else:
            engine = create_catalog_engine(db_url, busy_timeout_s=busy_timeout_s, read_only=read_only)
        version = CURRENT_VERSION
        try:
            if path is None and engine.dialect.name != "sqlite":
                check_reachable(engine, str(db_url))
            if path is not None and needs_check(path, read_only):
                guarded(path, lambda: _quick_check(engine, path))
            if read_only:
                with engine.connect() as conn:
                    version = schema_version(conn)
                if not MIN_READ_VERSION <= version <= CURRENT_VERSION:
                    raise ConfigError(
                        f"the catalog {str(path or db_url)!r} has schema version {version}, this vtr needs "
                        f"{CURRENT_VERSION}: open it for writing once (e.g. `vtr index`) to upgrade it"
                        if version < CURRENT_VERSION
                        else f"the catalog {str(path or db_url)!r} has schema version {version}, newer than "
                        f"this vtr understands ({CURRENT_VERSION}); upgrade vtr"
                    )
            else:
                migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, path=path, read_only=read_only, schema=version)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session over one committed snapshot; never commits (closing it ends the transaction).

        Objects loaded in it stay usable (detached, with their loaded values) after the block.
        """
        with Session(self.engine, expire_on_commit=False, autoflush=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction (write lock taken at its start on SQLite); commits on success."""
        if self.read_only:
            raise ConfigError("this catalog was opened read-only")
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def version(self) -> int:
        with self.engine.connect() as conn:
            return schema_version(conn)

    def journal_mode(self) -> str | None:
        """SQLite's journal mode (``wal``), or None for other databases."""
        if self.engine.dialect.name != "sqlite":
            return None
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())

    def size_on_disk(self) -> int | None:
        """Bytes of the SQLite file and its WAL / shared-memory files (None for other databases)."""
        if self.path is None:
            return None
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(str(self.path) + suffix).st_size
            except OSError:
                pass
        return total

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
