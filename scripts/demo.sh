#!/usr/bin/env bash
# The main job on generated sample data: make the dataset, print its statistics, fit and
# evaluate the mean-position template baseline, and draw figures. Output in ${1:-demo_out}/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
OUT=${1:-demo_out}
KP=.venv/bin/kpengine
mkdir -p "$OUT"
$KP sample-data "$OUT/sample" --overwrite
$KP stats --data "$OUT/sample" --json "$OUT/stats.json"
for task in correspondence saliency; do
  $KP baseline --data "$OUT/sample" --category chair --task $task --out "$OUT/template_$task.json"
  $KP evaluate --data "$OUT/sample" --category chair --split test --task $task \
    --predictions "$OUT/template_$task.json" --output "$OUT/results_$task.json" --png "$OUT/results_$task.png"
done
$KP show --data "$OUT/sample" --category chair --split test --out "$OUT/chair.png"
echo "figures and results in $OUT/"
