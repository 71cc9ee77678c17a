"""SASS instruction counts of the scan kernels' loops for sm_90, compiled offline (no GPU needed, triton installed).

    python benchmarks/kernel_sass.py bwd                 # backward kernel at the default tiles
    python benchmarks/kernel_sass.py fwd --tiles 4,2,32  # forward kernel with T, ES, EL = 4, 2, 32

Compiles ``_scan_fwd_kernel`` / ``_scan_bwd_kernel`` as the bidirectional mixer launches them (bf16 token-major
tensors, D, z and bias on, softplus, fast math) with Triton's bundled ptxas, disassembles with its nvdisasm and
prints, for every loop (a backward branch), the instruction count per iteration and the commonest opcodes. Divide by
the (step, channel, state) elements a thread handles per iteration (T * ES * N * EL / 32) for instructions per
element. Used in notes/issue-13.md to find what the backward spends its instructions on.
"""

from __future__ import annotations

import argparse
import collections
import re

from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler import compile as triton_compile
from triton.tools.disasm import get_sass

from vtr.encoders import triton_scan as ts

BF16, F32 = "*bf16", "*fp32"


def _signature(fn, pointers: dict[str, str], constexprs: dict) -> dict[str, str]:
    return {p.name: "constexpr" if (p.is_constexpr or p.name in constexprs) else pointers.get(p.name, "i32")
            for p in fn.params}


def _common() -> dict:
    return dict(NDIR=2, REV0=False, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, NP=16, FAST=True,
                EVEN_E=True)


def compile_bwd():
    fn = ts._scan_bwd_kernel
    ptr = {n: BF16 for n in ("gy_ptr", "z_ptr", "S_ptr", "dz_ptr")} | {"carry_ptr": F32, "scratch_ptr": F32}
    for d in "01":
        ptr |= {n + d: BF16 for n in ("u", "dl", "du", "ddl")}
        ptr |= {n + d: F32 for n in ("A", "B", "C", "D", "bias", "dA", "dB", "dC", "dD", "dbias")}
    consts = _common() | dict(KSUB=ts.SEG // ts.BWD_T, T=ts.BWD_T, ES=ts.BWD_ES, EL=ts.BWD_EL, NPART=ts.BWD_NPART)
    for n in ("sg_e", "sz_e", "sS_e", "sdz_e", "su0_e", "sd0_e", "sdu0_e", "sdd0_e", "su1_e", "sd1_e", "sdu1_e",
              "sdd1_e"):
        consts[n] = 1  # token-major (B, L, E) memory: unit channel stride, which Triton specialises
    src = ASTSource(fn=fn, signature=_signature(fn, ptr, consts), constexprs=consts)
    return triton_compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": max(1, ts.BWD_EL // 32)})


def compile_fwd(store_grad: bool = False):
    fn = ts._scan_fwd_kernel
    ptr = {"out_ptr": BF16, "S_ptr": BF16, "z_ptr": BF16, "carry_ptr": F32, "flag_ptr": "*i32"}
    for d in "01":
        ptr |= {n + d: BF16 for n in ("u", "dl")} | {n + d: F32 for n in ("A", "B", "C", "D", "bias")}
    consts = _common() | dict(STORE_CARRY=store_grad, STORE_S=store_grad, KSUB=ts.SEG // ts.FWD_T, T=ts.FWD_T,
                                  ES=ts.FWD_ES, EL=ts.FWD_EL)
    for n in ("so_e", "sz_e", "su0_e", "sd0_e", "su1_e", "sd1_e"):
        consts[n] = 1
    src = ASTSource(fn=fn, signature=_signature(fn, ptr, consts), constexprs=consts)
    return triton_compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": max(1, ts.FWD_EL // 32)})


def loop_histograms(sass: str) -> list[tuple[str, int, collections.Counter]]:
    """(label, instructions, opcode counts) of every loop body: a label up to a branch back to it."""
    lines = sass.splitlines()
    labels = {line.rstrip(":"): i for i, line in enumerate(lines) if re.match(r"^\w+:$", line)}

    def opcode(line: str) -> str | None:
        m = re.match(r"^[^\t]+\t(@!?U?P\w+\s+)?([A-Z0-9_.]+)", line)
        return m.group(2).split(".")[0] if m else None

    loops = []
    for i, line in enumerate(lines):
        m = re.search(r"BRA (\w+);", line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            counts = collections.Counter(op for op in map(opcode, lines[labels[m.group(1)]: i + 1]) if op)
            loops.append((m.group(1), sum(counts.values()), counts))
    return loops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel", choices=["fwd", "fwd-grad", "bwd"])
    ap.add_argument("--tiles", default=None, help="T,ES,EL of that kernel (default: triton_scan's constants)")
    args = ap.parse_args()
    if args.tiles:
        t, es, el = (int(v) for v in args.tiles.split(","))
        if args.kernel == "bwd":
            ts.BWD_T, ts.BWD_ES, ts.BWD_EL = t, es, el
        else:
            ts.FWD_T, ts.FWD_ES, ts.FWD_EL = t, es, el
    kernel = compile_bwd() if args.kernel == "bwd" else compile_fwd(args.kernel == "fwd-grad")
    t, es, el = (ts.BWD_T, ts.BWD_ES, ts.BWD_EL) if args.kernel == "bwd" else (ts.FWD_T, ts.FWD_ES, ts.FWD_EL)
    per_thread = t * es * 16 * el // 32
    print(f"{args.kernel}: T, ES, EL = {t}, {es}, {el}; {per_thread} (step, channel, state) elements per thread "
          "per loop iteration")
    for label, total, counts in loop_histograms(get_sass(kernel.asm["cubin"])):
        if total > 20:
            top = ", ".join(f"{op} {n}" for op, n in counts.most_common(12))
            print(f"loop {label}: {total} instructions ({total / per_thread:.1f} per element): {top}")


if __name__ == "__main__":
    main()
