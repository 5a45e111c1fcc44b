"""PCK@0.1 of the photo -> 2D keypoints pipeline on rendered held-out shapes, with ablations and timing.

    python benchmarks/see_pipeline.py --renders R_TEST --knowledge ROOT --category chair \
        --runs RUN_VIEWPOINT RUN_SILHOUETTE [--split train] [--limit N] --out OUT_DIR

R_TEST is a ``kpengine render-benchmark`` set of shapes *not* in the knowledge split (e.g. the
test split), so every image is of a held-out shape. Variants (each a row of OUT_DIR/pck.json):
``full`` (predicted mask, estimated viewpoint, retrieved shape, 20 refinement steps),
``gt_mask``, ``gt_mask_no_refine``, ``gt_mask_40_steps``, ``gt_mask_gt_view`` (ablations with
ground truth). PCK over the visible keypoints whose semantic id the fitted shape has; a missing
id counts as wrong. Also OUT_DIR/examples.png (first images: overlay of the full variant).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kpengine.image.pipeline import KnowledgeBase, Networks, overlay_picture, understand
from kpengine.io.benchmark2d import load_benchmark
from kpengine.metrics.pck2d import pck
from kpengine.render.cameras import Viewpoint

VARIANTS = {
    "full": {"mask": False},
    "gt_mask": {"mask": True},
    "gt_mask_no_refine": {"mask": True, "refine": False},
    "gt_mask_40_steps": {"mask": True, "steps": 40},
    "gt_mask_gt_view": {"mask": True, "view": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--renders", required=True)
    ap.add_argument("--knowledge", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from kpengine.image.renders import load_rendered

    _, anns = load_benchmark(args.renders)
    items = load_rendered(args.renders, args.limit)
    kb = KnowledgeBase.load(args.knowledge, args.category, args.split)
    held = {s.model_id for s in kb.shapes} & {it.annotation["model_id"] for it in items}
    if held:
        raise SystemExit(f"{len(held)} rendered shapes are in the knowledge split: not held out")
    nets = Networks.from_runs(args.runs, args.category, args.knowledge)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table, examples = {}, []
    for name in args.variants:
        v = VARIANTS[name]
        preds, secs, ious, vp_err = {}, [], [], []
        for it in items:
            vp = it.annotation["viewpoint"]
            view = Viewpoint(vp["azimuth"], vp["elevation"], 1.0, vp["theta"]) if v.get("view") else None
            t = time.perf_counter()
            u = understand(
                it.image, kb, nets, mask=it.mask if v["mask"] else None, viewpoint_override=view,
                refine=v.get("refine", True), steps=v.get("steps", 20),
            )  # fmt: skip
            secs.append(time.perf_counter() - t)
            ious.append(u.iou_refined)
            d = abs(((u.viewpoint["azimuth"] - vp["azimuth"]) + 180) % 360 - 180)
            vp_err.append(d)
            preds[it.name] = {k: p["uv"] for k, p in u.keypoints.items() if p["uv"] is not None}
            if name == "full" and len(examples) < 6:
                examples.append(overlay_picture(u))
        res = pck({k: anns[k] for k in preds}, preds)
        table[name] = {
            "pck": res.get(args.category, res.get("all")),
            "median_seconds": float(np.median(secs)),
            "mean_fitted_iou": float(np.mean(ious)),
            "median_network_azimuth_error": float(np.median(vp_err)),
            "images": len(items),
        }
        print(name, json.dumps(table[name]), flush=True)
        (out / f"predictions_{name}.json").write_text(json.dumps(preds))
    (out / "pck.json").write_text(json.dumps(table, indent=1))
    if examples:
        from kpengine.render.overlay import save_png, tile

        size = min(e.shape[0] for e in examples)
        save_png(out / "examples.png", tile([e[:size, :size] for e in examples], 3))


if __name__ == "__main__":
    main()
