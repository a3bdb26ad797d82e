#!/usr/bin/env bash
# The report's gate for a candidate pipeline: step 1 (validation) or 2 (held-out), judged into
# OUT; then `python experiments/dpo/summary.py OUT` prints its table.
#     bash experiments/dpo/gate.sh MODEL OUT 1|2
set -euo pipefail
model=$1 out=$2 step=$3
common=(--steps 12 --model "$model" --quiet)
if [ "$step" = 1 ]; then
  studio eval shapes "$out/val_shapes" --generate --samples 2 --seed 1000 \
    --suite evals/suites/shapes_val.jsonl "${common[@]}"
  for seed in 0 1 2; do
    studio eval storyboards "$out/val_storyboards_$seed" --generate --seed "$seed" \
      --suite evals/suites/storyboard_val.json "${common[@]}"
  done
else
  studio eval shapes "$out/heldout_shapes" --generate --samples 2 --seed 1000 "${common[@]}"
  studio eval storyboards "$out/heldout_storyboards_0" --generate --seed 0 "${common[@]}"
fi
