"""Figures of real data (written outside the repository, never committed): a ShapeNet chair rendered with its
keypoints and semantic map, and the real chair photo's mask overlaid with a refined pose of the chair mesh.

    .venv/bin/python benchmarks/render_figures.py --data ../shared/data --out demo_out/render

The photo's initial pose comes from a coarse search over the 24 azimuth bins x 4 elevations (best hard IoU at
48 px), then silhouette refinement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kpengine.data import KeypointNetDataset
from kpengine.io.mesh import load_mesh
from kpengine.render.cameras import Intrinsics, Viewpoint, azimuth_bin_center, fit_distance, make_camera
from kpengine.render.overlay import draw_keypoints, overlay_mask, save_png, semantic_color, tile
from kpengine.render.project import dense_point_map, pca_rgb, project_points, semantic_map
from kpengine.render.raycast import MeshRenderer
from kpengine.render.refine import PoseRefiner, scale_intrinsics

CHAIR = "88382b877be91b2a572f8e1c1caad99e"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="demo_out/render")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    ds = KeypointNetDataset(data / "keypointnet", "chair", "all")
    shape = ds.by_id(CHAIR)
    mesh = load_mesh(shape.mesh_path)
    center = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    k = Intrinsics.from_fov(256, 256, 30.0)
    renderer = MeshRenderer(mesh)
    tiles = []
    for az in (35.0, 150.0):
        cam = make_camera(Viewpoint(az, 20.0, fit_distance(0.5, k, 0.85)), k, center)
        r = renderer.render(cam)
        proj = project_points(shape.keypoints, cam, r.depth)
        tiles.append(draw_keypoints(r.color, proj.uv, shape.semantic_ids, proj.visible))
        depth = np.where(r.mask, 1 - (r.depth - r.depth[r.mask].min()) / np.ptp(r.depth[r.mask]), 0)
        tiles.append((np.repeat(depth[..., None], 3, -1) * 255).astype(np.uint8))
        tiles.append(((r.normals * 0.5 + 0.5) * 255 * r.mask[..., None]).astype(np.uint8))
        pmap = dense_point_map(r, shape.points)
        emb = np.concatenate([shape.points, np.sin(6 * shape.points)], 1)  # stand-in embedding until issue 6
        rgb = np.zeros((*r.mask.shape, 3))
        rgb[pmap >= 0] = pca_rgb(emb)[pmap[pmap >= 0]]
        tiles.append((rgb * 255).astype(np.uint8))
        sem = semantic_map(pmap, shape.points, shape.keypoints, shape.semantic_ids, radius=0.06)
        sem_rgb = np.where((sem >= 0)[..., None], semantic_color(np.maximum(sem, 0)), 230 * r.mask[..., None])
        tiles.append(sem_rgb.astype(np.uint8))
    save_png(out / "chair_mesh_render.png", tile(tiles, 5))

    photo = np.asarray(Image.open(data / "images/chair_photo_rgb.png").convert("RGB"))
    mask = np.asarray(Image.open(data / "images/chair_photo_mask.png").convert("L")) > 127
    kp = Intrinsics.from_fov(mask.shape[1], mask.shape[0], 30.0)
    refiner = PoseRefiner(mesh)
    t0 = time.perf_counter()
    small_k = scale_intrinsics(kp, 48, 48)
    small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((48, 48), Image.BOX)) > 127
    ii, jj = np.nonzero(mask)
    fill = max(np.ptp(ii), np.ptp(jj)) / mask.shape[0]
    best = (-1.0, None)
    for a in range(24):
        for el in (0.0, 10.0, 20.0, 30.0):
            cam = make_camera(Viewpoint(float(azimuth_bin_center(a)), el, fit_distance(0.5, kp, fill)), kp, center)
            with torch.no_grad():
                s = refiner.silhouette(torch.from_numpy(cam.R), torch.from_numpy(cam.R @ center + cam.t), small_k, 0.05)
            s = s.numpy() > 0.5
            iou = (s & small).sum() / (s | small).sum()
            best = max(best, (iou, cam), key=lambda x: x[0])
    result = refiner.refine(mask, best[1], steps=60, size=96)
    seconds = time.perf_counter() - t0
    before = MeshRenderer(mesh).render(best[1]).mask
    after = MeshRenderer(mesh).render(result.camera).mask
    proj = project_points(shape.keypoints, result.camera, MeshRenderer(mesh).render(result.camera).depth)
    panels = [
        overlay_mask(overlay_mask(photo, mask, (0, 160, 0), 0.25), before, (220, 30, 30), 0.35),
        draw_keypoints(overlay_mask(photo, after, (30, 60, 220), 0.35), proj.uv, shape.semantic_ids, proj.visible),
    ]
    save_png(out / "chair_photo_refined.png", tile(panels, 2))
    print(
        f"coarse IoU {best[0]:.3f}; refined IoU (full res) "
        f"{(after & mask).sum() / (after | mask).sum():.3f} from {(before & mask).sum() / (before | mask).sum():.3f}; "
        f"search + refine {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
