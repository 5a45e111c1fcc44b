"""Single-view reconstruction benchmark (issue 12): voxel IoU at 32³ and Chamfer distance on held-out
shapes' renders, per category, side by side for

* ``recon``: photo -> predicted 2.5D sketches -> voxels (the route of ``kpengine reconstruct``);
* ``recon_true_sketch``: voxels from the ground-truth sketches (the 3D estimator alone);
* ``retrieval_true_view``: the training shape whose projected voxels best match the view's
  silhouette (IoU) when placed with the view's *true* camera: retrieval given a perfect viewpoint;
* ``oracle_nearest``: the training shape with the highest voxel IoU to the truth (a bound on any
  retrieval from these training shapes);
* ``mean_shape``: the category's mean training grid, thresholded where it scores best on the
  training shapes themselves.

    python benchmarks/reconstruction.py --runs RUN_SKETCH RUN_VOXELS --train renders/train128 \\
        --test renders/val128 --shapes ../shared/data/keypointnet --out R.json --png R.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from kpengine.categories import resolve_category
from kpengine.geometry.sampling import sample_surface
from kpengine.geometry.transforms import bbox_centre
from kpengine.geometry.voxelize import VoxelGrid, voxels_to_mesh
from kpengine.image.crops import normalise
from kpengine.image.reconstruct.data import category_voxels, load_sketch_set, sketch_tensor
from kpengine.image.reconstruct.figures import plot_voxel_grids
from kpengine.image.reconstruct.photo import load_network
from kpengine.io import layout
from kpengine.io.pcd import load_pcd
from kpengine.io.renderset import load_render_set
from kpengine.metrics.shape3d import chamfer_distance, voxel_iou
from kpengine.render.cameras import Camera


def cloud(root: str, category: str, model_id: str) -> np.ndarray:
    p = load_pcd(layout.pcd_path(Path(root), resolve_category(category).synset, model_id)).points
    return p - bbox_centre(p)


def mesh_points(values: np.ndarray, level: float = 0.5, n: int = 2048) -> np.ndarray:
    try:
        return sample_surface(voxels_to_mesh(values, VoxelGrid(values.shape[0]), level), n, 0).points
    except Exception:  # noqa: BLE001 - an empty grid has no surface: Chamfer NaN
        return np.zeros((0, 3))


def silhouette_retrieval(view: dict, mask: np.ndarray, train_keys, train_grids, res: int = 32) -> int:
    """Index of the training grid whose occupied voxel centres, placed at the view's centre and seen by
    its true camera, cover the mask best (IoU at the mask's resolution)."""
    cam = Camera.from_json(view["camera"])
    s = mask.shape[0]
    scale = s / cam.width
    centre = np.asarray(view["center"], np.float64)
    grid = VoxelGrid(res)
    best, best_iou = 0, -1.0
    for k, g in enumerate(train_grids):
        pts = grid.centres(np.argwhere(g)) + centre
        uv, _ = cam.project(pts)
        uv = np.round(uv * scale).astype(int)  # pixel centres at integers: (u * s / W) is close enough at 32 px
        ok = (uv[:, 0] >= 0) & (uv[:, 0] < s) & (uv[:, 1] >= 0) & (uv[:, 1] < s)
        sil = np.zeros((s, s), bool)
        sil[uv[ok, 1], uv[ok, 0]] = True
        union = (sil | mask).sum()
        iou = (sil & mask).sum() / union if union else 0.0
        if iou > best_iou:
            best, best_iou = k, iou
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs=2, required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png")
    ap.add_argument("--views-per-shape", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sk_net = load_network(args.runs[0], "sketch")
    vox_net = load_network(args.runs[1], "voxels")
    size, res = vox_net.config["size"], vox_net.config["resolution"]
    cats = [c.strip() for c in vox_net.config["category"].split(",")]
    test = load_sketch_set(args.test, size, cats)
    test_views = {v["id"]: v for v in load_render_set(args.test).views}
    ids = [v["id"] for v in load_render_set(args.test).select(categories=cats).views]
    truth = category_voxels(args.shapes, set(zip(test.category, test.model_id)), res)
    train_rs = load_render_set(args.train).select(categories=cats)
    train_pairs = sorted({(v["category"], v["model_id"]) for v in train_rs.views})
    train = category_voxels(args.shapes, set(train_pairs), res)
    results: dict[str, dict[str, list[float]]] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        pred_sk = sk_net(normalise(test.images))
        sil = (pred_sk["mask"] > 0).float()
        x_pred = sketch_tensor(sil, pred_sk["depth"] * sil, pred_sk["normals"] * sil[:, None])
        p_pred = torch.sigmoid(vox_net(x_pred)).numpy()
        p_true = torch.sigmoid(vox_net(test.sketches(torch.arange(len(test))))).numpy()
    secs_net = (time.perf_counter() - t0) / len(test)
    figs, titles = [], []
    for cat in cats:
        keys = [k for k in train_pairs if k[0] == cat]
        grids = np.stack([train[k] for k in keys])
        mean = grids.mean(0)
        levels = np.linspace(0.1, 0.7, 13)
        lvl = float(levels[np.argmax([voxel_iou(mean > t, grids).mean() for t in levels])])
        mean_occ = mean > lvl
        mean_pts = mesh_points(mean.astype(np.float32), lvl)
        clouds: dict[str, np.ndarray] = {}
        rows: dict[str, list[tuple[float, float]]] = {
            m: [] for m in ("recon", "recon_true_sketch", "retrieval_true_view", "oracle_nearest", "mean_shape")
        }
        for i in [j for j in range(len(test)) if test.category[j] == cat]:
            gt = truth[(cat, test.model_id[i])]
            gt_pts = clouds.setdefault(test.model_id[i], cloud(args.shapes, cat, test.model_id[i]))
            view = test_views[ids[i]]
            r = silhouette_retrieval(view, test.mask[i].numpy() > 0.5, keys, grids, res)
            o = int(np.argmax(voxel_iou(grids, gt[None])))
            for name, occ, pts in (
                ("recon", p_pred[i] > 0.5, mesh_points(p_pred[i])),
                ("recon_true_sketch", p_true[i] > 0.5, mesh_points(p_true[i])),
                ("retrieval_true_view", grids[r], cloud(args.shapes, cat, keys[r][1])),
                ("oracle_nearest", grids[o], cloud(args.shapes, cat, keys[o][1])),
                ("mean_shape", mean_occ, mean_pts),
            ):
                rows[name].append((float(voxel_iou(occ, gt)), chamfer_distance(pts, gt_pts)))
            if len(figs) < 12 and i % 17 == 0:
                figs += [gt, p_pred[i] > 0.5, grids[r]]
                titles += [
                    f"{cat} {test.model_id[i][:6]} truth",
                    f"recon IoU {rows['recon'][-1][0]:.2f}",
                    f"retrieval IoU {rows['retrieval_true_view'][-1][0]:.2f}",
                ]
        results[cat] = {
            "views": len(rows["recon"]),
            "shapes": len({test.model_id[j] for j in range(len(test)) if test.category[j] == cat}),
            "mean_shape_level": lvl,
            **{
                name: {
                    "iou": round(float(np.mean([a for a, _ in v])), 4),
                    "chamfer": round(float(np.nanmean([b for _, b in v])), 4),
                    "chamfer_nan": int(np.isnan([b for _, b in v]).sum()),
                }
                for name, v in rows.items()
            },
        }
        print(cat, json.dumps(results[cat]), flush=True)
    out = {
        "runs": args.runs,
        "train": args.train,
        "test": args.test,
        "resolution": res,
        "network_seconds_per_view": round(secs_net, 4),
        "loadavg_1m": os.getloadavg()[0],
        "categories": results,
    }
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    if args.png and figs:
        plot_voxel_grids(args.png, figs, titles, 3)


if __name__ == "__main__":
    main()
