#!/usr/bin/env bash
# The 16-channel lineage up to dit_c16_context_blur (REPORT.md, "The storyboard step with
# blurred given frames"), in order, resumable: each step is skipped when its pipeline exists
# and otherwise resumed from its last checkpoint. Rerun the same command after a stop.
# From the shipped weights (runs/ empty) it takes about 4 h on 2 CPU cores:
#   bash experiments/elements_vae/lineage.sh            # logs in runs/<step>.log
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p runs

step() {  # step NAME COMMAND...: run COMMAND unless runs/NAME/$DONE exists
  local name=$1; shift
  if [[ -e "runs/$name/$DONE" ]]; then echo "$name: done"; return; fi
  echo "$name: $(date -u +%H:%M) $*"
  "$@" >>"runs/$name.log" 2>&1
}

DONE=final step vae_sprites_c16 studio train vae --config experiments/elements_vae/vae_sprites_c16.yaml
DONE=model_index.json step bridge_c16 python -m train.latent_bridge studio/default_model runs/vae_sprites_c16/final runs/bridge_c16
for name in elements image elements_wn elements_wn2 storyboard context_blur; do
  DONE=pipeline step "dit_c16_$name" studio train dit --config "experiments/elements_vae/dit_c16_$name.yaml"
done
echo "lineage complete: runs/dit_c16_context_blur/pipeline"
