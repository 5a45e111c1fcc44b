"""The silhouette cone re-placed at the refined pose (issue 12, seventh pass): does the pipeline's silhouette
refinement give the cone a better viewpoint than the viewpoint network's bins?

On the sixth pass's 516 test views (``renders/test128``, bathtub and bed), each view goes through what
``understand --shape reconstruct`` does with a cone run and the default averaged:

1. the viewpoint runs estimate the viewpoint on the RGB render (the crop from its true mask, roll 0: the
   sixth pass's protocol, ``reconstruction.py``'s ``--viewpoint-runs``);
2. ``est``: the cone of the silhouette networks' mask (``--silhouette-runs``) at that viewpoint, completed
   by the cone run, averaged with the default voxels run (``--runs``): the sixth pass's best route;
3. ``refined``: that averaged grid's mesh (marching cubes at 0.5) posed from the pipeline's viewpoint
   hypotheses (``poses.viewpoint_hypotheses``, ``--hypotheses`` starts) and refined against the same
   silhouette-network mask at the render's size (``poses.select_pose``, ``--steps``, the pipeline's
   defaults): the refined camera's azimuth, elevation and roll place the cone again, which is completed
   and averaged with the default again; ``refined/azimuth_only`` takes only the refined azimuth (the
   estimated elevation, roll 0), ``refined/no_roll`` the refined azimuth and elevation; with ``--rounds``
   2, ``refined_2`` poses the re-placed grid again from the refined viewpoint alone and places the cone
   a third time (what ``understand`` does after its refinement);
4. ``refined_default``: the same with the default's mesh alone posed and refined (its shape does not
   depend on the viewpoint estimate, so the refinement cannot merely confirm the estimate's cone);
5. ``true_view``: the cone at the true viewpoint (what a perfect viewpoint would give this route);
6. ``est:NAME`` and ``true_view:NAME``: each further ``--cone`` run in place of the first, not refined;
7. ``hedge_cue(w)`` / ``hedge_cue_sketches(w)``: the hedge with the half turn's share per view from the
   viewpoint runs' / the default voxels run's head's mass at the half turn (:func:`half_turn_share`);
8. ``hedge(w,h)`` (``--hedge``, eighth pass): the half-turn hedge at the first refined pose ``v``,
   ``(1 - w) default + w ((1 - h) cone(v) + h cone(v + 180° azimuth))`` (:func:`hedge_probs`); ``--hedge-grid
   N`` also stores every view's IoU for each ``w`` in {0, 1/N, .., 1} and ``h`` in {0, 1/N, .., 1/2}
   (``hedge_grid`` in the JSON), which ``reconstruction_hedge.py`` chooses from (on val renders).

As in ``reconstruction.py``, the intrinsics and the box centre's position in the camera come from the
render: only the rotation is estimated. Rows report IoU at 32³ (± s.e.m.), Chamfer, the paired IoU
difference against ``est`` view by view, and the azimuth error (median, share within 30°) of each
viewpoint against the truth.

    python benchmarks/reconstruction_refined.py --runs RUN_SKETCH RUN_VOXELS --cone cone=RUN_CONE [cone_sil=RUN] \\
        --test renders/test128 --shapes ../shared/data/keypointnet \\
        --viewpoint-runs bathtub=VP bed=VP --silhouette-runs bathtub=SIL bed=SIL --out R.json [--png R.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reconstruction import cloud, mesh_points  # noqa: E402  (the benchmark's own helpers)

from kpengine.geometry.voxelize import VoxelGrid, voxels_to_mesh  # noqa: E402
from kpengine.image.crops import normalise  # noqa: E402
from kpengine.image.reconstruct.backproject import observe  # noqa: E402
from kpengine.image.reconstruct.data import category_voxels, load_sketch_set, sketch_tensor  # noqa: E402
from kpengine.image.reconstruct.photo import cue_share, half_turn_share, load_network  # noqa: E402
from kpengine.io.renderset import load_render_set  # noqa: E402
from kpengine.metrics.shape3d import chamfer_distance, voxel_iou  # noqa: E402


def subset(sk, idx: list[int]):
    """The SketchSet's views ``idx``, in that order."""
    from dataclasses import fields, replace

    t = torch.tensor(idx, dtype=torch.long)
    return replace(sk, **{
        f.name: (v[t] if isinstance(v, torch.Tensor) else [v[i] for i in idx])
        for f in fields(sk) for v in [getattr(sk, f.name)] if v is not None
    })  # fmt: skip


