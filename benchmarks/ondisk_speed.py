"""Out-of-core IVF built from the catalog: build time, RAM, disk, search latency and recall@10 against exact search.

    python benchmarks/ondisk_speed.py --vectors 1000000 --factory IVF1024,Flat IVF1024,SQ8 --nprobe 16 64 128

Fills a SQLite catalog with ``--vectors`` synthetic vtr vectors (``search_speed.realistic``: 576-d, built the way
vtr.index.vectors does), builds each on-disk factory with :func:`vtr.index.ondisk.build_ondisk_from_catalog`
(shards of ``--shard-size``), and measures one-query latency (p50/p99) and recall@10 against exact inner-product
search over the same vectors (brute force in numpy, in chunks). Peak RSS of the process is reported too (it
includes the generated vectors, held for the exact reference).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from search_speed import percentiles, realistic  # noqa: E402


def exact_top10(db: np.ndarray, q: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    best_s = np.full((len(q), 10), -np.inf, np.float32)
    best_i = np.full((len(q), 10), -1, np.int64)
    for start in range(0, len(db), chunk):
        s = q @ db[start:start + chunk].T
        top = np.argpartition(-s, 10, axis=1)[:, :10]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + start], 1)
        order = np.argsort(-cand_s, 1)[:, :10]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def fill_catalog(home: Path, vectors: np.ndarray) -> object:
    """A store whose catalog holds ``vectors`` (embeddings rows only: the on-disk build reads nothing else)."""
    import sqlalchemy as sa

    from vtr.index.catalog import Embedding
    from vtr.index.store import LibraryStore

    store = LibraryStore.open(home, model_name="synthetic", dim=vectors.shape[1], device="cpu")
    base = store.index_id << 40
    with store.catalog.write() as s:
        for start in range(0, len(vectors), 50_000):
            rows = [{"vector_id": base + start + j, "index_id": store.index_id, "vector": v.tobytes()}
                    for j, v in enumerate(vectors[start:start + 50_000])]
            s.execute(sa.insert(Embedding), rows)
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--factory", nargs="+", default=["IVF1024,Flat", "IVF1024,SQ8"])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--shard-size", type=int, default=250_000)
    ap.add_argument("--train-size", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="ondisk_speed_cpu")
    args = ap.parse_args()

    import faiss

    from vtr.index.ondisk import OnDiskIndex, build_ondisk_from_catalog

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    db, q = realistic(args.vectors, args.queries, 512, rng)
    gen_s = time.perf_counter() - t0
    truth = exact_top10(db, q)
    results = {"vectors": args.vectors, "dim": int(db.shape[1]), "queries": args.queries, "generate_s": round(gen_s, 1),
               "loadavg_start": [round(x, 2) for x in os.getloadavg()], "factories": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        t0 = time.perf_counter()
        store = fill_catalog(Path(tmp) / "home", db)
        results["catalog_fill_s"] = round(time.perf_counter() - t0, 1)
        results["catalog_bytes"] = store.catalog.size_on_disk()
        base = store.index_id << 40
        for factory in args.factory:
            info = build_ondisk_from_catalog(store, factory, train_size=args.train_size, shard_size=args.shard_size)
            row = {"factory": factory, "build_s": info.build_s, "shards": info.shards, "train_size": info.train_size,
                   "disk_bytes": info.disk_bytes, "ram_bytes": info.ram_bytes, "search": []}
            ondisk = OnDiskIndex(Path(tmp) / "home" / "indexes" / "default.ondisk")
            for nprobe in args.nprobe:
                ondisk.nprobe = nprobe
                ondisk.search(q[:1], 10)
                times, found = [], []
                for i in range(len(q)):
                    t = time.perf_counter()
                    _, ids = ondisk.search(q[i:i + 1], 10)
                    times.append(time.perf_counter() - t)
                    found.append(ids[0] - base)
                recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))
                row["search"].append({"nprobe": nprobe, "recall_at_10": round(recall, 4), **percentiles(times)})
                print(factory, nprobe, row["search"][-1], flush=True)
            results["factories"].append(row)
            print(row, flush=True)
        store.close()
    results["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["note"] = ("2-core machine shared with other agents (see loadavg); peak RSS includes the generated "
                       "vectors kept for the exact reference")
    write_result(args.out, args.tag, {"settings": vars(args), "results": results})


if __name__ == "__main__":
    main()
