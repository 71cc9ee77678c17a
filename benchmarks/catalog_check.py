"""Cost of the catalog's integrity check on open (PRAGMA quick_check) and of its safety copy, by catalog size.

A stand-in catalog with the real schema (vtr's migrations) and N embeddings of the usual stored width (576
float32) plus their video and segment rows, written once; then quick_check and save_safety_copy are timed
(median of 3). Writes benchmarks/results/catalog_check_cpu.json. The CPU is shared: the load average is recorded.

    python benchmarks/catalog_check.py --vectors 10000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine_info

from vtr.index.catalog import CATALOG_FILE, Catalog
from vtr.index.integrity import quick_check
from vtr.index.repair import save_safety_copy

WIDTH = 576


def build(home: Path, n: int) -> Path:
    Catalog.open(home).close()  # the real schema
    db = home / CATALOG_FILE
    conn = sqlite3.connect(db)
    now = "2026-01-01 00:00:00"
    conn.execute("INSERT INTO indexes (id, name, model_name, embedding_dim, factory, created_at, updated_at, "
                 "vector_count, next_vector_id, generation) VALUES (1, 'default', 'm', ?, 'Flat', ?, ?, ?, ?, 1)",
                 (WIDTH, now, now, n, n))
    vec = np.random.default_rng(0).standard_normal(WIDTH).astype(np.float32).tobytes()
    conn.executemany("INSERT INTO videos (id, index_id, path, path_bytes, size, mtime_ns, content_hash, status, "
                     "updated_at) VALUES (?, 1, ?, ?, 1000, 1, ?, 'indexed', ?)",
                     ((i, f"/videos/v{i:07d}.mp4", f"/videos/v{i:07d}.mp4".encode(), "0" * 64, now)
                      for i in range(1, n + 1)))
    conn.executemany("INSERT INTO segments (video_id, start_s, end_s, vector_id) VALUES (?, 0, 10, ?)",
                     ((i, i) for i in range(1, n + 1)))
    conn.executemany("INSERT INTO embeddings (vector_id, index_id, vector) VALUES (?, 1, ?)",
                     ((i, vec) for i in range(1, n + 1)))
    conn.commit()
    conn.close()
    return db


def median_s(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "catalog_check_cpu.json"))
    args = ap.parse_args()
    rows = []
    for n in args.vectors:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            db = build(home, n)
            size = db.stat().st_size

            def check(db: Path = db) -> None:
                conn = sqlite3.connect(db)
                try:
                    quick_check(conn, db)
                finally:
                    conn.close()

            rows.append({"vectors": n, "catalog_mb": round(size / 1e6, 1), "quick_check_s": median_s(check),
                         "safety_copy_s": median_s(lambda home=home: save_safety_copy(home)),
                         "loadavg_before": os.getloadavg()})
            print(rows[-1])
    result = {"benchmark": "catalog_check", "machine": machine_info(), "loadavg": os.getloadavg(), "rows": rows,
              "note": "shared 2-core CPU, contended by other agents: compare rows of one run only"}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
