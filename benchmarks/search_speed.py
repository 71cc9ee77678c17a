"""Search latency: faiss Flat vs IVF-PQ (CPU, p50/p99, recall@10 vs Flat) and torch GPU brute force.

    python benchmarks/search_speed.py --sizes 10000 100000 1000000 --threads 1 2   # CPU, vtr's VectorIndex
    python benchmarks/search_speed.py --gpu --sizes 1000000 10000000                 # CUDA torch_search (fp16)
    python benchmarks/search_speed.py --library --sizes 100000                       # vtr.Library.search, end to end

``--data realistic`` (default) builds vectors the way vtr.index.vectors does: a video's stored vector is
``[m, sqrt(1 - |m|^2), 0 x 63]`` with ``m`` the mean of its normalised frame features (here 4 frames scattered
around a video direction; directions cluster around 2000 topics and share a common component, like CLIP
features), and a query is ``[q, 0 x 64]`` with ``q`` a text feature near one video's direction plus a fixed
modality-gap offset. Queries therefore never coincide with stored vectors. ``--data clustered`` is the old
Gaussian mixture with queries = stored vectors + noise. IVF indexes are trained when they reach their
``train_threshold`` (39 vectors per list: 40k for IVF1024), as in vtr's incremental indexing, then the rest
is added; below it vtr keeps them in its exact pending buffer (rows with ``"pending": true``) unless
``--force-train`` trains on what there is.
"""

from __future__ import annotations

