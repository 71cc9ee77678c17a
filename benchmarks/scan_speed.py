"""Selective-scan speed: the fused bidirectional Triton scan vs the chunked backend, against the HBM floor.

    python benchmarks/scan_speed.py --out benchmarks/results              # the grid below (GPU)
    python benchmarks/scan_speed.py --profile                             # + torch.profiler of the encoder

Shapes are VideoMamba's (E = 2 * embed_dim = 384 / 768 / 1152 for Ti / S / M, N = 16, L = 1 + 196 * frames,
batch 32), bf16 inputs laid out as the mixer makes them (token-major: (B, L, E) memory seen as (B, E, L),
z a view into the in_proj output). Each configuration runs both directions (forward and reverse) and sums them,
as BiMambaMixer does: the triton backend in one launch, the chunked backend as two calls.

HBM floor: the bytes that must be read and written once - per direction u, delta, z, B, C in and y out in
their dtypes (forward); the backward adds gy, u, delta, z, B, C in and du, d_delta, dz, dB, dC out - divided by
the device copy bandwidth measured here with a large ``torch.empty().copy_()`` (bytes read + written).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_fn, write_result  # noqa: E402

from vtr.encoders.selective_scan import ScanDirection, selective_scan_chunked  # noqa: E402

MODELS = {"tiny": 192, "small": 384, "middle": 576}  # embed_dim; E = 2 * embed_dim
NSTATE = 16


def copy_bandwidth(device: torch.device, nbytes: int = 2 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device, iters=20, warmup=3)
    return 2 * nbytes / t["median_s"]


def make_inputs(batch: int, channels: int, length: int, device: torch.device, grad: bool, seed: int = 0):
    """Both directions' scan inputs in the mixer's layout and dtypes; returns (leaf tensors, flat args)."""
    g = torch.Generator(device=device).manual_seed(seed)
    bf = torch.bfloat16
    r = math.ceil(channels / 2 / 16)

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, device=device) * scale + shift).to(bf)

    leaves = {
        "xz": rnd(batch, length, 2 * channels),
        "u_f": rnd(batch, length, channels), "u_b": rnd(batch, length, channels),
        "d_f": rnd(batch, length, channels, shift=-1.0), "d_b": rnd(batch, length, channels, shift=-1.0),
        "dbl_f": rnd(batch, length, r + 2 * NSTATE), "dbl_b": rnd(batch, length, r + 2 * NSTATE),
    }
    a_log = torch.log(torch.arange(1, NSTATE + 1.0, device=device)).repeat(channels, 1)
    for k in ("f", "b"):
        leaves[f"A_{k}"] = -torch.exp(a_log + 0.1 * torch.randn(channels, NSTATE, generator=g, device=device))
        leaves[f"D_{k}"] = torch.randn(channels, generator=g, device=device)
        leaves[f"bias_{k}"] = 0.5 * torch.randn(channels, generator=g, device=device)
    if grad:
        for t in leaves.values():
            t.requires_grad_()

    def args():
        z = leaves["xz"].transpose(1, 2)[:, channels:]
        out = []
        for k in ("f", "b"):
            dbl = leaves[f"dbl_{k}"]
            out += [leaves[f"u_{k}"].transpose(1, 2), leaves[f"d_{k}"].transpose(1, 2), leaves[f"A_{k}"],
                    dbl[..., r:r + NSTATE].transpose(1, 2), dbl[..., r + NSTATE:].transpose(1, 2),
                    leaves[f"D_{k}"], leaves[f"bias_{k}"]]
        return out + [z]

    return leaves, args


def run_triton(args):
    from vtr.encoders.triton_scan import bidirectional_selective_scan

    a = args()
    return bidirectional_selective_scan(ScanDirection(*a[:7]), ScanDirection(*a[7:14]), a[14])


def run_chunked(args):
    a = args()
    return (selective_scan_chunked(ScanDirection(*a[:7]), a[14])
            + selective_scan_chunked(ScanDirection(*a[7:14]), a[14], reverse=True))


def floor_bytes(batch: int, channels: int, length: int) -> tuple[int, int]:
    """(forward, forward + backward) bytes that must move, both directions, bf16 tensors."""
    ble, bln = batch * length * channels * 2, batch * length * NSTATE * 2
    fwd = 2 * (4 * ble + 2 * bln)  # per direction: u, delta, z in, y out; B, C in
    bwd = 2 * (7 * ble + 4 * bln)  # per direction: gy, u, delta, z in, du, d_delta, dz out; B, C in, dB, dC out
    return fwd, fwd + bwd


def bench_scan(args, device, bw, backends, frames_list, models, chunked_frames, budget,
               modes=("fwd", "fwd+bwd"), quiet=False) -> list[dict]:
    rows = []
    for frames in frames_list:
        length = 1 + 196 * frames
        for model in models:
            channels = 2 * MODELS[model]
            fb, fbb = floor_bytes(args.batch, channels, length)
            for backend in backends:
                if backend == "chunked" and frames not in chunked_frames:
                    continue
                fn = run_triton if backend == "triton" else run_chunked
                for mode in modes:
                    torch.cuda.empty_cache()
                    row = {"model": model, "E": channels, "frames": frames, "L": length, "batch": args.batch,
                           "backend": backend, "mode": mode}
                    try:
                        leaves, make = make_inputs(args.batch, channels, length, device, grad=mode != "fwd")
                        if mode == "fwd":
                            def step(fn=fn, make=make):
                                with torch.no_grad():
                                    fn(make)
                        else:
                            gy = torch.randn(args.batch, length, channels, device=device).to(torch.bfloat16)
                            gy = gy.transpose(1, 2)  # token-major, as out_proj's backward hands it over

                            def step(fn=fn, make=make, leaves=leaves, gy=gy):
                                fn(make).backward(gy)
                                for t in leaves.values():
                                    t.grad = None
                        slow = backend == "chunked"
                        t = time_fn(step, device, iters=3 if slow else 10, warmup=1 if slow else 2,
                                    budget_s=budget)
                    except torch.OutOfMemoryError:
                        row["status"] = "oom"
                        rows.append(row)
                        continue
                    nbytes = fb if mode == "fwd" else fbb
                    floor_s = nbytes / bw
                    row.update(status="ok", ms=1e3 * t["median_s"], floor_ms=1e3 * floor_s,
                               x_floor=t["median_s"] / floor_s, achieved_gbps=nbytes / t["median_s"] / 1e9,
                               iters=t["iters"])
                    rows.append(row)
                    if not quiet:
                        print(f"{model:6s} T={frames:2d} L={length:5d} {backend:7s} {mode:7s} "
                              f"{row['ms']:9.2f} ms  floor {row['floor_ms']:7.2f} ms  x{row['x_floor']:.2f}",
                              flush=True)
                    del leaves
    return rows


def sweep_tiles(args, device, bw) -> list[dict]:
    """Time tile shapes (T, ES, EL) of the forward and backward kernels on a few shapes."""
    from vtr.encoders import triton_scan as ts

    names = ("FWD_T", "FWD_ES", "FWD_EL", "BWD_T", "BWD_ES", "BWD_EL", "FWD_MAXNREG", "BWD_MAXNREG", "FWD_EL_AUTO")
    default = {k: getattr(ts, k) for k in names}
    rows = []
    for kind, variants in (("fwd", args.fwd_tiles), ("bwd", args.bwd_tiles)):
        for variant in variants:
            t, es, el, *rest = (int(v) for v in variant.split(","))
            maxnreg = rest[0] if rest else None
            for k, v in default.items():
                setattr(ts, k, v)
            prefix = "FWD" if kind == "fwd" else "BWD"
            setattr(ts, f"{prefix}_T", t)
            setattr(ts, f"{prefix}_ES", es)
            setattr(ts, f"{prefix}_EL", el)
            setattr(ts, f"{prefix}_MAXNREG", maxnreg)
            ts.FWD_EL_AUTO = False
            for model, frames in (("tiny", 16), ("middle", 16)):
                got = bench_scan(args, device, bw, ["triton"], [frames], [model], [], args.budget,
                                 modes=("fwd",) if kind == "fwd" else ("fwd+bwd",), quiet=True)
                for row in got:
                    row.update(kernel=kind, T_chunk=t, ES=es, EL=el, maxnreg=maxnreg)
                    print(f"sweep {kind} T={t:2d} ES={es} EL={el:2d} maxnreg={maxnreg} {model:6s} frames={frames} "
                          f"{row.get('ms', float('nan')):8.2f} ms", flush=True)
                rows += got
    for k, v in default.items():
        setattr(ts, k, v)
    from vtr.encoders import triton_conv as tconv

    conv_default = (tconv.CONV_BL, tconv.CONV_BE)
    for variant in args.conv_tiles:
        tconv.CONV_BL, tconv.CONV_BE = (int(v) for v in variant.split(","))
        for model, frames in (("tiny", 16), ("middle", 16)):
            channels, length = 2 * MODELS[model], 1 + 196 * frames
            xz = torch.randn(args.batch, length, 2 * channels, device=device).to(torch.bfloat16)
            x = xz.transpose(1, 2)[:, :channels]
            w = [torch.randn(channels, 1, 4, device=device) for _ in range(2)]
            b = [torch.randn(channels, device=device) for _ in range(2)]
            with torch.no_grad():
                t = time_fn(lambda x=x, w=w, b=b: tconv.bidirectional_causal_conv1d(x, w[0], b[0], w[1], b[1]),
                            device, iters=20, warmup=2)
            nbytes = 3 * args.batch * length * channels * 2  # x in, u_f and u_b out
            row = {"kernel": "conv", "BL": tconv.CONV_BL, "BE": tconv.CONV_BE, "model": model, "frames": frames,
                   "ms": 1e3 * t["median_s"], "floor_ms": 1e3 * nbytes / bw}
            rows.append(row)
            print(f"sweep conv BL={tconv.CONV_BL} BE={tconv.CONV_BE} {model:6s} frames={frames} {row['ms']:8.3f} ms "
                  f"(floor {row['floor_ms']:.3f})", flush=True)
    tconv.CONV_BL, tconv.CONV_BE = conv_default
    return rows


def profile_encoder(device: torch.device, name: str, frames: int, batch: int, train: bool, top: int = 25) -> dict:
    """torch.profiler over a few encoder steps (triton backend, bf16 autocast): kernels by CUDA time."""
    from torch.profiler import ProfilerActivity, profile

    from vtr.encoders.videomamba import create_video_encoder

    torch.manual_seed(0)
    model = create_video_encoder(name, num_frames=frames, scan_backend="triton").to(device).train(train)
    video = torch.randn(batch, frames, 3, 224, 224, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(video).pooled
        if train:
            out.float().square().mean().backward()
            model.zero_grad(set_to_none=True)

    ctx = torch.enable_grad() if train else torch.inference_mode()
    with ctx:
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
    events = prof.key_averages()
    rows = []
    total = sum(e.device_time_total for e in events if e.device_time_total > 0) or 1.0
    for e in sorted(events, key=lambda e: e.device_time_total, reverse=True):
        if e.device_time_total <= 0:
            continue
        rows.append({"name": e.key[:120], "cuda_ms_per_step": e.device_time_total / 1e3 / 3,
                     "share": e.device_time_total / total, "calls_per_step": e.count / 3})
    print(f"\nprofile {name} frames={frames} batch={batch} {'train' if train else 'inference'}: "
          f"{total / 1e3 / 3:.1f} ms of kernels per step")
    for r in rows[:top]:
        print(f"  {r['cuda_ms_per_step']:8.2f} ms {100 * r['share']:5.1f}%  x{r['calls_per_step']:5.0f}  {r['name']}")
    return {"model": name, "frames": frames, "batch": batch, "train": train,
            "kernel_ms_per_step": total / 1e3 / 3, "top": rows[:top]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--backends", nargs="+", default=["triton", "chunked"])
    ap.add_argument("--chunked-frames", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per configuration")
    ap.add_argument("--profile", action="store_true", help="also profile encoder steps with torch.profiler")
    ap.add_argument("--no-scan", action="store_true", help="skip the scan grid (profile only)")
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"])
    ap.add_argument("--sweep", action="store_true", help="time tile shapes of the kernels (--fwd-tiles, --bwd-tiles)")
    ap.add_argument("--fwd-tiles", nargs="*", default=["4,1,32", "4,1,16", "4,1,32,128", "4,1,32,168", "2,1,32"],
                    help="T,ES,EL[,maxnreg] variants of the forward kernel")
    ap.add_argument("--bwd-tiles", nargs="*", default=["4,1,32", "4,2,16", "8,1,16", "2,2,16", "4,1,32,128"],
                    help="T,ES,EL[,maxnreg] variants of the backward kernel")
    ap.add_argument("--conv-tiles", nargs="*", default=["32,64", "64,64", "16,128", "32,128"],
                    help="BL,BE variants of the conv kernel")
    ap.add_argument("--profiles", nargs="*", default=["videomamba_tiny:16:infer", "videomamba_tiny:64:infer",
                                                      "videomamba_middle:8:train"])
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="scan_speed")
    args = ap.parse_args()
    device = torch.device("cuda")
    bw = copy_bandwidth(device)
    print(f"device copy bandwidth {bw / 1e12:.2f} TB/s (read + write)", flush=True)
    payload = {"settings": vars(args), "copy_bandwidth_Bps": bw}
    if not args.no_scan:
        payload["results"] = bench_scan(args, device, bw, args.backends, args.frames, args.models,
                                        args.chunked_frames, args.budget, modes=args.modes)
        write_result(args.out, args.tag, payload)
    if args.sweep:
        payload["sweep"] = sweep_tiles(args, device, bw)
        write_result(args.out, args.tag, payload)
    if args.profile:
        payload["profiles"] = []
        for spec in args.profiles:
            name, frames, mode = spec.split(":")
            payload["profiles"].append(profile_encoder(device, name, int(frames), args.batch, train=mode == "train"))
            write_result(args.out, args.tag, payload)
    print(f"wrote {Path(args.out) / (args.tag + '.json')}")


if __name__ == "__main__":
    main()
