"""Catalog: creation, WAL, migrations, non-UTF-8 paths, constraints, snapshots (the ``db`` cases run on SQLite
and on a real PostgreSQL server, see tests/pg_server.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from vtr.errors import ConfigError
from vtr.index.catalog import (
    CATALOG_FILE,
    CURRENT_VERSION,
    Base,
    Catalog,
    Embedding,
    IndexRecord,
    Segment,
    Video,
    create_catalog_engine,
    decode_path,
    encode_path,
    migrate,
    schema_version,
    utcnow,
)

NON_UTF8 = b"caf\xe9 \xff\xfe clip.mp4"  # Latin-1 e-acute and bytes that are never UTF-8


class Db:
    """Where a test's catalog lives: SQLite in ``tmp_path`` or a fresh PostgreSQL database."""

    def __init__(self, tmp_path: Path, url: str | None) -> None:
        self.tmp_path, self.url = tmp_path, url

    def open(self, **kw) -> Catalog:
        return Catalog.open(self.tmp_path, self.url, **kw)

    def engine(self):
        if self.url is None:
            return create_catalog_engine(path=self.tmp_path / CATALOG_FILE)
        return create_catalog_engine(self.url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return Db(tmp_path, url)


def _index(s, name: str = "default") -> IndexRecord:
    now = utcnow()
    rec = IndexRecord(
        name=name,
        model_name="m",
        weights_sha256="0" * 64,
        embedding_dim=4,
        factory="Flat",
        created_at=now,
        updated_at=now,
        vector_count=0,
        next_vector_id=0,
    )
    s.add(rec)
    s.flush()
    return rec


def _video(s, index_id: int, path: str | bytes) -> Video:
    raw, display = encode_path(path)
    video = Video(index_id=index_id, path=display, path_bytes=raw, status="indexed", updated_at=utcnow())
    s.add(video)
    s.flush()
    return video


def test_create_wal_and_pragmas(tmp_path: Path) -> None:
    with Catalog.open(tmp_path) as cat:
        assert cat.path == tmp_path / CATALOG_FILE and cat.path.exists()
        assert cat.version() == CURRENT_VERSION
        assert cat.journal_mode() == "wal"
        with cat.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        tables = set(sa.inspect(cat.engine).get_table_names())
        assert {"videos", "segments", "indexes", "embeddings", "schema_version"} <= tables
        with cat.read() as s:
            assert [v for (v,) in s.execute(sa.text("SELECT version FROM schema_version ORDER BY version"))] == list(
                range(1, CURRENT_VERSION + 1)
            )
        assert cat.size_on_disk() > 0
    with Catalog.open(tmp_path) as cat:  # reopening applies nothing
        assert cat.version() == CURRENT_VERSION


def test_migrated_schema_matches_the_orm_models(db: Db) -> None:
    """The migrations and the ORM models describe the same tables, columns and indexes."""
    with db.open() as cat:
        insp = sa.inspect(cat.engine)
        for table in Base.metadata.sorted_tables:
            db_cols = {c["name"]: c for c in insp.get_columns(table.name)}
            assert set(db_cols) == {c.name for c in table.columns}, table.name
            for col in table.columns:
                assert bool(db_cols[col.name]["nullable"]) == bool(col.nullable) or col.primary_key, (table, col)
            db_indexes = {i["name"] for i in insp.get_indexes(table.name)}
            assert {i.name for i in table.indexes} <= db_indexes, table.name


def test_any_sqlalchemy_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    with Catalog.open(db_url=url) as cat:
        assert cat.path is None and cat.version() == CURRENT_VERSION and cat.journal_mode() == "wal"
        with cat.write() as s:
            _index(s)
    assert (tmp_path / "other.db").exists() and not (tmp_path / CATALOG_FILE).exists()
    with Catalog.open(db_url="sqlite://") as mem:  # in memory: no WAL, still migrated
        assert mem.version() == CURRENT_VERSION


def test_upgrade_v1_database_to_current(db: Db) -> None:
    engine = db.engine()
    assert migrate(engine, target=1) == (0, 1)
    insp = sa.inspect(engine)
    assert "extra" not in {c["name"] for c in insp.get_columns("embeddings")}
    assert "faiss_checksum" not in {c["name"] for c in insp.get_columns("indexes")}
    now = utcnow()
    vec = np.arange(4, dtype=np.float32).tobytes()
    with engine.begin() as conn:  # v1 data, written with v1's columns only
        conn.execute(
            sa.text(
                "INSERT INTO indexes (name, model_name, weights_sha256, embedding_dim, factory, created_at, "
                "updated_at, vector_count, next_vector_id) VALUES ('old', 'm', NULL, 4, 'Flat', :t, :t, 1, 8)"
            ),
            {"t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO videos (index_id, path, path_bytes, size, mtime_ns, status, updated_at) "
                "VALUES (1, 'a.mp4', :p, 10, 20, 'indexed', :t)"
            ),
            {"p": b"/x/a.mp4", "t": now},
        )
        conn.execute(sa.text("INSERT INTO segments (video_id, start_s, end_s, vector_id) VALUES (1, 0, 2, 7)"))
        conn.execute(sa.text("INSERT INTO embeddings (vector_id, index_id, vector) VALUES (7, 1, :v)"), {"v": vec})
    engine.dispose()

    with db.open() as cat:
        assert cat.version() == CURRENT_VERSION
        with cat.read() as s:
            rec = s.scalar(sa.select(IndexRecord))
            assert (rec.name, rec.vector_count, rec.next_vector_id) == ("old", 1, 8)
            assert rec.generation == 0 and rec.faiss_checksum is None  # new columns with their defaults
            emb = s.get(Embedding, 7)
            assert emb.vector == vec and emb.extra is None
            video = s.scalar(sa.select(Video))
            assert video.fs_path == "/x/a.mp4" and video.mtime_ns == 20
        with cat.write() as s:  # the new columns are usable
            s.get(Embedding, 7).extra = b"frames"
            s.get(IndexRecord, 1).faiss_checksum = "c" * 64
        insp = sa.inspect(cat.engine)
        assert "ix_segments_video_id" in {i["name"] for i in insp.get_indexes("segments")}


def test_newer_schema_is_refused(db: Db) -> None:
    db.open().close()
    engine = db.engine()
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (99, :t)"), {"t": utcnow()})
        assert schema_version(conn) == 99
    engine.dispose()
    with pytest.raises(ConfigError, match="newer"):
        db.open()


def test_read_only_catalog(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no vtr catalog"):
        Catalog.open(tmp_path / "nowhere", read_only=True)
    Catalog.open(tmp_path).close()
    with Catalog.open(tmp_path, read_only=True) as ro:
        with pytest.raises(ConfigError):
            with ro.write():
                pass
        with pytest.raises(OperationalError):  # SQLite query_only
            with ro.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM videos")
    # an old schema is not upgraded by a read-only opener
    (tmp_path / "v1").mkdir()
    engine = create_catalog_engine(path=tmp_path / "v1" / CATALOG_FILE)
    migrate(engine, target=1)
    engine.dispose()
    with pytest.raises(ConfigError, match="upgrade"):
        Catalog.open(tmp_path / "v1", read_only=True)


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes as a name")
def test_non_utf8_path_round_trip(db: Db, tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/" + NON_UTF8
    with open(raw, "wb") as fh:
        fh.write(b"x")
    path = os.fsdecode(raw)  # str with surrogate escapes
    assert encode_path(path)[0] == raw and encode_path(raw)[0] == raw
    with db.open() as cat:
        with cat.write() as s:
            rec = _index(s)
            _video(s, rec.id, path)
        with cat.read() as s:
            video = s.scalar(sa.select(Video))
        assert video.path_bytes == raw
        assert decode_path(video.path_bytes) == path == video.fs_path
        assert os.path.exists(video.fs_path)
        assert "\ufffd" in video.path and video.path.endswith(" clip.mp4")
        video.path.encode("utf-8")  # the display string is valid text


def test_unique_constraints(db: Db) -> None:
    with db.open() as cat:
        with cat.write() as s:
            a, b = _index(s, "a"), _index(s, "b")
            va = _video(s, a.id, "/v/x.mp4")
            _video(s, b.id, "/v/x.mp4")  # the same file in two indexes is fine
            s.add(Segment(video_id=va.id, start_s=0.0, end_s=1.0, vector_id=5))
            s.add(Embedding(vector_id=5, index_id=a.id, vector=b"\0" * 16))
        cases = [
            lambda s: _index(s, "a"),  # index names
            lambda s: _video(s, a.id, "/v/x.mp4"),  # (index, path)
            lambda s: s.add(Segment(video_id=va.id, start_s=1.0, end_s=2.0, vector_id=5)),  # vector ids
            lambda s: s.add(Embedding(vector_id=5, index_id=a.id, vector=b"")),  # embedding ids
            lambda s: s.add(Video(index_id=a.id, path="p", path_bytes=b"p", status="weird", updated_at=utcnow())),
            lambda s: s.add(Segment(video_id=12345, start_s=0.0, end_s=1.0, vector_id=99)),  # foreign key
        ]
        for make in cases:
            with pytest.raises(IntegrityError):
                with cat.write() as s:
                    make(s)
                    s.flush()


def test_delete_cascades(db: Db) -> None:
    with db.open() as cat:
        with cat.write() as s:
            rec = _index(s)
            video = _video(s, rec.id, "/v/y.mp4")
            s.add(Segment(video_id=video.id, start_s=0.0, end_s=1.0, vector_id=1))
            s.add(Embedding(vector_id=1, index_id=rec.id, vector=b"\0" * 16))
        with cat.write() as s:
            s.execute(sa.delete(IndexRecord))
        with cat.read() as s:
            for model in (Video, Segment, Embedding):
                assert s.scalar(sa.select(sa.func.count()).select_from(model)) == 0


def test_reader_sees_one_snapshot(db: Db) -> None:
    with db.open() as writer, db.open(read_only=True) as reader:
        with writer.write() as s:
            rec = _index(s)
            _video(s, rec.id, "/v/0.mp4")
        count = sa.select(sa.func.count()).select_from(Video)
        with reader.read() as rs:
            assert rs.scalar(count) == 1
            with writer.write() as s:  # commits while the reader's transaction is open: no blocking
                _video(s, rec.id, "/v/1.mp4")
            assert rs.scalar(count) == 1  # still the reader's snapshot
        with reader.read() as rs:
            assert rs.scalar(count) == 2


def test_read_only_catalog_refuses_writes(db: Db) -> None:
    db.open().close()
    with db.open(read_only=True) as ro:
        with pytest.raises(ConfigError):
            with ro.write():
                pass
        with pytest.raises(OperationalError if db.url is None else sa.exc.InternalError):  # query_only / read-only
            with ro.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM videos")
