"""Single-view reconstruction benchmark (issue 12): voxel IoU at 32³ and Chamfer distance on held-out
shapes' renders, per category, side by side for

* ``recon``: photo -> predicted 2.5D sketches -> voxels (the route of ``kpengine reconstruct``), the
  decoder conditioned on its own viewpoint head;
* ``recon_true_view``: the same with the true viewpoint fed to the decoder (what a perfect viewpoint
  would add: the case for conditioning);
* ``recon_true_sketch``: voxels from the ground-truth sketches (the 3D estimator alone);
* ``recon:NAME``: further voxels runs (``--more NAME=RUN``: e.g. fine-tuned with and without the
  naturalness loss) on the predicted sketches;
* ``retrieval_true_view`` / ``retrieval_est_view``: the training shape whose projected voxels best
  match the view's silhouette (IoU), placed with the view's true camera, or with the azimuth and
  elevation the sketch network reads off the RGB crop (the pipeline's silhouette retrieval, run
  over every training shape's grid since bathtubs and beds have almost no meshes);
* ``oracle_nearest``: the training shape with the highest voxel IoU to the truth (a bound on any
  retrieval from these training shapes);
* ``mean_shape``: the category's mean training grid, thresholded where it scores best on the
  training shapes themselves;
* with ``--val VAL_SET``, ``…@val``: each reconstruction row at the occupancy level that scores
  best on the validation split's views (per category, levels 0.2-0.8), instead of 0.5;
* ``recon_mirror``: the reconstruction's probabilities averaged with their left-right mirror in the
  canonical frame (x; ``reconstruct.shape_space``), thresholded at 0.5;
* ``recon_flip_tta``: test-time augmentation by the mirror identity: the network's grid for the
  view averaged with the mirror of its grid for the flipped view (exact for any shape:
  ``reconstruct.shape_space``), thresholded at 0.5;
* ``paired_vs_recon``: every other row's IoU minus ``recon``'s, view by view (mean and s.e.m.);
* ``recon_nearest``: the training grid nearest the reconstruction (soft IoU of its probabilities):
  retrieval in the space of reconstructed shapes;
* for a voxels run with a retrieval prior (``"retrieval": true``), ``NAME/blend``: the blend of
  training grids its head retrieves, alone (before the decoder's residual), and ``NAME/top1``: the
  one training grid its head scores highest (a learnt retrieval, as in Tatarchenko et al. 2019).

* ``bp:NAME`` for each back-projecting voxels run (``--backproject NAME=RUN``, ``"backproject": true``;
  ``reconstruct.backproject``): the predicted depth placed in the canonical grid at an **estimated**
  viewpoint (the ``--viewpoint-runs`` networks on the RGB render and its true mask, else the voxels
  run's sketch head; roll 0) and completed; ``bp:NAME/true_view`` the same at the true viewpoint,
  ``bp:NAME/true_sketch`` true sketches at the estimated viewpoint, ``bp:NAME/ceiling`` true sketches
  at the true viewpoint (this route's ceiling), ``bp:NAME/no_flip`` the estimated viewpoint turned by
  180° where it is more than 90° off (what the half-turn flips cost). All of them use the render's
  true intrinsics and the box centre's position in the camera (distance, principal point): only the
  rotation is estimated. ``viewpoint`` also reports the estimate's errors (``vp_runs``).
  ``bp:NAME+recon``: its probabilities averaged with ``recon``'s (the two routes together). A run with
  ``"observation": "cone"`` (the depth-free variant) reads only the silhouette, so its ``true_sketch``
  rows are the true silhouette's; ``bp:A+bp:B+recon``: the first two bp runs and ``recon`` averaged.
  With ``--silhouette-runs``, ``bp:NAME/sil``: the silhouette channel from those silhouette networks on
  the whole render (``datasets.predict_mask``, what ``understand`` feeds the reconstruction when no mask
  is given), depth and normals still the sketch network's; ``silhouette_iou`` reports both masks' IoU.

``--no-retrieval`` skips the silhouette-retrieval rows (they are left out of the results, not
reported as NaN).

    python benchmarks/reconstruction.py --runs RUN_SKETCH RUN_VOXELS --train renders/train128 \\
        --test renders/test128 --shapes ../shared/data/keypointnet --out R.json --png R.png \\
        [--more nat=RUN_NAT ctl=RUN_CONTROL] [--val renders/val128] \\
        [--backproject bp=RUN_BP] [--viewpoint-runs bathtub=VP_RUN bed=VP_RUN]
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
from kpengine.image.reconstruct.figures import titled, voxel_projections
from kpengine.image.reconstruct.photo import load_network
from kpengine.image.reconstruct.shape_space import mirror_grids, mirror_sketches
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


@torch.no_grad()
def backprojected(
    args, test, cats, cat_index, x_pred, sk_view, res
) -> tuple[dict[str, np.ndarray], dict | None, np.ndarray | None, dict[str, np.ndarray]]:
    """The ``bp:`` rows' occupancy probabilities (N, R, R, R) each, the viewpoint networks' estimates
    (``{"azimuth", "elevation"}`` torch (N,), None without ``--viewpoint-runs``) and the visible surface
    (N, R, R, R) bool of the true sketches at the true viewpoint (the figure's fourth column)."""
    from kpengine.image.reconstruct.backproject import observe
    from kpengine.image.viewpoint import angle_difference

    if not args.backproject:
        return {}, None, None, {}
    vp_est = None
    if args.viewpoint_runs:
        from kpengine.image.pipeline import estimate_viewpoint, load_image_run
        from kpengine.image.renderset import view_sample

        runs = dict(v.split("=", 1) for v in args.viewpoint_runs)
        nets = {c: load_image_run(runs[c], "viewpoint", c)[0].eval() for c in cats}
        rs = load_render_set(args.test)
        where = {v["id"]: k for k, v in enumerate(rs.views)}
        az, el = [], []
        for i, vid in enumerate(test.ids):
            sample = view_sample(rs, where[vid], ("mask",))
            e = estimate_viewpoint(nets[test.category[i]], sample.image, sample.mask)
            az.append(e["azimuth"])
            el.append(e["elevation"])
        vp_est = {"azimuth": torch.tensor(az), "elevation": torch.tensor(el)}
    est = vp_est if vp_est is not None else sk_view
    if est is None:
        raise SystemExit("the back-projection rows need an estimated viewpoint: --viewpoint-runs, or a voxels run "
                         "with a viewpoint head")  # fmt: skip
    zero = torch.zeros(len(test))
    off = torch.from_numpy(angle_difference(est["azimuth"].numpy(), test.azimuth.numpy()) > 90)
    no_flip = est["azimuth"] + 180.0 * off.float()
    x_true = test.sketches(torch.arange(len(test)))
    truth_mask = x_true[:, 0] > 0.5
    sil_iou = {"sketch": mask_iou(x_pred[:, 0] > 0.5, truth_mask)}
    x_sil = None
    if args.silhouette_runs:
        from kpengine.image.reconstruct.data import silhouette_net_masks
        from kpengine.image.tasks.voxels import silhouette_nets

        nets = silhouette_nets(dict(v.split("=", 1) for v in args.silhouette_runs), cats)
        on = silhouette_net_masks(args.test, test.ids, test.category, nets, x_pred.shape[-1])
        x_sil = torch.cat([on[:, None], x_pred[:, 1:] * on[:, None]], 1)
        sil_iou["sil_runs"] = mask_iou(on > 0.5, truth_mask)
    out = {}
    for name, run in (m.split("=", 1) for m in args.backproject):
        net = load_network(run, "voxels")
        rows = {
            f"bp:{name}": (x_pred, est["azimuth"], est["elevation"], zero),
            f"bp:{name}/true_view": (x_pred, test.azimuth, test.elevation, test.theta),
            f"bp:{name}/true_sketch": (x_true, est["azimuth"], est["elevation"], zero),
            f"bp:{name}/ceiling": (x_true, test.azimuth, test.elevation, test.theta),
            f"bp:{name}/no_flip": (x_pred, no_flip, est["elevation"], zero),
        }
        if x_sil is not None:
            rows[f"bp:{name}/sil"] = (x_sil, est["azimuth"], est["elevation"], zero)
        for row, (x, a, e, t) in rows.items():
            probs = []
            for s in range(0, len(test), 64):
                j = slice(s, s + 64)
                obs = observe(x[j], test.cameras[j], a[j], e[j], t[j], res, net.observation)
                probs.append(torch.sigmoid(net(obs, cat_index[j])))
            out[row] = torch.cat(probs).numpy()
    x_all = observe(x_true, test.cameras, test.azimuth, test.elevation, test.theta, res)
    return out, vp_est, x_all[:, 2].numpy() > 0.5, sil_iou


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(N, S, S) bool twice -> (N,) IoU."""
    return ((a & b).sum((1, 2)).float() / (a | b).sum((1, 2)).clamp(min=1).float()).numpy()


def _soft_view(az: torch.Tensor, el: torch.Tensor) -> torch.Tensor:
    from kpengine.image.viewpoint import azimuth_soft_label, elevation_soft_label

    return torch.cat([azimuth_soft_label(az), elevation_soft_label(el)], 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs=2, required=True, metavar=("SKETCH_RUN", "VOXELS_RUN"))
    ap.add_argument("--more", nargs="*", default=[], metavar="NAME=VOXELS_RUN")
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png")
    ap.add_argument("--val", help="a validation render set: also report each run at its best level there")
    ap.add_argument("--no-retrieval", action="store_true", help="skip the (slow) retrieval rows")
    ap.add_argument(
        "--backproject",
        nargs="*",
        default=[],
        metavar="NAME=VOXELS_RUN",
        help='back-projecting voxels runs ("backproject": true)',
    )
    ap.add_argument(
        "--silhouette-runs",
        nargs="*",
        default=[],
        metavar="CATEGORY=SILHOUETTE_RUN",
        help="silhouette runs per category: the bp rows also with their masks (bp:NAME/sil)",
    )
    ap.add_argument(
        "--viewpoint-runs",
        nargs="*",
        default=[],
        metavar="CATEGORY=VIEWPOINT_RUN",
        help="viewpoint runs per category for the back-projection's estimated viewpoint",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    from kpengine.image.viewpoint import angle_difference, decode
    from kpengine.render.cameras import Viewpoint, make_camera

    sk_net = load_network(args.runs[0], "sketch")
    vox_net = load_network(args.runs[1], "voxels")
    more = {k: load_network(v, "voxels") for k, v in (m.split("=", 1) for m in args.more)}
    size, res = vox_net.config["size"], vox_net.config["resolution"]
    cats = [c.strip() for c in vox_net.config["category"].split(",")]
    test = load_sketch_set(args.test, size, cats)
    test_views = {v["id"]: v for v in load_render_set(args.test).views}
    truth = category_voxels(args.shapes, set(zip(test.category, test.model_id)), res)
    train_rs = load_render_set(args.train).select(categories=cats)
    train_pairs = sorted({(v["category"], v["model_id"]) for v in train_rs.views})
    overlap = {m for _, m in train_pairs} & set(test.model_id)
    if overlap:
        raise SystemExit(f"{len(overlap)} test shapes are training shapes: not held out")
    train = category_voxels(args.shapes, set(train_pairs), res)
    cat_index = torch.tensor([cats.index(c) for c in test.category])
    results: dict[str, dict] = {}
    val_levels = {}  # (run name, category) -> the occupancy level that scores best on the validation views
    if args.val:
        val = load_sketch_set(args.val, size, cats)
        val_truth = category_voxels(args.shapes, set(zip(val.category, val.model_id)), res)
        with torch.no_grad():
            vp = sk_net(normalise(val.images))
            vs = (vp["mask"] > 0).float()
            xv = sketch_tensor(vs, vp["depth"] * vs, vp["normals"] * vs[:, None])
            vi = torch.tensor([cats.index(c) for c in val.category])
            for name, net in (("recon", vox_net), *((f"recon:{k}", n) for k, n in more.items())):
                pv = torch.sigmoid(net(xv, vi)).numpy()
                for cat in cats:
                    j = [n for n in range(len(val)) if val.category[n] == cat]
                    gt_v = np.stack([val_truth[(cat, val.model_id[n])] for n in j])
                    grid_l = np.linspace(0.2, 0.8, 13)
                    scores = [voxel_iou(pv[j] > t, gt_v).mean() for t in grid_l]
                    val_levels[(name, cat)] = float(grid_l[int(np.argmax(scores))])
    t0 = time.perf_counter()
    with torch.no_grad():
        pred_sk = sk_net(normalise(test.images))
        sil = (pred_sk["mask"] > 0).float()
        x_pred = sketch_tensor(sil, pred_sk["depth"] * sil, pred_sk["normals"] * sil[:, None])
        logits, vox_view = vox_net(x_pred, cat_index, with_view=True)
        p_pred = torch.sigmoid(logits).numpy()
        secs_net = (time.perf_counter() - t0) / len(test)
        p_view = torch.sigmoid(vox_net(x_pred, cat_index, view=_soft_view(test.azimuth, test.elevation))).numpy()
        p_true = torch.sigmoid(vox_net(test.sketches(torch.arange(len(test))), cat_index)).numpy()
        p_more = {k: torch.sigmoid(n(x_pred, cat_index)).numpy() for k, n in more.items()}
        p_flip = mirror_grids(torch.sigmoid(vox_net(mirror_sketches(x_pred), cat_index))).numpy()
        # retrieval-prior runs: the retrieved blend alone and the top-scored bank grid
        p_bank: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, net in (("recon", vox_net), *((f"recon:{k}", n) for k, n in more.items())):
            if getattr(net, "retrieval", False):
                parts = net(x_pred, cat_index, parts=True)
                top = net.bank[parts["scores"].argmax(1)].numpy()
                p_bank[name] = (parts["blend"].numpy(), top)
    rgb_view = decode(pred_sk) if "azimuth" in pred_sk else None
    sk_view = decode(vox_view) if vox_view is not None else None
    p_bp, vp_est, seen, sil_iou = backprojected(args, test, cats, cat_index, x_pred, sk_view, res)
    bp_main = [n for n in p_bp if "/" not in n]
    averaged = [n for n in p_bp if "/" not in n or n.endswith("/sil")]  # each also averaged with recon
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
        names = ["recon", "recon_true_view", "recon_true_sketch", *[f"recon:{k}" for k in more]]
        names += [f"{n}/{part}" for n in p_bank for part in ("blend", "top1")]
        if not args.no_retrieval:
            names += ["retrieval_true_view", "retrieval_est_view"]
        names += ["oracle_nearest", "mean_shape"]
        names += ["recon_mirror", "recon_flip_tta", "recon_nearest"]
        names += list(p_bp) + [f"{n}+recon" for n in averaged]
        names += [f"{bp_main[0]}+{bp_main[1]}+recon"] if len(bp_main) > 1 else []
        names += [f"{n}@val" for n in names if n.startswith("recon") and (n, cat) in val_levels]
        rows: dict[str, list[tuple[float, float]]] = {m: [] for m in names}
        flat = grids.reshape(len(grids), -1).astype(np.float32)
        idx = [j for j in range(len(test)) if test.category[j] == cat]
        for i in idx:
            gt = truth[(cat, test.model_id[i])]
            gt_pts = clouds.setdefault(test.model_id[i], cloud(args.shapes, cat, test.model_id[i]))
            view = test_views[test.ids[i]]
            mask = test.mask[i].numpy() > 0.5
            r = 0 if args.no_retrieval else silhouette_retrieval(view, mask, keys, grids, res)
            cam = Camera.from_json(view["camera"])
            est = dict(view)
            if rgb_view is not None:
                est_cam = make_camera(
                    Viewpoint(float(rgb_view["azimuth"][i]), float(rgb_view["elevation"][i]), view["distance"],
                              view["theta"]), cam.intrinsics, np.asarray(view["center"]))  # fmt: skip
                est["camera"] = est_cam.to_json()
            r_est = 0 if args.no_retrieval else silhouette_retrieval(est, mask, keys, grids, res)
            o = int(np.argmax(voxel_iou(grids, gt[None])))
            cand = [
                ("recon", p_pred[i] > 0.5, mesh_points(p_pred[i])),
                ("recon_true_view", p_view[i] > 0.5, mesh_points(p_view[i])),
                ("recon_true_sketch", p_true[i] > 0.5, mesh_points(p_true[i])),
                *[(f"recon:{k}", p[i] > 0.5, mesh_points(p[i])) for k, p in p_more.items()],
                ("retrieval_true_view", grids[r], cloud(args.shapes, cat, keys[r][1])),
                ("retrieval_est_view", grids[r_est], cloud(args.shapes, cat, keys[r_est][1])),
                ("oracle_nearest", grids[o], cloud(args.shapes, cat, keys[o][1])),
                ("mean_shape", mean_occ, mean_pts),
            ]
            pm = 0.5 * (p_pred[i] + p_pred[i][::-1])  # the mirror in x: the grid's first index
            inter = flat @ p_pred[i].ravel()
            near = int(np.argmax(inter / (flat.sum(1) + p_pred[i].sum() - inter)))
            cand += [
                ("recon_mirror", pm > 0.5, mesh_points(pm)),
                ("recon_flip_tta", 0.5 * (p_pred[i] + p_flip[i]) > 0.5, mesh_points(0.5 * (p_pred[i] + p_flip[i]))),
                ("recon_nearest", grids[near], cloud(args.shapes, cat, keys[near][1])),
            ]
            cand += [(name, p[i] > 0.5, mesh_points(p[i])) for name, p in p_bp.items()]
            for name in averaged:  # the two routes' probabilities averaged
                avg = 0.5 * (p_pred[i] + p_bp[name][i])
                cand.append((f"{name}+recon", avg > 0.5, mesh_points(avg)))
            if len(bp_main) > 1:  # the first two bp runs and the default, all three averaged
                avg = (p_pred[i] + p_bp[bp_main[0]][i] + p_bp[bp_main[1]][i]) / 3
                cand.append((f"{bp_main[0]}+{bp_main[1]}+recon", avg > 0.5, mesh_points(avg)))
            for name, (blend, top) in p_bank.items():
                cand += [
                    (f"{name}/blend", blend[i] > 0.5, mesh_points(blend[i])),
                    (f"{name}/top1", top[i], mesh_points(top[i].astype(np.float32))),
                ]
            for name, p in (("recon", p_pred[i]), *((f"recon:{k}", q[i]) for k, q in p_more.items())):
                if (name, cat) in val_levels:
                    lv = val_levels[(name, cat)]
                    cand.append((f"{name}@val", p > lv, mesh_points(p, lv)))
            if args.no_retrieval:
                cand = [c for c in cand if not c[0].startswith("retrieval")]
            for name, occ, pts in cand:
                rows[name].append((float(voxel_iou(occ, gt)), chamfer_distance(pts, gt_pts)))
            if sum(t.startswith(cat) for t in titles) < 2 and i % 37 == 0:  # two examples per category
                third = "recon_true_sketch" if args.no_retrieval else "retrieval_est_view"
                third_grid = p_true[i] > 0.5 if args.no_retrieval else grids[r_est]
                if p_bp:
                    third = next(iter(p_bp))
                    third_grid = p_bp[third][i] > 0.5
                figs += [gt, p_pred[i] > 0.5, third_grid] + ([seen[i]] if p_bp else [])
                titles += [
                    f"{cat} {test.model_id[i][:6]} truth: front, side, top",
                    f"recon IoU {rows['recon'][-1][0]:.2f}",
                    f"{third} IoU {rows[third][-1][0]:.2f}",
                ] + (["visible surface, true depth+view"] if p_bp else [])
        view_err = {}
        for name, v in (("rgb", rgb_view), ("sketches", sk_view), ("vp_runs", vp_est)):
            if v is not None:
                e = angle_difference(v["azimuth"][idx].numpy(), test.azimuth[idx].numpy())
                view_err[name] = {"azimuth_median_deg": round(float(np.median(e)), 1),
                                  "azimuth_acc30": round(float((e <= 30).mean()), 3)}  # fmt: skip
        results[cat] = {
            "views": len(idx),
            "shapes": len({test.model_id[j] for j in idx}),
            "mean_shape_level": lvl,
            "val_levels": {n: v for (n, c), v in val_levels.items() if c == cat},
            "viewpoint": view_err,
            "silhouette_iou": {k: round(float(v[idx].mean()), 4) for k, v in sil_iou.items()},
            **{
                name: {
                    "iou": round(float(np.mean([a for a, _ in v])), 4),
                    "iou_sem": round(float(np.std([a for a, _ in v]) / np.sqrt(len(v))), 4),
                    "chamfer": round(float(np.nanmean([b for _, b in v])), 4),
                    "chamfer_nan": int(np.isnan([b for _, b in v]).sum()),
                }
                for name, v in rows.items()
            },
            # each further row against ``recon`` view by view (the same views: the paired difference's
            # s.e.m. is what tells two networks apart, well below either row's own s.e.m.)
            "paired_vs_recon": {
                name: {
                    "iou_diff": round(float(np.mean(d)), 4),
                    "iou_diff_sem": round(float(np.std(d) / np.sqrt(len(d))), 4),
                }
                for name, v in rows.items()
                if name != "recon" and len(v) == len(rows["recon"])
                for d in [np.array([a for a, _ in v]) - np.array([a for a, _ in rows["recon"]])]
            },
        }
        print(cat, json.dumps(results[cat]), flush=True)
    out = {
        "runs": args.runs,
        "more": args.more,
        "train": args.train,
        "test": args.test,
        "val": args.val,
        "resolution": res,
        "network_seconds_per_view": round(secs_net, 4),
        "loadavg_1m": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "categories": results,
    }
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    if args.png and figs:
        # one row per example: truth | reconstruction | third (the first bp row when there is one) [| the
        # visible surface back-projected]; each the front, side and top silhouettes
        from kpengine.render.overlay import save_png, tile

        # every panel titled (the sixth pass's bench6.png had none: its columns were named only in the docs)
        panels = [titled(voxel_projections(g), t) for g, t in zip(figs, titles)]
        cols = 4 if seen is not None else 3
        save_png(args.png, tile(panels, cols))
        print("figure rows:", json.dumps([titles[k : k + cols] for k in range(0, len(titles), cols)]))


if __name__ == "__main__":
    main()
