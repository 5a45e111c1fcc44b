"""Figures of real data (written outside the repository, never committed): a ShapeNet chair rendered with its
keypoints and semantic map, textured / MTL-coloured renders of a chair, a bathtub and two airplanes beside grey
ones (``colour_renders.png``, with the cost of colour per view), and the real chair photo's mask overlaid with a
refined pose of the chair mesh.

    .venv/bin/python benchmarks/render_figures.py --data ../shared/data --out demo_out/render [--skip-photo]

The photo's pose: ``fit_pose_to_mask`` (every 24 x 12 azimuth x elevation bin centre inside elevations
[-20, 70] for fields of view 15/30/45/60 degrees, scored by Embree silhouette IoU at 64 px, the best 5 refined
with the focal length free, in-plane roll at most 30 degrees). Rows: the chair 88382b87 (the one with textures)
and each of ``--photo-meshes``; left: mask (green) and best coarse pose (red); right: refined (blue) and keypoints
(semantic ids; hollow = occluded).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image
from shared_data import shared_data  # a sibling script

from kpengine.data import KeypointNetDataset
from kpengine.geometry.transforms import bbox_centre
from kpengine.io.mesh import load_mesh
from kpengine.render.cameras import Intrinsics, Viewpoint, fit_distance, make_camera, rt_to_viewpoint
from kpengine.render.overlay import draw_keypoints, overlay_mask, save_png, tile
from kpengine.render.project import dense_point_map, pca_rgb, project_points, semantic_map
from kpengine.render.raycast import MeshRenderer
from kpengine.render.refine import fit_pose_to_mask
from kpengine.viz.palette import semantic_rgb

CHAIR = "88382b877be91b2a572f8e1c1caad99e"
COLOUR_MODELS = (  # textured chair; bathtub with a yellow tap; airplanes: 28 MTL colours, 13 (textures missing)
    "03001627/88382b877be91b2a572f8e1c1caad99e",
    "02808440/bf8e5bbe0e0938d98afd316e82119b42",
    "02691156/4e2769ec84c0bd0454eefcdc602d4520",
    "02691156/4de5861211ad5b95e7ef9fff09638f8e",
)


def colour_figure(data: Path, out: Path, size: int = 256) -> None:
    """Rows: models of ``COLOUR_MODELS``; columns: three azimuths with MTL colours / textures, then grey."""
    k = Intrinsics.from_fov(size, size, 30.0)
    tiles, t_grey, t_colour, n_views = [], 0.0, 0.0, 0
    for rel in COLOUR_MODELS:
        obj = data / "keypointnet/meshes" / rel / "models/model_normalized.obj"
        mesh = load_mesh(obj)
        coloured, grey = MeshRenderer.from_obj(obj, mesh), MeshRenderer(mesh)
        radius, centre = float(np.linalg.norm(np.ptp(mesh.vertices, axis=0))) / 2, bbox_centre(mesh.vertices)
        cams = [make_camera(Viewpoint(az, 20.0, fit_distance(radius, k, 0.85)), k, centre) for az in (35, 150)]
        t0 = time.perf_counter()
        rg = grey.render_batch(cams)
        t1 = time.perf_counter()
        rc = coloured.render_batch(cams)
        t_grey, t_colour, n_views = t_grey + t1 - t0, t_colour + time.perf_counter() - t1, n_views + len(cams)
        tiles += [r.color for r in rc] + [r.color for r in rg]
        app = coloured.appearance
        print(
            f"{rel[:17]}: {len(mesh.faces)} faces, {len(app.materials)} materials, "
            f"{sum(m.texture is not None for m in app.materials)} textures, {len(app.missing_textures)} missing"
        )
    print(
        f"colour: {1000 * t_colour / n_views:.0f} ms/view vs grey {1000 * t_grey / n_views:.0f} ms/view "
        f"({size} px, {n_views} views; load {os.getloadavg()})"
    )
    save_png(out / "colour_renders.png", tile(tiles, 4))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=shared_data())
    ap.add_argument("--out", default="demo_out/render")
    ap.add_argument(
        "--photo-meshes", nargs="*", default=["341a2d3df9800314fa260f4362cac599"], help="more chairs to fit"
    )
    ap.add_argument("--skip-photo", action="store_true", help="skip the photo pose fit (slow)")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    colour_figure(data, out)
    ds = KeypointNetDataset(data / "keypointnet", "chair", "all")
    shape = ds.by_id(CHAIR)
    mesh = load_mesh(shape.mesh_path)
    center = bbox_centre(mesh.vertices)
    k = Intrinsics.from_fov(256, 256, 30.0)
    renderer = MeshRenderer.from_obj(shape.mesh_path, mesh)  # textures; faces in file order (face_index)
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
        sem_rgb = np.where((sem >= 0)[..., None], semantic_rgb(np.maximum(sem, 0)), 230 * r.mask[..., None])
        tiles.append(sem_rgb.astype(np.uint8))
    save_png(out / "chair_mesh_render.png", tile(tiles, 5))
    if args.skip_photo:
        return

    photo = np.asarray(Image.open(data / "images/chair_photo_rgb.png").convert("RGB"))
    mask = np.asarray(Image.open(data / "images/chair_photo_mask.png").convert("L")) > 127
    panels = []
    for model_id in (CHAIR, *args.photo_meshes):
        shape = ds.by_id(model_id)
        mesh = load_mesh(shape.mesh_path)
        t0 = time.perf_counter()
        best, cands, _ = fit_pose_to_mask(mesh, mask, keep=5, elevation_range=(-20, 70), max_roll=30)
        seconds = time.perf_counter() - t0
        r = MeshRenderer(mesh).render(best.camera)
        coarse = MeshRenderer(mesh).render(cands[0].camera).mask
        proj = project_points(shape.keypoints, best.camera, r.depth)
        v = rt_to_viewpoint(best.camera.R, best.camera.t, bbox_centre(mesh.vertices))
        fov = 2 * np.degrees(np.arctan(0.5 * mask.shape[1] / best.camera.intrinsics.fx))
        panels.append(overlay_mask(overlay_mask(photo, mask, (0, 160, 0), 0.25), coarse, (220, 30, 30), 0.35))
        panels.append(
            draw_keypoints(overlay_mask(photo, r.mask, (30, 60, 220), 0.35), proj.uv, shape.semantic_ids, proj.visible)
        )
        iou = (r.mask & mask).sum() / (r.mask | mask).sum()
        print(
            f"{model_id[:8]}: coarse IoU {cands[0].iou:.3f} (64 px; az {cands[0].azimuth}, el {cands[0].elevation}, "
            f"fov {cands[0].fov}); refined IoU (480 px) {iou:.3f} at az {v.azimuth:.1f} el {v.elevation:.1f} "
            f"roll {v.theta:.1f} fov {fov:.1f}; search + 5 refinements {seconds:.1f} s; load {os.getloadavg()}"
        )
    save_png(out / "chair_photo_refined.png", tile(panels, 2))


if __name__ == "__main__":
    main()
