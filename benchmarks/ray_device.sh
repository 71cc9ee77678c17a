#!/usr/bin/env bash
# `vtr index --engine ray` against the local engine on one CUDA host (issue 17), from the repo root:
#   bash benchmarks/ray_device.sh [ray_index_speed.py ARGS...]
# The device image lacks Ray, FAISS, PyAV and SQLAlchemy, and their wheels exceed what one call can carry, so
# .dev-ray/ holds them unpacked and xz-compressed (ray.tar.xz: Ray without its Java jars, RLlib, Serve, LLM and
# dashboard client; deps.tar.xz: faiss-cpu, PyAV, SQLAlchemy), the vtr wheel and the MiniLM tokenizer files
# (benchmarks/pack_minilm.sh's .minilm_vocab). Decoding uses PyAV there (decord did not fit the carry limit):
# both engines decode with the same backend, so the ratio holds; absolute videos/s are PyAV's.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
repo=$PWD
mkdir -p "$OUT" /tmp/site
for t in .dev-ray/*.tar.xz; do tar -C /tmp/site -xJf "$t" || exit 1; done
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .dev-ray/*.whl || exit 1
export PYTHONPATH=/tmp/site:$repo/.dev-ray/minilm_vocab PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# from /tmp: the repo's own vtr/ (without the mapped encoders/, index/, cli/) must not shadow the installed wheel
cd /tmp && python3 -c "import ray, faiss, av, sqlalchemy, vtr.index.store; print('ray', ray.__version__)" || exit 1
python3 "$repo/benchmarks/ray_index_speed.py" --out "$OUT" "$@" 2>&1 | tee "$OUT/ray_index_speed.log"
