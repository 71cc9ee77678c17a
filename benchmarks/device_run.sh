#!/usr/bin/env bash
# Run on a CUDA machine from the repo root, with a vtr wheel in .whl/ (built by `make wheel`):
#   bash benchmarks/device_run.sh [all|tests|report|encoder|scan|index|search|world|train_throughput|shapes|ddp] [ARGS...]
# `report` (issue 13): the GPU tests + benchmarks/gpu_report.py against mamba-ssm's CUDA scan, built from the sdist
# in sdist/ (MAMBA_SKIP_CUDA_BUILD=TRUE pip download --no-deps --no-build-isolation mamba-ssm==2.3.2.post1 -d sdist).
# (ARGS go to the benchmark script)
# Installs the wheel (no deps: torch/transformers/einops come from the machine), runs the GPU tests and
# the encoder benchmark; logs and JSON results go to $OUT (default benchmarks/results).
set -uo pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/vtr_site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/vtr_site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
what=${1:-all}; shift || true
if [[ $what == tests || $what == all ]]; then
  # conftest.py needs PyAV, which the device image lacks; these files need no fixtures from it.
  # Run from another folder: with `python -m pytest` the cwd comes first on sys.path, and the repo's own
  # vtr/ (which lacks the mapped encoders/) would shadow the installed wheel.
  repo=$PWD
  (cd /tmp && python3 -m pytest -q -p no:cacheprovider --noconftest --rootdir="$repo" -o addopts="" \
    "$repo/tests/test_selective_scan.py" "$repo/tests/test_videomamba.py" "$repo/tests/test_triton_scan.py" \
    "$repo/tests/test_triton_norm.py" 2>&1) \
    | tee "$OUT/gpu_tests.log" | tail -25
fi
if [[ $what == report ]]; then
  # the GPU tests run while mamba-ssm's CUDA scan compiles (CPU); the timings start once both are done
  repo=$PWD
  rm -f "$OUT/.tests_done"
  (cd /tmp && python3 -m pytest -q -p no:cacheprovider --noconftest --rootdir="$repo" -o addopts="" \
    "$repo/tests/test_selective_scan.py" "$repo/tests/test_videomamba.py" "$repo/tests/test_triton_scan.py" \
    "$repo/tests/test_triton_norm.py" > "$OUT/gpu_tests.log" 2>&1; touch "$OUT/.tests_done") &
  sdist=$(ls sdist/mamba_ssm-*.tar.gz 2>/dev/null | head -1)
  python3 benchmarks/gpu_report.py --out "$OUT" --wait-for "$OUT/.tests_done" ${sdist:+--mamba-sdist "$sdist"} "$@" \
    2>&1 | tee "$OUT/gpu_report.log"
  wait
  tail -25 "$OUT/gpu_tests.log"
fi
if [[ $what == scan || $what == all ]]; then
  # fused Triton scan vs chunked vs the HBM floor (+ torch.profiler of encoder steps with --profile)
  python3 benchmarks/scan_speed.py --out "$OUT" "$@" 2>&1 | tee "$OUT/scan_bench.log"
fi
if [[ $what == encoder || $what == all ]]; then
  python3 benchmarks/encoder_speed.py --out "$OUT" "$@" 2>&1 | tee "$OUT/encoder_bench.log"
fi
if [[ -d .devwhl ]]; then
  # Extra wheels the device image lacks (PyAV, faiss-cpu, SQLAlchemy, open_clip, ...) travel in .devwhl/.
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/vtr_site .devwhl/*.whl || exit 1
fi
# The packaged MiniLM (tokenizer + weights, fp16 to fit the carry limit) travels in .minilm/ (or .minilm_vocab/:
# tokenizer only, for runs with text_weights=random); built by benchmarks/pack_minilm.sh.
for d in .minilm .minilm_vocab; do [[ -d $d ]] && export PYTHONPATH=$PWD/$d:$PYTHONPATH; done
if [[ $what == world ]]; then  # ARGS: OUT_DIR NUM_VIDEOS
  python3 -c "import sys; from vtr.data.synth import generate_world as g; print(g(sys.argv[1], int(sys.argv[2]), seed=0,
workers=14, overwrite=True))" "$@"
fi
if [[ $what == train_throughput ]]; then
  python3 benchmarks/train_throughput.py --out "$OUT" "$@" 2>&1 | tee "$OUT/train_throughput.log"
fi
if [[ $what == ddp ]]; then  # a machine of several GPUs: DDP parity + a short multi-GPU run
  python3 benchmarks/ddp_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/ddp_check.log"
fi
if [[ $what == shapes ]]; then  # ARGS: train_shapes.py arguments
  python3 benchmarks/train_shapes.py --out "$OUT" "$@" 2>&1 | tee "$OUT/train_shapes.log"
fi
if [[ $what == index ]]; then
  python3 benchmarks/index_speed.py --out "$OUT" "$@" 2>&1 | tee "$OUT/index_bench.log"
fi
if [[ $what == search ]]; then
  python3 benchmarks/search_speed.py --gpu --out "$OUT" "$@" 2>&1 | tee "$OUT/search_bench.log"
fi
