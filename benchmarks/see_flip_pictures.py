"""Pictures of the images where two rows of a see_real_shapes run disagree most (e.g. one pose hypothesis vs four).

    python benchmarks/see_flip_pictures.py --eval OUT_DIR --test /work/renders/test128 --category bathtub \
        --variants full_1 full [--seed 0 --per-category 12] [--max 6] --out flips_bathtub.png

Reads OUT_DIR/predictions_<category>.json of ``benchmarks/see_real_shapes.py`` (run with the same
``--seed`` / ``--per-category``, so the same images are drawn), scores every image's PCK@0.1 α_img
per variant, and draws the ``--max`` images with the largest difference between the two variants:
per image, the first variant's keypoints, the second's, and the true visible keypoints (only ids
visible in the truth, each in its semantic colour, so the same colour should sit on the same
place). Prints one line per drawn image: name, the two PCKs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from see_real_shapes import annotation, picture  # noqa: E402

from kpengine.image.renders import load_render_views  # noqa: E402
from kpengine.render.overlay import save_png, tile  # noqa: E402


def image_pck(ann: dict, pred: dict, alpha: float = 0.1) -> float:
    """Share of the visible true keypoints of one image within ``alpha`` x the longer image side."""
    thr = alpha * max(ann["image_width"], ann["image_height"])
    ok = []
    for sid, uv, vis in zip(ann["kps_ids"], ann["kps"], ann["kps_visible"]):
        if vis:
            q = pred.get(str(sid))
            ok.append(q is not None and float(np.hypot(q[0] - uv[0], q[1] - uv[1])) <= thr)
    return float(np.mean(ok)) if ok else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True, help="output folder of benchmarks/see_real_shapes.py")
    ap.add_argument("--test", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--variants", nargs=2, default=["full_1", "full"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-category", type=int, default=12)
    ap.add_argument("--max", type=int, default=6)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    items = load_render_views(args.test, args.category)
    if args.per_category < len(items):
        pick = np.sort(np.random.default_rng(args.seed).choice(len(items), args.per_category, replace=False))
        items = [items[i] for i in pick]
    preds = json.loads((Path(args.eval) / f"predictions_{args.category}.json").read_text())
    a, b = args.variants
    scored = []
    for it in items:
        ann = annotation(it)
        pa, pb = image_pck(ann, preds[a][it.name]), image_pck(ann, preds[b][it.name])
        scored.append((abs(pb - pa), pa, pb, it))
    scored.sort(key=lambda x: -x[0])
    tiles = []
    for _, pa, pb, it in scored[: args.max]:
        kp = it.annotation["keypoints"]
        seen = {str(s): uv for s, uv, vis in zip(kp["semantic_ids"], kp["uv"], kp["visible"]) if vis}
        for v in (a, b):
            tiles.append(picture(it.image, {k: preds[v][it.name][k] for k in seen if k in preds[v][it.name]}))
        tiles.append(picture(it.image, seen))
        print(f"{it.name}: {a} {pa:.2f}  {b} {pb:.2f}")
    save_png(args.out, tile(tiles, 6))


if __name__ == "__main__":
    main()
