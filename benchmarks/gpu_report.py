"""vtr against its GPU anchors, in one run (issue 13): scan vs mamba-ssm's CUDA kernel, encoders vs attention ViTs,
CUDA-graph replay at small batches, training steps.

    python benchmarks/gpu_report.py --mamba-sdist sdist/mamba_ssm-2.3.2.post1.tar.gz --out $OUT
    python benchmarks/gpu_report.py --sections scan encoder      # a subset

Sections (all bf16, 224x224, timed with CUDA events, median after warm-up):

- ``scan``: vtr's fused bidirectional scan (one launch, gated sum) against two calls of mamba-ssm 2.3.2's CUDA
  ``selective_scan`` (the official VideoMamba path; built here for sm_90 from the PyPI sdist, as
  ``shared/anchors/yardstick.py`` does; its flips not counted), forward and forward+backward, per layer, at
  VideoMamba Ti/S/M widths and 8/16/32/64 frames (batch 32; M at 64 frames: 16), plus their agreement at 8 frames.
- ``encoder``: clips/s and peak memory of VideoMamba Ti/S/M (default backend) against joint space-time attention
  ViT Ti/S/B (PyTorch SDPA), batch 32, 8/16/32/64 frames, inference.
- ``graph``: eager vs :class:`vtr.encoders.cuda_graph.GraphedForward` at batches 1/4/32, 8 frames.
- ``train``: one step (fwd + bwd + fused AdamW, 8 frames, batch 32) of the VideoMamba-M encoder, of the full
  ``videomamba_m16_umt`` (VTC + VTM + MLM, random weights) and of ViT-B.
- ``profile``: torch.profiler table of the VideoMamba-M train step and inference (8 frames, batch 32).
- ``seg``: the scan at SEG = 64 / 32 / 16 (steps between the states the forward keeps for the backward); the fastest
  fwd+bwd at M / 8 frames is kept for the sections after it (``scan_constants`` in the JSON says which ran).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_vit import create_attention_vit  # noqa: E402
from common import write_result  # noqa: E402

from vtr.encoders.selective_scan import ScanDirection  # noqa: E402
from vtr.encoders.videomamba import create_video_encoder  # noqa: E402

DEV = "cuda"
WIDTHS = {"Ti": 192, "S": 384, "M": 576}
MAMBA = {"Ti": "videomamba_tiny", "S": "videomamba_small", "M": "videomamba_middle"}
VITS = {"Ti": "vit_tiny", "S": "vit_small", "M": "vit_base"}  # ViT-B is UMT's tower, VideoMamba-M's peer


def log(*a) -> None:
    print(*a, flush=True)


def bench(fn: Callable[[], object], iters: int = 10, warm: int = 3) -> float:
    """Median milliseconds of ``fn`` (CUDA events) after ``warm`` calls."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[len(times) // 2]


def build_cuda_scan(sdist: str):
    """mamba-ssm's csrc/selective_scan compiled for sm_90 (the kernel the official VideoMamba calls)."""
    from torch.utils.cpp_extension import load

    root = "/tmp/mamba_sdist"
    with tarfile.open(sdist) as tf:
        tf.extractall(root, filter="data")
    src = [os.path.join(root, d, "csrc", "selective_scan") for d in os.listdir(root)][0]
    files = ["selective_scan.cpp"] + [f for f in sorted(os.listdir(src)) if f.endswith(".cu")]
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
    build = os.environ.get("SS_BUILD", "/tmp/ssbuild")  # kept between runs on a warm machine when outside the copy
    os.makedirs(build, exist_ok=True)
    flags = ["-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_OPERATORS__",
             "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_BFLOAT162_OPERATORS__",
             "-U__CUDA_NO_BFLOAT162_CONVERSIONS__"]
    return load(name="selective_scan_cuda", sources=[os.path.join(src, f) for f in files],
                extra_cflags=["-O3", "-std=c++17"],
                extra_cuda_cflags=["-O3", "-std=c++17", *flags, "--expt-relaxed-constexpr", "--expt-extended-lambda",
                                   "--use_fast_math", "-gencode", "arch=compute_90,code=sm_90", "--threads", "4"],
                extra_include_paths=[src], build_directory=build, verbose=False)


