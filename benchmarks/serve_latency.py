"""`vtr serve` API latency on this machine: GET /api/search p50/p99 at N stored vectors (model loaded, text
encoding included), how many concurrent clients it serves before p99 doubles, and a cached results page.

    python benchmarks/serve_latency.py                      # 100k vectors, shapes-sized model + videomamba_m16_umt
    python benchmarks/serve_latency.py --vectors 20000 --models shapes --requests 60   # quick

For each model (random weights: ``shapes`` is the shapes_tiny architecture, videomamba_t16_minilm at 32 px x 4
frames with 2 layers; ``videomamba_m16_umt`` is vtr.create_model's released architecture) a library of
``--vectors`` stored vectors is written straight into the store (``--per-video`` segments per catalog video,
clustered features in the stored-vector format of vtr.index.vectors; every catalog video is a symlink to one of
16 real vtr-shapes clips, so thumbnails and the video endpoint work). A `vtr serve` process on loopback answers
text queries from client threads with keep-alive connections (each request: tokenize, encode the text, search
the Flat index, resolve the ids in the catalog). Levels of concurrency run in order; ``serves_before_p99_doubles``
is the largest level whose p99 stays within twice the one-client p99. The server takes requests in its thread
pool but serialises searches (one read-only store, one model), so more clients mostly add queueing.
The CPU is shared with other jobs: ``loadavg`` before and after each level is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("videomamba_t16_minilm", {"img_size": 32, "num_frames": 4, "vision": {"depth": 2}})
WORDS = (["red", "green", "blue", "yellow", "purple", "orange", "white"],
         ["circle", "square", "triangle", "star", "ring", "cross"],
         ["moves left", "moves right", "grows", "shrinks", "appears", "disappears", "spins", "bounces"])


def queries(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"a {rng.choice(WORDS[0])} {rng.choice(WORDS[1])} {rng.choice(WORDS[2])}"
            + (f" then a {rng.choice(WORDS[0])} {rng.choice(WORDS[1])} {rng.choice(WORDS[2])}" if i % 2 else "")
            for i in range(n)]


def make_model(name: str, out: Path) -> Path:
    import torch

    from vtr.model.registry import is_model_dir
    if is_model_dir(out / f"model-{name}"):
        return out / f"model-{name}"

    import vtr
    from vtr.model.registry import save_model_dir
    from vtr.model.retrieval import build_model, config_for

    torch.manual_seed(0)
    if name == "shapes":
        model = build_model(config_for(SHAPES[0], **SHAPES[1]))
    else:
        model = vtr.create_model(name)
    return save_model_dir(model, out / f"model-{name}")


def build_library(home: Path, index: str, model_dir: Path, clips: list[Path], n_vectors: int, per_video: int,
                  seed: int = 0) -> dict:
    """A Flat index of ``n_vectors`` stored vectors whose catalog videos are symlinks to ``clips``."""
    from vtr.data.decode import VideoInfo, probe_video
    from vtr.hashing import sha256_file
    from vtr.index.store import LibraryStore, VideoEntry
    from vtr.index.vectors import index_vectors
    from vtr.model.registry import read_meta

    cfg = json.loads((model_dir / "config.json").read_text())
    dim, frames = int(cfg["embed_dim"]), int(cfg["num_frames"])
    infos = [probe_video(p) for p in clips]
    hashes = [sha256_file(p) for p in clips]
    links = home.parent / "links"
    links.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((2000, dim)).astype(np.float32)
    n_videos = n_vectors // per_video
    t0 = time.perf_counter()
    sha = read_meta(model_dir)["weights_sha256"]
    with LibraryStore.open(home, index, model_name=str(model_dir), weights_sha256=sha, embed_dim=dim,
                           factory="Flat") as store:
        done = store.ntotal // per_video  # a library left by an earlier run with the same --work is reused
        for start in range(done, n_videos, 500):
            entries = []
            for i in range(start, min(n_videos, start + 500)):
                c = i % len(clips)
                link = links / f"v{i:07d}.mp4"
                if not link.exists():
                    link.symlink_to(clips[c])
                info = infos[c]
                step = info.duration / per_video
                feats = topics[rng.integers(0, len(topics), per_video)][:, None, :] + \
                    0.8 * rng.standard_normal((per_video, frames, dim)).astype(np.float32)
                entries.append(VideoEntry(VideoInfo(str(link), info.num_frames, info.fps, info.duration, info.width,
                                                    info.height, info.backend),
                                          [(j * step, (j + 1) * step) for j in range(per_video)],
                                          index_vectors(feats), hashes[c]))
            store.add_videos(entries)
        store.flush()
        vectors = store.ntotal
    return {"vectors": vectors, "videos": n_videos, "build_s": round(time.perf_counter() - t0, 1)}


class Server:
    """`vtr serve` in a subprocess on a loopback port."""

    def __init__(self, home: Path, index: str, port: int, threads: int | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)  # torch's and faiss's thread pools
        env.pop("VTR_TOKEN", None)
        cmd = [sys.executable, "-m", "vtr.cli.app", "serve", "--home", str(home), "--index", index, "--port",
               str(port), "--device", "cpu"]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout_s: float = 900) -> float:
        import httpx

        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"vtr serve exited: {self.log.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/api/status", timeout=5).json().get("ready"):
                    return time.perf_counter() - t0
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError("vtr serve did not come up")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def run_level(url: str, clients: int, requests: int, texts: list[str], k: int) -> dict:
    """``requests`` searches spread over ``clients`` threads (keep-alive), all started together."""
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    per = max(1, requests // clients)

    def client(ci: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            c.get("/api/status")
            barrier.wait()
            for j in range(per):
                q = texts[(ci * per + j) % len(texts)]
                t = time.perf_counter()
                r = c.get("/api/search", params={"q": q, "k": k})
                dt = time.perf_counter() - t
                with lock:
                    (lat.append(dt) if r.status_code == 200 else errors.append(f"{r.status_code} {r.text[:100]}"))

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(client, range(clients)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(lat), "errors": len(errors), "error_sample": errors[:3],
            "p50_ms": round(1000 * percentile(lat, 50), 1), "p99_ms": round(1000 * percentile(lat, 99), 1),
            "mean_ms": round(1000 * statistics.fmean(lat), 1), "throughput_rps": round(len(lat) / wall, 2),
            "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def results_page(url: str, q: str, k: int = 20, parallel: int = 6) -> dict:
    """A page of ``k`` hits as a browser loads it: the search, then the thumbnails (``parallel`` at a time)."""
    import httpx

    def once() -> float:
        t = time.perf_counter()
        with httpx.Client(base_url=url, timeout=120) as c:
            hits = c.get("/api/search", params={"q": q, "k": k}).json()["results"]
            with ThreadPoolExecutor(parallel) as ex:
                codes = list(ex.map(lambda h: c.get(h["thumbnail_url"]).status_code, hits))
        assert codes == [200] * len(hits), codes
        return time.perf_counter() - t

    first = once()
    cached = [once() for _ in range(5)]
    return {"k": k, "first_s": round(first, 3), "cached_median_s": round(statistics.median(cached), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--per-video", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["shapes", "videomamba_m16_umt"])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--requests", type=int, default=160, help="searches per concurrency level")
    ap.add_argument("-k", type=int, default=20)
    ap.add_argument("--port", type=int, default=18765)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="serve_latency_cpu")
    ap.add_argument("--server-threads", type=int, default=None, help="OMP_NUM_THREADS of the server (default: all)")
    args = ap.parse_args()

    import torch

    from vtr.data.synth import generate_world

    work = args.work or Path(tempfile.mkdtemp(prefix="vtr-serve-bench-"))
    if not (work / "world" / "world.json").is_file():  # kept between runs: the catalog recorded its files' mtimes
        generate_world(work / "world", num_videos=16, seed=3)
    clips = sorted((work / "world" / "videos").glob("*.mp4"))
    texts = queries(400)
    rows = []
    for name in args.models:
        print(f"[{name}] model + library of {args.vectors} vectors ...", file=sys.stderr)
        model_dir = make_model(name, work)
        home = work / f"home-{name}"
        built = build_library(home, "bench", model_dir, clips, args.vectors, args.per_video)
        server = Server(home, "bench", args.port, args.server_threads)
        try:
            startup = server.wait_ready()
            run_level(server.url, 1, 10, texts[::-1], args.k)  # warm-up
            levels = []
            for c in args.clients:
                levels.append(run_level(server.url, c, args.requests, texts, args.k))
                print(f"[{name}] {levels[-1]}", file=sys.stderr)
            base = levels[0]["p99_ms"]
            ok = [lv["clients"] for lv in levels if lv["p99_ms"] <= 2 * base and not lv["errors"]]
            page = results_page(server.url, texts[0], k=20)
        finally:
            server.stop()
        rows.append({"model": name, "model_params": json.loads((model_dir / "meta.json").read_text())
                     .get("parameters"), "library": built, "server_ready_s": round(startup, 1),
                     "one_client": {"p50_ms": levels[0]["p50_ms"], "p99_ms": base},
                     "serves_before_p99_doubles": max(ok) if ok else 0, "levels": levels,
                     "results_page_20": page})
        print(f"[{name}] one client p50 {levels[0]['p50_ms']} ms p99 {base} ms; "
              f"{rows[-1]['serves_before_p99_doubles']} clients before p99 doubles; page {page}", file=sys.stderr)
        path = write_result(args.out, args.name, {  # after each model: a later failure keeps what was measured
            "benchmark": "serve_latency", "vectors": args.vectors, "k": args.k, "factory": "Flat",
            "requests_per_level": args.requests, "server_threads": args.server_threads or torch.get_num_threads(),
            "loadavg_end": os.getloadavg(), "rows": rows,
            "note": "shared 2-core CPU: other jobs ran at the same time (see loadavg per level)"})
        print(path)


if __name__ == "__main__":
    main()
