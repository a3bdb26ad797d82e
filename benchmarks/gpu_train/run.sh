#!/usr/bin/env bash
# One call on a lent GPU: continue the shipped model for a few minutes, bring the weights back.
#
#   python benchmarks/gpu_train/pack_te.py                 # here, once: .carry/minilm-fp16
#   device run: bash benchmarks/gpu_train/run.sh "$OUT" [key=value ...]   carry: [".carry"]
#
# Trains benchmarks/gpu_train/train.yaml (CFG=... for another) with the key=value overrides
# given, stops at its time_limit_minutes, and writes OUT/pipeline (float16, ~35 MB, naming
# the packaged MiniLM), OUT/log.jsonl, OUT/config.yaml and OUT/train.log. Judge the weights
# here with `studio eval shapes --generate --model OUT/pipeline ...` before shipping them.
# Runs on a CPU too (slowly; tests/test_gpu_train.py runs its pieces at a tiny scale).
set -eo pipefail
OUT=${1:-${OUT:-runs/gpu_train}}
shift || true
CFG=${CFG:-benchmarks/gpu_train/train.yaml}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -f .carry/minilm-fp16/config.json ] || { echo "no .carry/minilm-fp16: run pack_te.py and carry .carry" >&2; exit 4; }
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$OUT/train.log"
RUN=$(python3 -c "import sys; from train.config import DiTTrainConfig, load_config; print(load_config(DiTTrainConfig, sys.argv[1], sys.argv[2:]).output_dir)" "$CFG" "$@")
T0=$(date +%s)
# the whole log goes to OUT/train.log as it runs (a call cut short still brings it back)
python3 -m studio.cli train dit --config "$CFG" "$@" 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" \
  | tee -a "$OUT/train.log" | tail -60
echo "training, with its cache: $(( $(date +%s) - T0 )) s" | tee -a "$OUT/train.log"
python3 benchmarks/gpu_train/finish.py "$RUN" "$OUT" | tee -a "$OUT/train.log"