# ------------------------------------------------------------------------------------------------ scan


def scan_rows(ss, frames_list: list[int]) -> list[dict]:
    from vtr.encoders.triton_scan import bidirectional_selective_scan

    rows = []
    for name, d in WIDTHS.items():
        E, N = 2 * d, 16
        for T in frames_list:
            B, L = (32 if name != "M" or T <= 32 else 16), 1 + 196 * T
            g = torch.Generator(device=DEV).manual_seed(0)

            def rnd(*s, scale=1.0, g=g):
                return (torch.randn(*s, device=DEV, generator=g) * scale).to(torch.bfloat16)

            dirs = []
            for _ in range(2):
                dirs.append(ScanDirection(rnd(B, E, L), rnd(B, E, L, scale=0.5),
                                          -torch.exp(torch.rand(E, N, device=DEV, generator=g) * 2).float(),
                                          rnd(B, N, L), rnd(B, N, L), torch.randn(E, device=DEV, generator=g).float(),
                                          (torch.rand(E, device=DEV, generator=g) * -4).float()))
            z = rnd(B, E, L)
            row = {"model": name, "frames": T, "B": B, "L": L, "E": E}
            try:
                with torch.no_grad():
                    row["vtr_fwd_ms"] = bench(lambda dirs=dirs, z=z: bidirectional_selective_scan(dirs[0], dirs[1], z),
                                              iters=5)
                g_dirs = [d._replace(u=d.u.clone().requires_grad_(), delta=d.delta.clone().requires_grad_(),
                                     Bm=d.Bm.clone().requires_grad_(), Cm=d.Cm.clone().requires_grad_())
                          for d in dirs]
                zg = z.clone().requires_grad_()
                gy = rnd(B, E, L)

                def vtr_fb(g_dirs=g_dirs, zg=zg, gy=gy):
                    bidirectional_selective_scan(g_dirs[0], g_dirs[1], zg).backward(gy)

                row["vtr_fwdbwd_ms"] = bench(vtr_fb, iters=3, warm=2)
                if ss is not None:
                    def cuda_fwd(dirs=dirs, z=z):
                        return [ss.fwd(d.u, d.delta, d.A, d.Bm[:, None], d.Cm[:, None], d.D, z, d.delta_bias, True)
                                for d in dirs]

                    def cuda_fb(dirs=dirs, z=z, gy=gy):
                        for d in dirs:
                            out, x, *rest = ss.fwd(d.u, d.delta, d.A, d.Bm[:, None], d.Cm[:, None], d.D, z,
                                                   d.delta_bias, True)
                            ss.bwd(d.u, d.delta, d.A, d.Bm[:, None], d.Cm[:, None], d.D, z, d.delta_bias, gy, x, out,
                                   None, True, False)

                    row["cuda2x_fwd_ms"] = bench(cuda_fwd, iters=5)
                    row["cuda2x_fwdbwd_ms"] = bench(cuda_fb, iters=3, warm=2)
                    row["fwd_speedup"] = row["cuda2x_fwd_ms"] / row["vtr_fwd_ms"]
                    row["fwdbwd_speedup"] = row["cuda2x_fwdbwd_ms"] / row["vtr_fwdbwd_ms"]
                    if T == 8:  # agreement: vtr's fused pair == CUDA forward + CUDA on the flipped sequence
                        with torch.no_grad():
                            y_v = bidirectional_selective_scan(dirs[0], dirs[1], z).float()
                        d = dirs[0]
                        yf = ss.fwd(d.u, d.delta, d.A, d.Bm[:, None], d.Cm[:, None], d.D, z, d.delta_bias,
                                    True)[2].float()
                        d = dirs[1]

                        def fl(t):
                            return t.flip(-1).contiguous()

                        yb = ss.fwd(fl(d.u), fl(d.delta), d.A, fl(d.Bm)[:, None], fl(d.Cm)[:, None], d.D, fl(z),
                                    d.delta_bias, True)[2].float().flip(-1)
                        ref = yf + yb
                        row["vtr_vs_cuda_max_rel"] = float((y_v - ref).abs().max() / ref.abs().max())
                row["bwd_over_fwd"] = (row["vtr_fwdbwd_ms"] - row["vtr_fwd_ms"]) / row["vtr_fwd_ms"]
            except Exception as exc:  # noqa: BLE001 - record and go on
                row["error"] = repr(exc)[:400]
            del dirs, z
            torch.cuda.empty_cache()
            log(json.dumps(row))
            rows.append(row)
    return rows


