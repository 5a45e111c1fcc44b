"""Oracle PCK on a rendered benchmark: true camera, perturbed camera, perturbed camera + silhouette refinement.

    .venv/bin/python benchmarks/render_oracle.py --benchmark DIR --data ROOT [--images 12] [--seed 0]

Perturbation: azimuth and elevation +-U(5, 15) degrees, distance x U(0.88, 1.12), in-plane N(0, 3) degrees.
PCD-only models are refined against a proxy mesh: a small tetrahedron on each of 500 cloud points.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

from kpengine.categories import resolve_category
from kpengine.io import layout
from kpengine.io.benchmark2d import load_benchmark
from kpengine.io.mesh import Mesh, load_mesh
from kpengine.io.pcd import load_pcd
from kpengine.metrics.pck2d import pck
from kpengine.render.benchmark2d import oracle_predictions
from kpengine.render.cameras import Camera, Viewpoint, make_camera, rt_to_viewpoint
from kpengine.render.refine import PoseRefiner
from kpengine.render.splat import default_radius


def tetra_proxy(points: np.ndarray, n: int = 500, seed: int = 0) -> Mesh:
    """A tetrahedron of circumradius ~ the splat radius on each of ``n`` cloud points: a mesh for silhouettes."""
    r = 1.6 * default_radius(points)
    pts = points[np.random.default_rng(seed).choice(len(points), min(n, len(points)), replace=False)]
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float64) * r / np.sqrt(3)
    verts = (pts[:, None, :] + tet[None]).reshape(-1, 3)
    faces = (
        np.arange(len(pts))[:, None, None] * 4 + np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])[None]
    ).reshape(-1, 3)
    return Mesh(verts, faces)


def project_all(anns: dict, cams: dict) -> dict:
    out = {}
    for i, ann in anns.items():
        uv, _ = cams[i].project(np.array(ann["kps_xyz"]).reshape(-1, 3))
        out[i] = {str(s): p for s, p in zip(ann["kps_ids"], uv.tolist())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    index, anns = load_benchmark(args.benchmark)
    rng = np.random.default_rng(args.seed)
    ids = sorted(anns)[:: max(1, len(anns) // args.images)][: args.images]
    anns = {i: anns[i] for i in ids}
    cat = resolve_category(index["category"])
    true = {i: Camera.from_json(a["camera"]) for i, a in anns.items()}
    perturbed, refined, times, ious = {}, {}, [], []
    for i, ann in anns.items():
        c = np.array(ann["center"])
        v = rt_to_viewpoint(true[i].R, true[i].t, c)
        s = rng.choice([-1, 1], 2) * rng.uniform(5, 15, 2)
        pv = Viewpoint(
            v.azimuth + s[0], v.elevation + s[1], v.distance * rng.uniform(0.88, 1.12), v.theta + rng.normal(0, 3)
        )
        perturbed[i] = make_camera(pv, true[i].intrinsics, c)
        mesh_file = layout.mesh_path(Path(args.data), cat.synset, ann["model_id"])
        if ann["source"] == "mesh":
            mesh = load_mesh(mesh_file)
        else:
            mesh = tetra_proxy(
                load_pcd(layout.pcd_path(Path(args.data), cat.synset, ann["model_id"])).points.astype(np.float64)
            )
        mask = np.asarray(Image.open(Path(args.benchmark) / ann["mask"])) > 127
        refiner = PoseRefiner(mesh, center=c)
        r = refiner.refine(mask, perturbed[i])
        refined[i] = r.camera
        times.append(r.seconds)
        ious.append((r.iou_before, r.iou_after))
    rows = {
        "true camera": oracle_predictions(anns),
        "perturbed camera": project_all(anns, perturbed),
        "perturbed + refined": project_all(anns, refined),
    }
    print(
        f"{index['category']}: {len(anns)} images; refinement median {np.median(times):.2f} s; "
        f"silhouette IoU {np.mean([a for a, _ in ious]):.3f} -> {np.mean([b for _, b in ious]):.3f}; "
        f"load {os.getloadavg()}"
    )
    print(
        "| camera | PCK@0.05 img | PCK@0.1 img | PCK@0.1 bbox | PCK@0.15 bbox | visible kps |\n"
        "|---|---|---|---|---|---|"
    )
    for name, preds in rows.items():
        t = pck(anns, preds)["all"]
        print(
            f"| {name} | {t['img@0.05']:.3f} | {t['img@0.1']:.3f} | {t['bbox@0.1']:.3f} | "
            f"{t['bbox@0.15']:.3f} | {t['n']} |"
        )


if __name__ == "__main__":
    main()
