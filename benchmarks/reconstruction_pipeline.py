"""The paper's ablations through the whole pipeline (issue 12; You et al. Tables 5 and 6): 2D PCK of
``understand`` on a seeded subset of held-out test-split renders, per category, for

* ``retrieve``: the retrieval route (the training shape whose surface best fits the silhouette at
  the estimated viewpoint: meshes where there are, else the closed surface of the cloud's 32³
  grid, ``pipeline.cloud_surface``);
* ``reconstruct``: the reconstruction route (2.5D sketches -> voxels -> mesh, keypoints of the
  nearest training shape moved onto it), viewpoint from the RGB crop;
* ``reconstruct_view_from_sketches``: the viewpoint read off the predicted 2.5D sketches (Table 5);
* ``true_sketches`` / ``true_shape`` / ``true_view``: the reconstruction route with the crop's
  ground-truth sketches, the test shape itself (its ground-truth 32³ grid through marching cubes,
  its own keypoints), or the true viewpoint (Table 6).

* ``reconstruct_hedge``: the reconstruction route with the re-placed cone's hedge ``--cone-hedge W,H`` (or
  ``none``: the runs averaged alike, the seventh pass's route) instead of ``understand``'s default
  ``pipeline.CONE_HEDGE`` (docs/reconstruction.md, eighth pass).

The object mask is the true one in every variant (no silhouette run is part of the comparison).
The viewpoint from RGB is the sketch run's head unless ``--viewpoint-run`` (one run) or
``--viewpoint-runs CATEGORY=RUN ...`` names viewpoint runs. Several voxels runs after the sketch run (e.g. the
default and a cone run) are averaged, as ``understand`` does.

    python benchmarks/reconstruction_pipeline.py --runs RUN_SKETCH RUN_VOXELS --test renders/test128 \\
        --knowledge ../shared/data/keypointnet --per-category 30 --out P.json --png P.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kpengine.data.dataset import KeypointNetDataset
from kpengine.geometry.transforms import bbox_centre
from kpengine.image.crops import square_box
from kpengine.image.pipeline import (
    KnowledgeBase,
    Networks,
    ShapeCandidate,
    cloud_surface,
    load_image_run,
    overlay_picture,
    understand,
)
from kpengine.image.reconstruct.photo import RECON_MARGIN, load_network
from kpengine.image.renders import mask_box
from kpengine.image.renderset import view_sample
from kpengine.io.renderset import load_render_set
from kpengine.metrics.pck2d import pck
from kpengine.render.cameras import Viewpoint
from kpengine.render.raycast import MeshRenderer

VARIANTS = (
    "retrieve",
    "reconstruct",
    "reconstruct_view_from_sketches",
    "true_sketches",
    "true_shape",
    "true_view",
    "reconstruct_hedge",
)


def crop_float(a: np.ndarray, box, size: int) -> np.ndarray:
    """(H, W) float -> (size, size): the crop of ``reconstruct_photo`` (edge-padded square, bilinear)."""
    cx, cy, side = square_box(box, RECON_MARGIN)
    pad = int(np.ceil(side)) + 2
    p = np.pad(a.astype(np.float32), pad, mode="edge")
    x0, y0 = cx - side / 2 + pad, cy - side / 2 + pad
    im = Image.fromarray(p, mode="F").resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    return np.asarray(im)


def true_sketches(sample, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The view's ground-truth silhouette, depth and camera-frame normals on the reconstruction's crop
    (the targets of ``reconstruct.data.view_sketch``, cropped the way the photo is)."""
    box = mask_box(sample.mask)
    m = sample.mask.astype(np.float32)
    cm = crop_float(m, box, size)
    w = np.maximum(cm, 1e-6)
    depth = np.where(sample.mask, sample.depth - float(sample.viewpoint.distance), 0.0)
    d = crop_float(depth * m, box, size) / w
    n_cam = sample.normals @ sample.camera.R.T
    n = np.stack([crop_float(n_cam[..., k] * m, box, size) / w for k in range(3)])
    n = n / np.maximum(np.linalg.norm(n, axis=0, keepdims=True), 1e-6)
    on = cm > 0.5
    return on.astype(np.float32), np.where(on, d, 0.0), np.where(on[None], n, 0.0)