def seg_sweep(segs: list[int]) -> dict:
    """Steps between the states the forward stores for the backward (``triton_scan.SEG``): the backward's per-program
    scratch (one state per chunk of a segment) and the forward's carry tensor both scale with it. Times the fused
    scan (fwd without grad, fwd+bwd) at M / 8 frames and Ti / 64 frames; keeps the fastest for the sections after."""
    from vtr.encoders import triton_scan as ts

    rows, default = [], ts.SEG
    for seg in segs:
        ts.SEG = seg
        for name, T in (("M", 8), ("Ti", 64)):
            E, N, B, L = 2 * WIDTHS[name], 16, 32, 1 + 196 * T
            g = torch.Generator(device=DEV).manual_seed(0)

            def rnd(*sh, scale=1.0, g=g):
                return (torch.randn(*sh, device=DEV, generator=g) * scale).to(torch.bfloat16)

            dirs = [ScanDirection(rnd(B, E, L).requires_grad_(), rnd(B, E, L, scale=0.5).requires_grad_(),
                                  -torch.exp(torch.rand(E, N, device=DEV, generator=g) * 2).float(),
                                  rnd(B, N, L).requires_grad_(), rnd(B, N, L).requires_grad_(),
                                  torch.randn(E, device=DEV, generator=g).float(),
                                  (torch.rand(E, device=DEV, generator=g) * -4).float()) for _ in range(2)]
            z, gy = rnd(B, E, L).requires_grad_(), rnd(B, E, L)
            row = {"SEG": seg, "model": name, "frames": T, "B": B,
                   "carry_mib": round(2 * B * -(-L // seg) * N * E * 4 / 2**20, 1)}
            try:
                with torch.no_grad():
                    row["fwd_ms"] = bench(lambda dirs=dirs, z=z: ts.bidirectional_selective_scan(*dirs, z), iters=5)
                row["fwdbwd_ms"] = bench(lambda dirs=dirs, z=z, gy=gy: ts.bidirectional_selective_scan(*dirs, z)
                                         .backward(gy), iters=3, warm=2)
            except Exception as exc:  # noqa: BLE001
                row["error"] = repr(exc)[:300]
            log(json.dumps(row))
            rows.append(row)
            del dirs, z, gy
            torch.cuda.empty_cache()
    timed = [r for r in rows if r["model"] == "M" and "fwdbwd_ms" in r]
    best = min(timed, key=lambda r: r["fwdbwd_ms"])["SEG"] if timed else default
    ts.SEG = best
    return {"rows": rows, "chosen": best, "default_before": default}


# ------------------------------------------------------------------------------------------------ encoders


def make_encoder(kind: str, size: str, frames: int) -> torch.nn.Module:
    if kind == "vm":
        return create_video_encoder(MAMBA[size], num_frames=frames)
    return create_attention_vit(VITS[size], num_frames=frames)


def infer_bench(model: torch.nn.Module, frames: int, batch: int) -> dict:
    video = torch.randn(batch, frames, 3, 224, 224, device=DEV)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()

    def f():
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
            model(video)

    ms = bench(f, iters=5 if frames >= 32 else 10, warm=3)
    return {"clips_s": round(batch * 1000 / ms, 1), "ms": round(ms, 2),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def encoder_rows(frames_list: list[int], batch: int) -> list[dict]:
    rows = []
    for T in frames_list:
        row = {"frames": T, "B": batch}
        for kind in ("vm", "vit"):
            for size in WIDTHS:
                label = f"{kind}_{size.lower()}"
                m = None
                try:
                    m = make_encoder(kind, size, T).to(DEV).eval()
                    row[label] = infer_bench(m, T, batch)
                except Exception as exc:  # noqa: BLE001
                    row[label] = {"error": repr(exc)[:300]}
                del m
                torch.cuda.empty_cache()
        for size in WIDTHS:
            vm, vit = row.get(f"vm_{size.lower()}", {}), row.get(f"vit_{size.lower()}", {})
            if "clips_s" in vm and "clips_s" in vit:
                row[f"ratio_{size.lower()}"] = round(vm["clips_s"] / vit["clips_s"], 3)
        log(json.dumps(row))
        rows.append(row)
    return rows


def graph_rows(batches: list[int]) -> list[dict]:
    from vtr.encoders.cuda_graph import GraphedForward

    rows = []
    for size in ("Ti", "M"):
        model = make_encoder("vm", size, 8).to(DEV).eval()
        for batch in batches:
            video = torch.randn(batch, 8, 3, 224, 224, device=DEV)

            def fwd(v, model=model):
                with torch.autocast("cuda", torch.bfloat16):
                    return model(v).pooled

            row = {"model": size, "frames": 8, "B": batch}
            try:
                with torch.inference_mode():
                    eager_ms = bench(lambda video=video, fwd=fwd: fwd(video), iters=20)
                    graphed = GraphedForward(fwd, video)
                    graph_ms = bench(lambda video=video, graphed=graphed: graphed(video), iters=20)
                    ref = fwd(video).float()
                    diff = float((graphed(video).float() - ref).abs().max())
                row.update(eager_ms=round(eager_ms, 3), graph_ms=round(graph_ms, 3),
                           eager_clips_s=round(batch * 1000 / eager_ms, 1),
                           graph_clips_s=round(batch * 1000 / graph_ms, 1), speedup=round(eager_ms / graph_ms, 3),
                           max_abs_diff=diff)
                del graphed
            except Exception as exc:  # noqa: BLE001
                row["error"] = repr(exc)[:300]
                traceback.print_exc()
            log(json.dumps(row))
            rows.append(row)
        del model
        torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------------------ training


def _timed_step(step: Callable[[], None], batch: int) -> dict:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    ms = bench(step, iters=5, warm=2)
    return {"clips_s": round(batch * 1000 / ms, 1), "ms": round(ms, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def encoder_train(model: torch.nn.Module, batch: int) -> dict:
    video = torch.randn(batch, 8, 3, 224, 224, device=DEV)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            out = model(video)
            out = out.pooled if hasattr(out, "pooled") else out
            loss = out.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _timed_step(step, batch)


def umt_train(batch: int) -> dict:
    """The full videomamba_m16_umt (BERT-base text tower, fusion layers, MLM head): VTC + VTM + MLM."""
    from vtr.model.losses import LossWeights
    from vtr.model.registry import config_for
    from vtr.model.retrieval import build_model

    torch.manual_seed(0)
    model = build_model(config_for("videomamba_m16_umt", mlm_head=True), text_pretrained=False).to(DEV).train()
    # MLM masking reads only three token ids from the tokenizer (BERT's), whose package the device lacks
    model._tokenizer = SimpleNamespace(mask_token_id=103, pad_token_id=0, cls_token_id=101)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    video = torch.randn(batch, 8, 3, 224, 224, device=DEV)
    ids = torch.randint(1000, 30000, (batch, 32), device=DEV)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    idx = torch.arange(batch, device=DEV)
    weights = LossWeights(vtc=1.0, vtm=1.0, mlm=1.0, uta=0.0)

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            losses = model.training_losses(video, ids, mask, idx=idx, weights=weights)
        losses["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    out = _timed_step(step, batch)
    out["params_M"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    return out


def train_rows(batch: int, labels: list[str]) -> dict:
    res: dict = {}
    ctors = {"vm_m": lambda: make_encoder("vm", "M", 8), "vit_b": lambda: make_encoder("vit", "M", 8),
             "vm_s": lambda: make_encoder("vm", "S", 8), "vit_s": lambda: make_encoder("vit", "S", 8)}
    for label, ctor in ((k, v) for k, v in ctors.items() if k in labels):
        m = None
        try:
            torch.manual_seed(0)
            m = ctor().to(DEV).train()
            res[label] = encoder_train(m, batch)
        except Exception as exc:  # noqa: BLE001
            res[label] = {"error": repr(exc)[:300]}
        del m
        torch.cuda.empty_cache()
        log(label, json.dumps(res[label]))
    if "umt_m16" not in labels:
        return res
    try:
        res["umt_m16"] = umt_train(batch)
    except Exception as exc:  # noqa: BLE001
        res["umt_m16"] = {"error": repr(exc)[:400]}
        traceback.print_exc()
    log("umt_m16", json.dumps(res["umt_m16"]))
    torch.cuda.empty_cache()
    return res


def profile_rows(batch: int, top: int = 18) -> dict:
    """CUDA time per kernel of one VideoMamba-M train step and one inference forward (8 frames)."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    model = make_encoder("vm", "M", 8).to(DEV)
    video = torch.randn(batch, 8, 3, 224, 224, device=DEV)
    for mode in ("train", "infer"):
        model.train(mode == "train")

        def step(mode=mode):
            if mode == "train":
                with torch.autocast("cuda", torch.bfloat16):
                    loss = model(video).pooled.float().pow(2).mean()
                loss.backward()
                model.zero_grad(set_to_none=True)
            else:
                with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
                    model(video)

        for _ in range(2):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
        total = sum(e.device_time_total for e in events if e.device_time_total > 0 and e.count > 0
                    and not e.key.startswith(("ProfilerStep", "aten::", "autograd::")))
        rows = [{"kernel": e.key[:90], "calls": e.count, "ms": round(e.device_time_total / 1e3, 2)}
                for e in events[:top]]
        out[mode] = {"total_kernel_ms": round(total / 1e3, 1), "top": rows}
        log(mode, json.dumps(out[mode])[:3000])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mamba-sdist", default=None, help="mamba_ssm sdist (.tar.gz) to build the CUDA anchor from")
    ap.add_argument("--sections", nargs="+", default=["scan", "encoder", "graph", "train", "profile"],
                    help="any of: seg scan encoder graph train profile (run in this order)")
    ap.add_argument("--train", nargs="+", default=["vm_m", "vit_b", "vm_s", "vit_s", "umt_m16"])
    ap.add_argument("--segs", nargs="+", type=int, default=[64, 32, 16], help="SEG values for the seg section")
    ap.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--graph-batches", nargs="+", type=int, default=[1, 4, 32])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--wait-for", default=None, help="after the CUDA build, wait (<= 300 s) until this file exists "
                    "(device_run.sh runs the GPU tests meanwhile)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="gpu_report")
    args = ap.parse_args()

    res: dict = {"settings": vars(args)}

    def save() -> None:
        from vtr.encoders import triton_scan as ts

        res["scan_constants"] = {k: getattr(ts, k) for k in ("SEG", "FWD_T", "FWD_ES", "FWD_EL", "BWD_T", "BWD_ES",
                                                             "BWD_EL", "BWD_NPART")}
        write_result(args.out, args.tag, res)

    ss = None
    if "scan" in args.sections and args.mamba_sdist:
        t0 = time.time()
        try:
            ss = build_cuda_scan(args.mamba_sdist)
            res["cuda_scan_build_s"] = round(time.time() - t0, 1)
        except Exception as exc:  # noqa: BLE001
            res["cuda_scan_build_error"] = repr(exc)[:2000]
            traceback.print_exc()
        log("mamba-ssm CUDA scan:", res.get("cuda_scan_build_s", "build failed"))
    if args.wait_for:
        t0 = time.time()
        while not os.path.exists(args.wait_for) and time.time() - t0 < 300:
            time.sleep(1)
        res["waited_for_tests_s"] = round(time.time() - t0, 1)
    for section in args.sections:
        t0 = time.time()
        if section == "seg":
            res["seg_sweep"] = seg_sweep(args.segs)
        elif section == "scan":
            res["scan"] = scan_rows(ss, args.frames)
        elif section == "encoder":
            res["encoder"] = encoder_rows(args.frames, args.batch)
        elif section == "graph":
            res["graph"] = graph_rows(args.graph_batches)
        elif section == "train":
            res["train_step_8f"] = train_rows(args.batch, args.train)
        elif section == "profile":
            res["profile_m_8f"] = profile_rows(args.batch)
        res.setdefault("section_s", {})[section] = round(time.time() - t0, 1)
        save()
    log(f"wrote {Path(args.out) / (args.tag + '.json')}")


if __name__ == "__main__":
    main()
