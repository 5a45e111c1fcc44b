"""An output folder of ``kpengine understand``, made by hand from a known shape and camera.

The photo page reads ``keypoints.json``, ``pose.json``, ``semantics.png`` and the photo in the
layout ``kpengine.image.pipeline.write_understanding`` documents. Here the "photo" is a render of
a known model from a known camera (kpengine.render), so everything the page shows has an exact
answer: each keypoint's pixel, the semantic id at each pixel, and the 3D point each pixel sees.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.io.annotations import ModelAnnotation
from kpengine.io.layout import mesh_path, pcd_path
from kpengine.io.mesh import load_mesh
from kpengine.io.pcd import load_pcd
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, fit_distance, make_camera
from kpengine.render.overlay import save_png
from kpengine.render.project import dense_point_map, project_points, semantic_map
from kpengine.render.raycast import MeshRenderer, Render
from kpengine.viz.palette import semantic_rgb


@dataclass
class UnderstandFixture:
    out: Path
    camera: Camera
    render: Render
    semantic: np.ndarray  # (H, W) semantic id per pixel, -1 elsewhere
    keypoints: dict[str, dict]
    xyz: dict[int, np.ndarray]  # semantic id -> the keypoint's position


def make_understand_output(
    root: Path, ann: ModelAnnotation, category: str, out: Path, size: tuple[int, int] = (320, 240)
) -> UnderstandFixture:
    mesh = load_mesh(mesh_path(root, ann.class_id, ann.model_id))  # type: ignore[arg-type]
    points = load_pcd(pcd_path(root, ann.class_id, ann.model_id)).points
    kp_xyz = np.array([k.xyz for k in ann.keypoints], np.float64)
    ids = np.array(ann.semantic_ids, np.int64)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    center = (lo + hi) / 2
    k = Intrinsics.from_fov(size[0], size[1], 30.0)
    radius = float(np.linalg.norm(mesh.vertices - center, axis=1).max())
    camera = make_camera(Viewpoint(35.0, 25.0, fit_distance(radius, k, 0.8)), k, center)
    render = MeshRenderer(mesh, name=ann.model_id).render(camera)
    proj = project_points(kp_xyz, camera, render.depth)
    sem = semantic_map(dense_point_map(render, points), points, kp_xyz, ids, radius=0.05)
    keypoints = {
        str(int(sid)): {
            "uv": [round(float(u), 2), round(float(v), 2)] if np.isfinite([u, v]).all() else None,
            "visible": bool(vis),
            "confidence": 1.0,
            "name": None,
        }
        for sid, (u, v), vis in zip(ids, proj.uv, proj.visible)
    }
    picture = (render.color.astype(np.float64) * 0.35).astype(np.uint8)  # as semantics_picture draws it
    picture[render.mask] = 150
    picture[sem >= 0] = semantic_rgb(sem[sem >= 0])
    out.mkdir(parents=True, exist_ok=True)
    save_png(out / "photo.png", render.color)
    save_png(out / "semantics.png", picture)
    (out / "keypoints.json").write_text(json.dumps(keypoints, indent=1))
    pose = {
        "azimuth": 35.0,
        "elevation": 25.0,
        "theta": 0.0,
        "camera": camera.to_json(),
        "center": center.tolist(),
        "model_id": ann.model_id,
        "category": category,
        "refined_iou": 1.0,
    }
    (out / "pose.json").write_text(json.dumps(pose, indent=1))
    return UnderstandFixture(out, camera, render, sem, keypoints, {int(s): x for s, x in zip(ids, kp_xyz)})