def true_shape(shape) -> ShapeCandidate:
    """The test shape as the pipeline would see a perfect 32³ reconstruction: the closed surface of its
    cloud's 32³ grid (the ground truth of the voxels task; ``pipeline.cloud_surface``), with its own
    annotated keypoints."""
    mesh = cloud_surface(shape.points)
    return ShapeCandidate(shape, mesh, MeshRenderer(mesh, name=shape.model_id), bbox_centre(mesh.vertices), True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="the sketch run, then voxels runs")
    ap.add_argument("--viewpoint-run", help="a viewpoint run for the RGB viewpoint (else the sketch run's head)")
    ap.add_argument("--viewpoint-runs", nargs="*", default=[], metavar="CATEGORY=RUN", help="one per category")
    ap.add_argument(
        "--cone-hedge",
        default="none",
        metavar="W,H|none",
        help="reconstruct_hedge's cone weight and half-turn share, or none: the runs averaged alike",
    )
    ap.add_argument("--test", required=True)
    ap.add_argument("--knowledge", required=True)
    ap.add_argument("--per-category", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sketch = load_network(args.runs[0], "sketch")
    if len(args.runs) < 2:
        ap.error("--runs needs the sketch run and at least one voxels run")
    voxel_list = [load_network(r, "voxels") for r in args.runs[1:]]
    voxels = voxel_list[0]
    size = int(voxels.config["size"])
    hedge = None if args.cone_hedge == "none" else tuple(float(v) for v in args.cone_hedge.split(","))
    vp_runs = dict(a.split("=", 1) for a in args.viewpoint_runs)
    cats = [c.strip() for c in voxels.config["category"].split(",")]
    rs = load_render_set(args.test)
    rng = np.random.default_rng(args.seed)
    table: dict[str, dict] = {}
    examples = []
    for cat in cats:
        ids = [i for i, v in enumerate(rs.views) if v["category"] == cat]
        if not ids:
            continue
        pick = sorted(rng.choice(ids, size=min(args.per_category, len(ids)), replace=False).tolist())
        kb = KnowledgeBase.load(args.knowledge, cat, "train", require_meshes=False)
        test_shapes = {s.model_id: s for s in KeypointNetDataset(args.knowledge, cat, "test")}
        vp_run = vp_runs.get(cat, args.viewpoint_run)
        vp = load_image_run(vp_run, "viewpoint", cat)[0] if vp_run else None
        nets = Networks(vp, sketch=sketch, voxels=voxel_list if len(voxel_list) > 1 else voxels)
        anns = {}
        samples = {}
        for i in pick:
            s = view_sample(rs, i)
            samples[s.name] = s
            x, y, w, h = mask_box(s.mask)
            kp = rs.views[i]["keypoints"]
            anns[s.name] = {
                "category": cat, "image_width": s.image.shape[1], "image_height": s.image.shape[0],
                "bndbox": [x + 0.5, y + 0.5, x + w - 0.5, y + h - 0.5],
                "kps": kp["uv"], "kps_ids": kp["semantic_ids"], "kps_visible": kp["visible"],
            }  # fmt: skip
        table[cat] = {}
        for name in args.variants:
            preds, secs, ious, errs = {}, [], [], []
            for key, s in samples.items():
                kw: dict = {"shape_route": "retrieve" if name == "retrieve" else "reconstruct"}
                if name == "reconstruct_view_from_sketches":
                    kw["viewpoint_source"] = "sketches"
                elif name == "true_sketches":
                    kw["sketches_override"] = true_sketches(s, size)
                elif name == "true_shape":
                    kw["shape_override"] = true_shape(test_shapes[s.model_id])
                elif name == "reconstruct_hedge":
                    kw["cone_hedge"] = hedge
                elif name == "true_view":
                    v = s.viewpoint
                    kw["viewpoint_override"] = Viewpoint(v.azimuth, v.elevation, 1.0, v.theta)
                t = time.perf_counter()
                u = understand(s.image, kb, nets, mask=s.mask, steps=args.steps, **kw)
                secs.append(time.perf_counter() - t)
                ious.append(u.iou_refined)
                errs.append(abs(((u.viewpoint["azimuth"] - s.viewpoint.azimuth) + 180) % 360 - 180))
                preds[key] = {k: p["uv"] for k, p in u.keypoints.items() if p["uv"] is not None}
                if len(examples) < 12 and name in ("retrieve", "reconstruct") and len(preds) <= 3:
                    examples.append(overlay_picture(u))
            res = pck(anns, preds)[cat]
            # per view, for paired differences between variants: (correct keypoints at img@0.1, visible keypoints)
            per_view = {
                k: (round(r["img@0.1"] * r["n"]), r["n"])
                for k in samples
                for r in [pck({k: anns[k]}, {k: preds.get(k, {})}).get(cat, {"img@0.1": 0.0, "n": 0})]
            }
            table[cat][name] = {
                "per_view_img@0.1": per_view,
                "pck": {k: round(v, 4) for k, v in res.items()},
                "mean_fitted_iou": round(float(np.mean(ious)), 4),
                "median_azimuth_error_deg": round(float(np.median(errs)), 1),
                "median_seconds": round(float(np.median(secs)), 3),
                "views": len(samples),
            }
            print(cat, name, json.dumps({k: v for k, v in table[cat][name].items() if not k.startswith("per_view")}),
                  flush=True)  # fmt: skip
    out = {
        "runs": args.runs,
        "viewpoint_run": args.viewpoint_run,
        "viewpoint_runs": args.viewpoint_runs,
        "cone_hedge": hedge,
        "test": args.test,
        "per_category": args.per_category,
        "seed": args.seed,
        "steps": args.steps,
        "loadavg_1m": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "categories": table,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    if args.png and examples:
        from kpengine.render.overlay import save_png, tile

        save_png(args.png, tile([np.asarray(Image.fromarray(e).resize((256, 256))) for e in examples], 4))


if __name__ == "__main__":
    main()
