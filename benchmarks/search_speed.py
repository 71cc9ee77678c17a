"""Search latency: faiss Flat vs IVF-PQ (CPU, p50/p99, recall@10 vs Flat) and torch GPU brute force.

    python benchmarks/search_speed.py --sizes 10000 100000 1000000            # CPU, vtr's VectorIndex
    python benchmarks/search_speed.py --gpu --sizes 1000000 10000000          # CUDA torch_search (fp16)

Vectors are synthetic but clustered (a Gaussian mixture on the unit sphere), like real embeddings: uniform
random vectors would make IVF look worse than it is. Width 576 = 512-d features + vtr's 64 extra dims.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402


def clustered(n: int, dim: int, rng: np.random.Generator, clusters: int = 2000) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = centers[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def percentiles(times: list[float]) -> dict:
    t = np.array(times) * 1e3
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p99_ms": round(float(np.percentile(t, 99)), 3),
            "mean_ms": round(float(t.mean()), 3)}


def bench_cpu(sizes: list[int], dim: int, factories: list[str], single: int, batch: int) -> list[dict]:
    from vtr.index.vector_index import VectorIndex

    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        db = clustered(n, dim, rng)
        queries = db[rng.integers(0, n, single + batch)] + 0.3 * rng.standard_normal((single + batch, dim),
                                                                                      dtype=np.float32)
        truth = None
        for factory in factories:
            t0 = time.perf_counter()
            index = VectorIndex(dim, factory)
            index.add(db, np.arange(n))
            if not index.is_trained:
                index.train_now()
            build_s = time.perf_counter() - t0
            times = []
            for q in queries[:single]:
                t = time.perf_counter()
                index.search(q[None], 10)
                times.append(time.perf_counter() - t)
            t = time.perf_counter()
            _, ids = index.search(queries[single:], 10)
            batch_ms = (time.perf_counter() - t) * 1e3 / batch
            if factory == "Flat":
                truth = ids
            overlap = [len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)] if truth is not None else []
            recall = float(np.mean(overlap)) if overlap else None
            row = {"n": n, "factory": factory, "build_s": round(build_s, 2), **percentiles(times),
                   f"batch{batch}_ms_per_query": round(batch_ms, 3), "recall_at_10_vs_flat": recall}
            print(row, flush=True)
            rows.append(row)
            del index
    return rows


def bench_gpu(sizes: list[int], dim: int, batch: int) -> list[dict]:
    import torch

    from vtr.index.vector_index import torch_search

    rows = []
    for n in sizes:
        g = torch.Generator(device="cuda").manual_seed(0)
        db = torch.nn.functional.normalize(torch.randn(n, dim, device="cuda", generator=g), dim=1).half()
        q = torch.nn.functional.normalize(torch.randn(batch, dim, device="cuda", generator=g), dim=1).half()
        methods = {"vtr.torch_search": lambda db=db, q=q: torch_search(db, q, 10),
                   "topk(q @ db.T) baseline": lambda db=db, q=q: torch.topk(q @ db.T, 10, dim=1)}
        for name, fn in methods.items():
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            times = []
            for _ in range(10):
                t = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            med = float(np.median(times))
            row = {"n": n, "dim": dim, "queries": batch, "method": name, "ms_per_batch": round(med * 1e3, 3),
                   "queries_per_s": round(batch / med), "db_read_floor_ms": round(n * dim * 2 / 3.35e12 * 1e3, 3)}
            print(row, flush=True)
            rows.append(row)
        del db, methods
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--factories", nargs="+", default=["Flat", "IVF1024,PQ64"])
    ap.add_argument("--single", type=int, default=100, help="single-query searches timed for p50/p99")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    if args.gpu:
        rows = bench_gpu(args.sizes, 512 if args.dim == 576 else args.dim, 1024 if args.batch == 100 else args.batch)
        write_result(args.out, "search_speed_gpu", {"settings": vars(args), "results": rows})
    else:
        rows = bench_cpu(args.sizes, args.dim, args.factories, args.single, args.batch)
        write_result(args.out, "search_speed_cpu", {"settings": vars(args), "results": rows})


if __name__ == "__main__":
    main()
