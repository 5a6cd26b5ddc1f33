#!/usr/bin/env bash
# Train (or resume) a shipped model with the `unimat` CLI, one piece at a time, and copy it into the package.
#
#   tools/pretrain.sh perov_5 60      # 60 more wall-clock minutes of training on one thread
#
# The run lives in runs/pretrain-<name>/ (fetch -> tensorize --crop-grid -> train). A fresh machine has no run
# folder: the committed checkpoint unimat_core/pretrained/<name>/last.pt (+ metrics.csv, config.json) is put back
# into it first, so training resumes where the last piece stopped, with the same data order. Afterwards the new
# checkpoint and log are copied back into the package; commit them. MODEL_CARD.md holds the model's numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: tools/pretrain.sh perov_5|carbon_24 MINUTES}
minutes=${2:?usage: tools/pretrain.sh perov_5|carbon_24 MINUTES}
bin=.venv/bin
campaign=pretrain-$name
root=${UNIMAT_RESULTS_ROOT:-runs}
ship=unimat_core/pretrained/$name
train=$root/$campaign/train
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect-pretrain}   # not the demo's database

"$bin/unimat" fetch --campaign "$campaign" --source "$name" >/dev/null
"$bin/unimat" tensorize --campaign "$campaign" --crop-grid >/dev/null
# --max-steps/--lr-decay-steps fixed so every piece continues one schedule; one torch thread, the other core stays free
args=(train --campaign "$campaign" --threads 1 --max-minutes "$minutes" --max-steps 1000000
      --lr-decay-steps 60000 --batch-size 64 --keep-every 2000)
if [ ! -f "$train/checkpoints/last.pt" ] && [ -f "$ship/last.pt" ]; then
  mkdir -p "$train/checkpoints"
  cp "$ship/last.pt" "$train/checkpoints/last.pt"
  cp "$ship/metrics.csv" "$ship/config.json" "$train/"
  # record what made the restored checkpoint (these very settings on this tensorized data), so the train
  # stage resumes it instead of stopping at an output with no provenance record
  "$bin/python" tools/adopt_checkpoint.py "${args[@]}"
fi
nice -n 5 "$bin/unimat" "${args[@]}"
mkdir -p "$ship"
cp "$train/checkpoints/last.pt" "$train/metrics.csv" "$train/config.json" "$ship/"
echo "copied $train/checkpoints/last.pt into $ship/ ($(du -h "$ship/last.pt" | cut -f1)); update MODEL_CARD.md and commit"
