#!/usr/bin/env bash
# The main job on generated sample data: make the dataset, print its statistics, fit and
# evaluate the mean-position template baseline, draw figures, then go from one photo to pixel
# semantics (`understand`, tiny training runs). Output in ${1:-demo_out}/.
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
# photo -> viewpoint, shape, pose, 2D keypoints and pixel semantics (paper section 4); tiny runs
$KP render-benchmark --data "$OUT/sample" --category chair --split train --views 12 --size 96 --out "$OUT/renders_train"
$KP render-benchmark --data "$OUT/sample" --category chair --split test --views 1 --size 192 --seed 1 \
  --out "$OUT/renders_test"
rm -rf "$OUT/runs"
for task in viewpoint silhouette; do
  $KP train --task $task --data "$OUT/renders_train" --category chair --out "$OUT/runs/$task" \
    --epochs 4 --batch-size 32 --lr 2e-3 --lr-schedule cosine
done
PHOTO=$(ls "$OUT"/renders_test/images/*.png | head -1)
# with the photo's mask; leave --mask out and the silhouette run predicts it (weak after 4 epochs)
$KP understand --image "$PHOTO" --mask "${PHOTO/images/masks}" --category chair --knowledge "$OUT/sample" \
  --runs "$OUT/runs/viewpoint" "$OUT/runs/silhouette" --out "$OUT/understand"
# the second shape route: the photo's own shape (2.5D sketches -> voxels -> mesh), tiny runs on
# render-views sets (they carry depth and normal maps); --shape both keeps the better fit to the mask
$KP render-views --data "$OUT/sample" --category chair --views-per-shape 8 --size 64 --out "$OUT/views_train"
$KP train --task sketch --data "$OUT/views_train" --category chair --out "$OUT/runs/sketch" \
  --epochs 6 --batch-size 16 --lr 2e-3 --lr-schedule cosine --config '{"size": 32, "widths": [16, 32, 64]}'
$KP train --task voxels --data "$OUT/views_train" --category chair --out "$OUT/runs/voxels" \
  --epochs 6 --batch-size 16 --lr 2e-3 --lr-schedule cosine \
  --config "{\"size\": 32, \"widths\": [16, 32, 64], \"shapes\": \"$OUT/sample\"}"
$KP understand --image "$PHOTO" --mask "${PHOTO/images/masks}" --category chair --knowledge "$OUT/sample" \
  --runs "$OUT/runs/sketch" "$OUT/runs/voxels" --shape reconstruct --out "$OUT/understand_reconstruct"
echo "figures and results in $OUT/ (understand: $OUT/understand/overlay.png, semantics.png;"
echo "  the reconstruction route: $OUT/understand_reconstruct/)"