import argparse
import os
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


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def realistic(n: int, nq: int, feat: int, rng: np.random.Generator, frames: int = 4, topics: int = 2000,
              chunk: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stored vectors and ``nq`` queries built with vtr.index.vectors.index_vectors / query_vectors."""
    import torch

    from vtr.index.vectors import EXTRA_DIMS, index_vectors, query_vectors

    common, gap = _unit(rng, (feat,)), _unit(rng, (feat,))
    centres = _unit(rng, (topics, feat))
    db = np.empty((n, feat + EXTRA_DIMS), np.float32)
    first_dirs = None
    for start in range(0, n, chunk):
        c = min(chunk, n - start)
        v = 0.5 * common + 0.7 * centres[rng.integers(0, topics, c)] + 0.6 * _unit(rng, (c, feat))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        spread = rng.uniform(0.4, 1.2, (c, 1, 1)).astype(np.float32)  # frame-to-frame cosine ~0.4-0.85
        db[start:start + c] = index_vectors(torch.from_numpy(v[:, None, :] + spread * _unit(rng, (c, frames, feat))))
        first_dirs = v if first_dirs is None else first_dirs
    text = first_dirs[rng.integers(0, len(first_dirs), nq)] + 0.8 * _unit(rng, (nq, feat)) + 0.5 * gap
    return db, query_vectors(torch.from_numpy(text))


def percentiles(times: list[float]) -> dict:
    t = np.array(times) * 1e3
    return {"p50_ms": round(float(np.percentile(t, 50)), 3), "p99_ms": round(float(np.percentile(t, 99)), 3),
            "mean_ms": round(float(t.mean()), 3)}


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _time_search(index, queries: np.ndarray, single: int) -> tuple[dict, float, np.ndarray]:
    """p50/p99 of ``single`` one-query searches, ms per query of the rest as one batch, and all result ids."""
    index.search(queries[:1], 10)  # warm-up
    times, found = [], []
    for q in queries[:single]:
        t = time.perf_counter()
        found.append(index.search(q[None], 10)[1])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    _, ids = index.search(queries[single:], 10)
    batch_ms = (time.perf_counter() - t) * 1e3 / max(1, len(queries) - single)
    return percentiles(times), batch_ms, np.concatenate([*found, ids])


def bench_cpu(sizes: list[int], feat: int, data: str, factories: list[str], nprobes: list[int],
              k_factors: list[int], threads: list[int], single: int, batch: int,
              force_train: bool = False) -> list[dict]:
    import faiss

    from vtr.index.vector_index import VectorIndex

    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        t0 = time.perf_counter()
        if data == "realistic":
            db, queries = realistic(n, single + batch, feat, rng)
        else:
            db = clustered(n, feat + 64, rng)
            queries = db[rng.integers(0, n, single + batch)] + 0.3 * rng.standard_normal(
                (single + batch, db.shape[1]), dtype=np.float32)
        print(f"n={n}: data in {time.perf_counter() - t0:.1f} s", flush=True)
        dim = db.shape[1]
        truth = None
        for factory in sorted(factories, key=lambda f: f != "Flat"):  # Flat first: the ground truth
            faiss.omp_set_num_threads(max(threads))
            t0 = time.perf_counter()
            index = VectorIndex(dim, factory)
            ids = np.arange(n)
            first = min(n, index.train_threshold) if index.needs_training else n
            index.add(db[:first], ids[:first])  # trains here once it holds train_threshold vectors
            if index.pending and force_train:
                index.train_now()
            index.add(db[first:], ids[first:])
            build_s = time.perf_counter() - t0
            defaults = index.search_params()  # one knob at a time varied from vtr's defaults
            settings = [(None, None)] + [(p, None) for p in nprobes if "nprobe" in defaults and p != defaults["nprobe"]]
            settings += [(None, f) for f in k_factors if "k_factor" in defaults and f != defaults["k_factor"]]
            for nprobe, k_factor in settings:
                index.nprobe, index.k_factor = nprobe, k_factor
                for nt in threads:
                    faiss.omp_set_num_threads(nt)
                    load = _loadavg()
                    lat, batch_ms, found = _time_search(index, queries, single)
                    if truth is None:
                        truth = found
                    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))
                    row = {"n": n, "factory": factory, **index.search_params(),
                           "default_params": nprobe is None and k_factor is None, "threads": nt,
                           "build_s": round(build_s, 2),
                           "trained_on": first if index.needs_training and not index.pending else None,
                           "pending": index.pending, **lat,
                           f"batch{batch}_ms_per_query": round(batch_ms, 3),
                           "recall_at_10_vs_flat": round(recall, 4), "loadavg_1_5_15": load}
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


def bench_library(n: int, queries: int, rng: np.random.Generator) -> list[dict]:
    """``vtr.Library.search`` per query (text encoding included) in a loop of ``queries`` queries over ``n`` stored
    vectors (a Flat index; a tiny random model with the MiniLM tokenizer), two ways in the same run:
    ``reopen`` closes the library's store after every search (what every search cost before the store was kept
    open: open = read + checksum the FAISS file + reconcile with the catalog), ``open_once`` keeps it."""
    import tempfile

    import torch

    from vtr.data.decode import VideoInfo
    from vtr.index.store import LibraryStore, VideoEntry
    from vtr.index.vectors import index_vectors
    from vtr.library import Library
    from vtr.model.registry import save_model_dir
    from vtr.model.retrieval import build_model, config_for

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = build_model(config_for("videomamba_t16_minilm", img_size=32, num_frames=4, vision={"depth": 1}),
                            text_pretrained=False)
        model_dir = save_model_dir(model, Path(tmp) / "model")
        home, videos = Path(tmp) / "home", Path(tmp) / "videos"
        videos.mkdir()
        per_video, dim = 100, model.cfg.embed_dim
        with LibraryStore.open(home, "default", model_name=str(model_dir), embed_dim=dim,
                               weights_sha256=None) as store:
            for v in range(n // per_video):
                path = videos / f"v{v:05d}.mp4"
                path.write_bytes(b"x")
                frames = rng.standard_normal((per_video, 4, dim), dtype=np.float32)
                info = VideoInfo(str(path), 1000, 10.0, 100.0, 32, 32, "pyav")
                store.add_videos([VideoEntry(info, [(float(i), i + 1.0) for i in range(per_video)],
                                             index_vectors(frames), "0" * 64)])
        texts = [f"a shape number {i} moves left" for i in range(queries)]
        for mode in ("reopen", "open_once"):
            lib = Library(home=home, model=str(model_dir), device="cpu")
            lib.search(texts[0], k=10)  # load the model and tokenizer
            times = []
            for t in texts:
                t0 = time.perf_counter()
                lib.search(t, k=10)
                times.append(time.perf_counter() - t0)
                if mode == "reopen":
                    lib.close()
            lib.close()
            row = {"n": n, "method": f"Library.search ({mode})", "queries": queries,
                   "p50_ms": round(float(np.percentile(times, 50)) * 1e3, 2),
                   "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 2),
                   "mean_ms": round(float(np.mean(times)) * 1e3, 2)}
            print(row, flush=True)
            rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512, help="feature width (stored vectors have 64 more)")
    ap.add_argument("--data", choices=["realistic", "clustered"], default="realistic")
    ap.add_argument("--factories", nargs="+", default=["Flat", "IVF1024,PQ64", "IVF1024,PQ64x4fs,RFlat"])
    ap.add_argument("--nprobes", nargs="*", type=int, default=[16, 32, 128],
                    help="IVF nprobe values timed besides vtr's default")
    ap.add_argument("--k-factors", nargs="*", type=int, default=[16, 32],
                    help="refinement (,RFlat) k_factor values timed besides vtr's default")
    ap.add_argument("--threads", nargs="+", type=int, default=[1], help="faiss OpenMP threads for searching")
    ap.add_argument("--single", type=int, default=100, help="single-query searches timed for p50/p99")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--force-train", action="store_true", help="train IVF indexes below their train_threshold")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--library", action="store_true", help="time vtr.Library.search end to end (open once vs reopen)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--note", default="", help="free text stored with the CPU results (e.g. what else ran)")
    args = ap.parse_args()
    if args.library:
        load_before = _loadavg()
        rows = [r for n in args.sizes for r in bench_library(n, args.single, np.random.default_rng(0))]
        write_result(args.out, "search_speed_library_cpu", {
            "settings": vars(args), "results": rows,
            "contention": {"loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": _loadavg(),
                           "note": args.note}})
    elif args.gpu:
        rows = bench_gpu(args.sizes, args.dim, 1024 if args.batch == 100 else args.batch)
        write_result(args.out, "search_speed_gpu", {"settings": vars(args), "results": rows})
    else:
        load_before, t0 = _loadavg(), time.perf_counter()
        rows = bench_cpu(args.sizes, args.dim, args.data, args.factories, args.nprobes, args.k_factors, args.threads,
                         args.single, args.batch, args.force_train)
        import faiss

        contention = {"loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": _loadavg(),
                      "wall_s": round(time.perf_counter() - t0, 1), "note": args.note}
        versions = {"faiss": faiss.__version__, "numpy": np.__version__}
        write_result(args.out, "search_speed_cpu", {"settings": vars(args), "versions": versions,
                                                    "contention": contention, "results": rows})


if __name__ == "__main__":
    main()
