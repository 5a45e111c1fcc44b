"""A SPair-like 2D keypoint benchmark rendered from annotated real shapes.

The folder layout and the annotation fields are :mod:`kpengine.io.benchmark2d`'s; PCK
(paper eq. 8) is :func:`kpengine.metrics.pck2d.pck`. This module renders the views and writes
them, and gives the oracle predictions (true shape, true camera).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.geometry.transforms import bbox_centre
from kpengine.io.benchmark2d import image_path, mask_path, save_annotation, save_index
from kpengine.io.mesh import load_mesh
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, azimuth_bin, elevation_bin, fit_distance, make_camera
from kpengine.render.overlay import save_png
from kpengine.render.project import Projection, project_points, splat_visibility
from kpengine.render.raycast import MeshRenderer, Render
from kpengine.render.splat import default_radius, render_points

VERSION = 2  # 2: splat visibility by splat_visibility (version 1 counted splat gaps as visible)


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) in [0, 1]: a random two-colour gradient with low-frequency noise."""
    a, b = rng.uniform(0.1, 0.95, 3), rng.uniform(0.1, 0.95, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    s = np.clip(0.5 + (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)), 0, 1)[..., None]
    coarse = rng.normal(0, 0.06, (8, 8, 3))
    noise = np.kron(coarse, np.ones((size // 8 + 1, size // 8 + 1, 1)))[:size, :size]
    return np.clip(a * (1 - s) + b * s + noise, 0, 1)


@dataclass
class View:
    """One rendered view of a shape, and the camera's centre point (bounding-box centre)."""

    render: Render
    center: np.ndarray


def shape_geometry(shape: Shape) -> tuple[MeshRenderer | None, np.ndarray]:
    """A ray-cast renderer when the shape has a mesh, else None (splat its cloud); and the bbox centre."""
    if shape.mesh_path is not None and Path(shape.mesh_path).is_file():
        mesh = load_mesh(shape.mesh_path)
        return MeshRenderer(mesh, name=str(shape.mesh_path)), bbox_centre(mesh.vertices)
    return None, bbox_centre(shape.points)


def render_shape(shape: Shape, renderer: MeshRenderer | None, camera: Camera, background=None, light=None) -> Render:
    if renderer is not None:
        return renderer.render(camera, background, light)
    return render_points(
        shape.points,
        camera,
        radius=default_radius(shape.points),
        colors=shape.colors,
        background=background,
        light=light,
        name=shape.model_id,
    )


def keypoint_visibility(shape: Shape, renderer: MeshRenderer | None, camera: Camera, render: Render) -> Projection:
    """Keypoints (K, 3) projected with visibility: the depth test on meshes, :func:`splat_visibility` on splats."""
    if renderer is not None:
        return project_points(shape.keypoints, camera, render.depth)
    return splat_visibility(shape.keypoints, camera, render, default_radius(shape.points))


def bounding_box(mask: np.ndarray) -> list[int]:
    """[xmin, ymin, xmax, ymax] of a (H, W) mask, inclusive pixel indices."""
    ii, jj = np.nonzero(mask)
    return [int(jj.min()), int(ii.min()), int(jj.max()), int(ii.max())]


def build_benchmark(
    root: str | Path,
    category: str,
    split: str,
    out: str | Path,
    *,
    views: int = 3,
    size: int = 256,
    seed: int = 0,
    fov: float = 30.0,
) -> dict:
    """Render ``views`` random views of every model of the split; returns the index written to benchmark.json."""
    out = Path(out)
    ds = KeypointNetDataset(root, category, split)
    if not len(ds):
        raise DataError(f"no usable shapes to render: {ds.problem_summary()}")
    rng = np.random.default_rng(seed)
    k = Intrinsics.from_fov(size, size, fov)
    ids = []
    for shape in ds:
        renderer, center = shape_geometry(shape)
        radius = float(np.linalg.norm(shape.points - center, axis=1).max())
        for v in range(views):
            view = Viewpoint(
                float(rng.uniform(0, 360)),
                float(rng.uniform(-10, 45)),
                fit_distance(radius, k, float(rng.uniform(0.65, 0.9))),
                float(rng.normal(0, 5)),
            )
            cam = make_camera(view, k, center)
            light = rng.normal(size=3) + np.array([0, 1.5, 0]) if rng.random() < 0.7 else None
            r = render_shape(shape, renderer, cam, random_background(rng, size), light)
            if not r.mask.any():
                continue
            proj = keypoint_visibility(shape, renderer, cam, r)
            image_id = f"{shape.model_id}_{v}"
            save_png(image_path(out, image_id), r.color)
            save_png(mask_path(out, image_id), r.mask.astype(np.uint8) * 255)
            ann = {
                "filename": f"images/{image_id}.png",
                "mask": f"masks/{image_id}.png",
                "category": ds.category.name,
                "model_id": shape.model_id,
                "image_width": size,
                "image_height": size,
                "bndbox": bounding_box(r.mask),
                "kps": np.round(proj.uv, 3).tolist(),
                "kps_ids": shape.semantic_ids.tolist(),
                "kps_visible": proj.visible.astype(int).tolist(),
                "kps_xyz": np.round(shape.keypoints.astype(float), 6).tolist(),
                "viewpoint": {
                    "azimuth": view.azimuth,
                    "elevation": view.elevation,
                    "distance": view.distance,
                    "theta": view.theta,
                    "azimuth_bin": int(azimuth_bin(view.azimuth)),
                    "elevation_bin": int(elevation_bin(view.elevation)),
                },
                "center": center.tolist(),
                "camera": cam.to_json(),
                "source": "mesh" if renderer is not None else "pcd",
            }
            save_annotation(out, image_id, ann)
            ids.append(image_id)
    index = {
        "version": VERSION,
        "category": ds.category.name,
        "split": split,
        "size": size,
        "views": views,
        "seed": seed,
        "fov": fov,
        "images": ids,
        "skipped_models": [str(p) for p in ds.problems if p.fatal],
    }
    save_index(out, index)
    return index


def oracle_predictions(annotations: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    """Keypoints projected with the true shape and the true camera."""
    out = {}
    for image_id, ann in annotations.items():
        cam = Camera.from_json(ann["camera"])
        uv, _ = cam.project(np.array(ann["kps_xyz"], np.float64).reshape(-1, 3))
        out[image_id] = {str(s): p for s, p in zip(ann["kps_ids"], uv.tolist())}
    return out
