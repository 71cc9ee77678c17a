"""Writes tests/data/legacy_home with the index code of main at 84aaca8 (session 2): one index, per-frame extras."""
import os, shutil, sqlite3, sys, tempfile
from pathlib import Path
import numpy as np
from vtr.data.decode import VideoInfo
from vtr.index.store import LibraryStore

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
with tempfile.TemporaryDirectory() as tmp:
    home = Path(tmp) / "home"
    vids = Path(tmp) / "videos"; vids.mkdir()
    dim = 16 + 64
    with LibraryStore.open(home, "default", model_name="legacy-model", weights_sha256="ab" * 32, dim=dim) as store:
        for v in range(4):
            p = vids / f"clip{v}.mp4"; p.write_bytes(os.urandom(64))
            segs = [(0.0, 5.0), (2.5, 7.5)] if v == 3 else [(0.0, 3.0)]
            frame = rng.standard_normal((len(segs), 4, 16)).astype(np.float32)
            frame /= np.linalg.norm(frame, axis=-1, keepdims=True)
            m = frame.mean(1); rest = np.sqrt(np.clip(1 - (m**2).sum(-1, keepdims=True), 0, None))
            vec = np.concatenate([m, rest, np.zeros((len(segs), 63), np.float32)], 1)
            store.add_video(VideoInfo(str(p), 24, 8.0, 3.0, 32, 32, "pyav"), segs, vec, list(frame))
        store.mark_failed(vids / "broken.mp4", "corrupt")
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    con = sqlite3.connect(home / "catalog.db"); con.execute("PRAGMA wal_checkpoint(TRUNCATE)"); con.close()
    shutil.copy(home / "catalog.db", out / "catalog.db")
    (out / "indexes").mkdir()
    shutil.copy(home / "indexes" / "default.faiss", out / "indexes" / "default.faiss")
    # the queries and what the old code answered, for the test
    q = rng.standard_normal((3, 16)).astype(np.float32); q /= np.linalg.norm(q, axis=1, keepdims=True)
    qv = np.concatenate([q, np.zeros((3, 64), np.float32)], 1)
    with LibraryStore.open(home, "default", read_only=True) as store:
        hits = store.search(qv, 3)
    np.save(out / "queries.npy", qv)
    import json
    (out / "expected.json").write_text(json.dumps(
        [[[round(h.score, 6), os.path.basename(h.video_path), h.start_s, h.end_s] for h in row] for row in hits], indent=1))
print(sorted(p.name for p in out.rglob("*")))
