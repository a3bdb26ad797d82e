#!/usr/bin/env bash
# GPU check (BENCHMARKS.md, "A GPU check"): the training loop and storyboard generation on
# whatever device torch finds, at the shipped model's size, with a random text encoder of
# MiniLM's shape (benchmarks/gpu_smoke.py is the quicker check with tiny components).
#
#   bash benchmarks/gpu_check/run.sh [OUT]        # OUT default runs/gpu_check
#
# TE_SRC=FOLDER takes the text encoder's config and tokenizer from FOLDER (default: the
# installed MiniLM package). Writes OUT/train.log, OUT/log.jsonl (samples per second),
# OUT/gen.json (storyboard seconds) and the frames.
set -o pipefail
OUT=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
rm -rf /tmp/gpurun /tmp/te
python3 benchmarks/gpu_check/make_te.py /tmp/te $TE_SRC || exit 4
T0=$(date +%s)
python3 -m studio.cli train dit --config ${CFG:-benchmarks/gpu_check/train.yaml} 2>&1 \
  | tr '\r' '\n' | grep -v "it/s\]$" | tail -40 | tee "$OUT/train.log" || exit 5
echo "training, with its cache: $(( $(date +%s) - T0 )) s"
cp /tmp/gpurun/log.jsonl "$OUT/"
python3 benchmarks/gpu_check/generate.py "$OUT" /tmp/gpurun 2>&1 | tail -40 | tee "$OUT/gen.log"