@torch.no_grad()
def cone_probs(net, x: torch.Tensor, cameras: torch.Tensor, az, el, th, cat_index, res: int) -> np.ndarray:
    """The cone run's occupancy probabilities (N, R, R, R) at the given viewpoints (N,) degrees each."""
    out = []
    for s in range(0, len(x), 64):
        j = slice(s, s + 64)
        obs = observe(x[j], cameras[j], az[j], el[j], th[j], res, net.observation)
        out.append(torch.sigmoid(net(obs, cat_index[j])))
    return torch.cat(out).numpy()


def hedge_probs(p_default: np.ndarray, p_cone: np.ndarray, p_half: np.ndarray, w: float, h: float) -> np.ndarray:
    """The half-turn hedge (docs/reconstruction.md, eighth pass): ``(1 - w) p_default + w ((1 - h) p_cone +
    h p_half)``, each (..., R, R, R) occupancy probabilities; ``p_half`` is the cone at the half turn; ``h`` a
    number or one per view (N, 1, 1, 1)."""
    return (1.0 - w) * p_default + w * ((1.0 - h) * p_cone + h * p_half)


def hedge_grid_pairs(n: int) -> list[tuple[float, float]]:
    """The candidates ``(w, h)``: ``w`` in {0, 1/n, .., 1}, ``h`` in {0, 1/n, .., 1/2} (n even)."""
    return [(i / n, j / n) for i in range(n + 1) for j in range(n // 2 + 1)]


def refine_view(probs: np.ndarray, mask: np.ndarray, vp: dict, fov: float, hypotheses: int, steps: int) -> tuple:
    """The grid's mesh posed from ``vp``'s hypotheses and refined against ``mask`` (H, W) bool by the pipeline's
    own choice (``poses.select_pose``) -> (azimuth, elevation, roll) degrees of the refined camera, its
    silhouette IoU. A grid with no surface keeps the estimate."""
    from kpengine.image.poses import PoseHypothesis, ShapeCandidate, place_camera, select_pose, viewpoint_hypotheses
    from kpengine.render.cameras import rt_to_viewpoint
    from kpengine.render.raycast import MeshRenderer

    try:
        mesh = voxels_to_mesh(probs, VoxelGrid(probs.shape[0]), 0.5)
    except Exception:  # noqa: BLE001 - nothing above 0.5: no surface to pose
        return float(vp["azimuth"]), float(vp["elevation"]), 0.0, float("nan")
    centre = np.zeros(3)
    cand = ShapeCandidate(SimpleNamespace(model_id="reconstruction"), mesh, MeshRenderer(mesh, name="recon"), centre)
    tried = [
        PoseHypothesis(v, mass, kind, cand, *place_camera(cand.renderer, centre, mask, v, fov))
        for v, mass, kind in viewpoint_hypotheses(vp, hypotheses)
    ]
    best = select_pose(tried, mask, steps=steps)
    v = rt_to_viewpoint(best.camera.R, best.camera.t, centre)
    return float(v.azimuth), float(v.elevation), float(v.theta), float(best.iou)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs=2, required=True, metavar=("SKETCH_RUN", "VOXELS_RUN"))
    ap.add_argument(
        "--cone",
        nargs="+",
        required=True,
        metavar="NAME=CONE_RUN",
        help='cone runs ("observation": "cone"): the first is refined; the others get est and true_view rows',
    )
    ap.add_argument("--test", required=True)
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--viewpoint-runs", nargs="+", required=True, metavar="CATEGORY=VIEWPOINT_RUN")
    ap.add_argument("--silhouette-runs", nargs="+", required=True, metavar="CATEGORY=SILHOUETTE_RUN")
    ap.add_argument("--hypotheses", type=int, default=4, help="starting viewpoints (the pipeline's default 4)")
    ap.add_argument("--steps", type=int, default=20, help="refinement steps (the pipeline's default 20)")
    ap.add_argument("--rounds", type=int, default=1, help="refine and re-place the cone this many times")
    ap.add_argument(
        "--starts",
        nargs="*",
        default=["refined", "refined_default"],
        choices=["refined", "refined_default"],
        help="which meshes to pose and refine: the averaged grid's, the default's alone",
    )
    ap.add_argument(
        "--hedge",
        nargs="*",
        default=[],
        metavar="W,H",
        help="half-turn hedge rows at the refined pose: the cone's weight W, the half turn's share H of it "
        "(numbers or fractions: 3/4,1/6)",
    )
    ap.add_argument(
        "--hedge-cue",
        nargs="*",
        default=[],
        metavar="W",
        help="front/back cue rows: the cone's weight W, the half turn's share from the viewpoint run per view",
    )
    ap.add_argument(
        "--hedge-cue-sketches",
        nargs="*",
        default=[],
        metavar="W",
        help="second front/back cue rows: the half turn's share from the default run's head on the sketches",
    )
    ap.add_argument(
        "--hedge-grid", type=int, default=0, metavar="N", help="store every view's IoU for the hedge's N-step grid"
    )
    ap.add_argument("--categories", nargs="*", default=[], help="only these categories' views (default: all)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N views (a timing check); 0 = all")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from kpengine.image.datasets import predict_mask
    from kpengine.image.pipeline import estimate_viewpoint, load_image_run
    from kpengine.image.reconstruct.data import block_mean
    from kpengine.image.renderset import view_sample
    from kpengine.image.viewpoint import angle_difference

    sk_net = load_network(args.runs[0], "sketch")
    vox_net = load_network(args.runs[1], "voxels")
    cones = {k: load_network(v, "voxels") for k, v in (c.split("=", 1) for c in args.cone)}
    cone = next(iter(cones.values()))
    size, res = vox_net.config["size"], vox_net.config["resolution"]
    cats = [c.strip() for c in vox_net.config["category"].split(",")]
    test = load_sketch_set(args.test, size, cats)
    chosen = [i for i in range(len(test)) if test.category[i] in (args.categories or cats)]
    test = subset(test, chosen[: args.limit or None])
    n = len(test)
    keep = torch.arange(n)
    rs = load_render_set(args.test)
    where = {v["id"]: k for k, v in enumerate(rs.views)}
    truth = category_voxels(args.shapes, set(zip(test.category, test.model_id)), res)
    cat_index = torch.tensor([cats.index(c) for c in test.category])[keep]
    vp_nets = {
        c: load_image_run(r, "viewpoint", c)[0].eval() for c, r in (a.split("=", 1) for a in args.viewpoint_runs)
    }
    sil_nets = {c: load_image_run(r, "silhouette", c) for c, r in (a.split("=", 1) for a in args.silhouette_runs)}
    t0 = time.perf_counter()
    with torch.no_grad():
        pred = sk_net(normalise(test.images[keep]))
        on = (pred["mask"] > 0).float()
        x_pred = sketch_tensor(on, pred["depth"] * on, pred["normals"] * on[:, None])
        occ, head = vox_net(x_pred, cat_index, with_view=True)
        p_def = torch.sigmoid(occ).numpy()
        # the default run's own viewpoint head on the predicted sketches: the second front/back cue's input
        sketch_prob = torch.softmax(head["azimuth"], -1).numpy() if head is not None else None
    vps, masks, small, fovs = [], [], [], []
    for i in range(n):
        s = view_sample(rs, where[test.ids[i]], ("mask",))
        vps.append(estimate_viewpoint(vp_nets[test.category[i]], s.image, s.mask))
        net, state = sil_nets[test.category[i]]
        m = predict_mask(net, s.image, int(state["config"]["size"]))
        masks.append(m)
        small.append(block_mean(m.astype(np.float32), m.shape[0] // size) > 0.5)
        fovs.append(float(np.degrees(2 * np.arctan(s.camera.intrinsics.width / (2 * s.camera.intrinsics.fx)))))
    on = torch.from_numpy(np.stack(small).astype(np.float32))
    x_sil = torch.cat([on[:, None], x_pred[:, 1:] * on[:, None]], 1)
    cams = test.cameras[keep]
    zero = torch.zeros(n)
    az_est = torch.tensor([v["azimuth"] for v in vps])
    el_est = torch.tensor([v["elevation"] for v in vps])
    p_est = cone_probs(cone, x_sil, cams, az_est, el_est, zero, cat_index, res)
    p_true = cone_probs(cone, x_sil, cams, test.azimuth[keep], test.elevation[keep], test.theta[keep], cat_index, res)
    grids = {"est": 0.5 * (p_def + p_est), "true_view": 0.5 * (p_def + p_true)}
    for name, net in list(cones.items())[1:]:  # further cone runs at the estimate and the true viewpoint
        grids[f"est:{name}"] = 0.5 * (p_def + cone_probs(net, x_sil, cams, az_est, el_est, zero, cat_index, res))
        p = cone_probs(net, x_sil, cams, test.azimuth[keep], test.elevation[keep], test.theta[keep], cat_index, res)
        grids[f"true_view:{name}"] = 0.5 * (p_def + p)
    print(f"estimates and cones: {time.perf_counter() - t0:.1f} s", flush=True)
    views = {"est": (az_est.numpy(), el_est.numpy())}
    truth_all = np.stack([truth[(c, m)] for c, m in zip(test.category, test.model_id)]) if args.hedge_grid else None
    hedge_grid: dict[str, np.ndarray] = {}
    ious, angles = {}, {}
    for start, first in (("refined", "est"), ("refined_default", None)):
        if start not in args.starts:
            continue
        cur, starts, k = (grids[first] if first else p_def), vps, args.hypotheses
        for r in range(args.rounds):
            t = time.perf_counter()
            got = [refine_view(cur[i], masks[i], starts[i], fovs[i], k, args.steps) for i in range(n)]
            a, e, th, fit = (torch.tensor(c, dtype=torch.float32) for c in zip(*got))
            name = start if r == 0 else f"{start}_{r + 1}"
            p_cone = cone_probs(cone, x_sil, cams, a, e, th, cat_index, res)
            grids[name] = cur = 0.5 * (p_def + p_cone)
            if (
                start == "refined"
                and r == 0
                and (args.hedge or args.hedge_grid or args.hedge_cue or args.hedge_cue_sketches)
            ):
                p_half = cone_probs(cone, x_sil, cams, a + 180.0, e, th, cat_index, res)
                for wh in args.hedge:
                    w, h = (float(Fraction(v)) for v in wh.split(","))
                    grids[f"hedge({wh})"] = hedge_probs(p_def, p_cone, p_half, w, h)
                if args.hedge_cue:
                    prob = np.array([v["azimuth_probabilities"] for v in vps])
                    h_view = cue_share(half_turn_share(prob, a.numpy()))[:, None, None, None]
                    for w in args.hedge_cue:
                        grids[f"hedge_cue({w})"] = hedge_probs(p_def, p_cone, p_half, float(Fraction(w)), h_view)
                for w in args.hedge_cue_sketches:
                    if sketch_prob is None:
                        raise SystemExit("--hedge-cue-sketches needs a default voxels run with a viewpoint head")
                    h_view = cue_share(half_turn_share(sketch_prob, a.numpy()))[:, None, None, None]
                    grids[f"hedge_cue_sketches({w})"] = hedge_probs(p_def, p_cone, p_half, float(Fraction(w)), h_view)
                if args.hedge_grid:
                    hedge_grid = {
                        f"{w:.4f},{h:.4f}": voxel_iou(hedge_probs(p_def, p_cone, p_half, w, h) > 0.5, truth_all)
                        for w, h in hedge_grid_pairs(args.hedge_grid)
                    }
            views[name] = (a.numpy(), e.numpy())
            ious[name] = fit.numpy()
            angles[name] = torch.stack([a, e, th], 1).tolist()
            if r == 0:  # which of the refined angles carry the gain: the azimuth alone, or all but the roll
                p = cone_probs(cone, x_sil, cams, a, el_est, zero, cat_index, res)
                grids[f"{name}/azimuth_only"] = 0.5 * (p_def + p)
                grids[f"{name}/no_roll"] = 0.5 * (p_def + cone_probs(cone, x_sil, cams, a, e, zero, cat_index, res))
            # a further round re-poses the re-placed grid from the refined viewpoint alone (one hypothesis)
            starts, k = [{"azimuth": float(a[i]), "elevation": float(e[i]), "theta": float(th[i])} for i in range(n)], 1
            print(f"{name}: {(time.perf_counter() - t) / n:.3f} s a view", flush=True)
    grids["default"] = p_def
    results = {}
    clouds: dict[str, np.ndarray] = {}
    for cat in sorted(set(test.category), key=cats.index):
        idx = [i for i in range(n) if test.category[i] == cat]
        rows: dict[str, list[tuple[float, float]]] = {k: [] for k in grids}
        for i in idx:
            gt = truth[(cat, test.model_id[i])]
            gt_pts = clouds.setdefault(test.model_id[i], cloud(args.shapes, cat, test.model_id[i]))
            for k, g in grids.items():
                rows[k].append((float(voxel_iou(g[i] > 0.5, gt)), chamfer_distance(mesh_points(g[i]), gt_pts)))
        base = np.array([a for a, _ in rows["est"]])
        results[cat] = {
            "views": len(idx),
            **{
                k: {
                    "iou": round(float(np.mean([a for a, _ in v])), 4),
                    "iou_sem": round(float(np.std([a for a, _ in v]) / np.sqrt(len(v))), 4),
                    "chamfer": round(float(np.nanmean([b for _, b in v])), 4),
                    "paired_vs_est": round(float(np.mean(np.array([a for a, _ in v]) - base)), 4),
                    "paired_vs_est_sem": round(float(np.std(np.array([a for a, _ in v]) - base) / np.sqrt(len(v))), 4),
                }
                for k, v in rows.items()
            },
            "azimuth_error": {
                k: {
                    "median_deg": round(float(np.median(err)), 1),
                    "acc30": round(float((err <= 30).mean()), 3),
                    "elevation_median_deg": round(float(np.median(np.abs(e[idx] - test.elevation[idx].numpy()))), 1),
                }
                for k, (a, e) in views.items()
                for err in [angle_difference(a[idx], test.azimuth[idx].numpy())]
            },
            "hedge_grid": {k: [round(float(a), 5) for a in v[idx]] for k, v in hedge_grid.items()},
            "refined_silhouette_iou": {k: round(float(np.nanmean(v[idx])), 4) for k, v in ious.items()},
            # view by view, for paired differences between runs of this script (e.g. two sets of viewpoint runs)
            "per_view": {
                "ids": [test.ids[i] for i in idx],
                **{k: [round(a, 5) for a, _ in v] for k, v in rows.items()},
            },
        }
        print(cat, json.dumps({k: v for k, v in results[cat].items() if k not in ("per_view", "hedge_grid")}),
              flush=True)  # fmt: skip
    out = {
        "runs": args.runs,
        "cone": args.cone,
        "viewpoint_runs": args.viewpoint_runs,
        "silhouette_runs": args.silhouette_runs,
        "hypotheses": args.hypotheses,
        "steps": args.steps,
        "rounds": args.rounds,
        "hedge": args.hedge,
        "hedge_grid_steps": args.hedge_grid,
        "test": args.test,
        "loadavg_1m": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": round(time.perf_counter() - t0, 1),
        "categories": results,
        "refined_angles": {"ids": test.ids, **angles},  # azimuth, elevation, roll per view, each refined row
        # the viewpoint runs' azimuth distributions (24 bins, mirror-averaged), per view: a front/back cue's input
        "azimuth_probabilities": [v.get("azimuth_probabilities") for v in vps],
    }
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
