"""A SPair-like 2D keypoint benchmark rendered from annotated real shapes, and PCK (paper eq. 8).

Layout of a benchmark folder::

    benchmark.json            {"version", "category", "split", "size", "views", "seed", "images": [id, ...]}
    images/<id>.png           the rendered photo-like image (random background and light)
    masks/<id>.png            the object mask (0/255)
    annotations/<id>.json     one per image, close to SPair-71k's fields (below)

``<id>`` is ``<model_id>_<view>``. An annotation holds ``filename``, ``category``, ``model_id``,
``image_width``, ``image_height``, ``bndbox`` ``[xmin, ymin, xmax, ymax]`` (pixels, from the
mask), ``kps`` (K x [u, v] pixels, OpenCV convention of :mod:`kpengine.render.cameras`),
``kps_ids`` (semantic ids), ``kps_visible`` (0/1 from the depth buffer), ``kps_xyz`` (model
frame), ``viewpoint`` (azimuth, elevation, distance, theta and their 24/12 bins), ``camera``
(intrinsics and R, t) and ``source`` (``mesh`` or ``pcd``: splatted point cloud).

PCK (eq. 8): a visible keypoint is correct when its prediction lies within
``alpha * max(h, w)`` pixels, where ``(h, w)`` is the image size (``alpha_img``) or the
bounding box size (``alpha_bbox``). Predictions file: ``{"<id>": {"<semantic_id>": [u, v]}}``;
a missing image or keypoint counts as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.io.atomic import read_json, write_json
from kpengine.io.mesh import load_mesh
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, azimuth_bin, elevation_bin, fit_distance, make_camera
from kpengine.render.overlay import save_png
from kpengine.render.project import Projection, project_points, splat_visibility
from kpengine.render.raycast import MeshRenderer, Render
from kpengine.render.splat import default_radius, render_points

ALPHAS = (0.05, 0.1, 0.15)
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
        return MeshRenderer(mesh, name=str(shape.mesh_path)), (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    return None, (shape.points.min(0) + shape.points.max(0)) / 2


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
            save_png(out / "images" / f"{image_id}.png", r.color)
            save_png(out / "masks" / f"{image_id}.png", r.mask.astype(np.uint8) * 255)
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
            write_json(out / "annotations" / f"{image_id}.json", ann, indent=1)
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
    write_json(out / "benchmark.json", index, indent=1)
    return index


def load_benchmark(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """The index and every annotation by image id; errors name the file."""
    path = Path(path)
    index = read_json(path / "benchmark.json")
    if not isinstance(index, dict) or "images" not in index:
        raise DataError("not a kpengine 2D benchmark index (no 'images')", path=path / "benchmark.json")
    return index, {i: read_json(path / "annotations" / f"{i}.json") for i in index["images"]}


def pck(
    annotations: dict[str, dict], predictions: dict[str, dict[str, list[float]]], alphas=ALPHAS
) -> dict[str, dict[str, float]]:
    """PCK per category (and "all") at each alpha, for ``img`` and ``bbox`` normalisation, over visible keypoints.

    Returns ``{category: {"img@0.1": value, "bbox@0.1": value, ..., "n": visible keypoints}}``."""
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for image_id, ann in annotations.items():
        pred = predictions.get(image_id, {})
        x0, y0, x1, y1 = ann["bndbox"]
        img_size = max(ann["image_width"], ann["image_height"])
        box_size = max(x1 - x0 + 1, y1 - y0 + 1)
        for (u, v), sid, vis in zip(ann["kps"], ann["kps_ids"], ann["kps_visible"]):
            if not vis:
                continue
            p = pred.get(str(sid))
            err = float(np.hypot(p[0] - u, p[1] - v)) if p is not None and np.isfinite(p).all() else np.inf
            rows.setdefault(ann["category"], []).append((err, img_size, box_size))
    out = {}
    every = [r for rs in rows.values() for r in rs]
    for cat, rs in {**rows, "all": every}.items():
        e, img, box = (np.array(c, np.float64) for c in zip(*rs)) if rs else (np.zeros(0),) * 3
        res: dict[str, float] = {"n": len(rs)}
        for a in alphas:
            res[f"img@{a:g}"] = float((e <= a * img).mean()) if rs else float("nan")
            res[f"bbox@{a:g}"] = float((e <= a * box).mean()) if rs else float("nan")
        out[cat] = res
    return out


def read_predictions(path: str | Path) -> dict[str, dict[str, list[float]]]:
    preds = read_json(path)
    if not isinstance(preds, dict) or not all(isinstance(v, dict) for v in preds.values()):
        raise DataError('predictions must be {"<image_id>": {"<semantic_id>": [u, v]}}', path=path)
    return preds


def oracle_predictions(annotations: dict[str, dict]) -> dict[str, dict[str, list[float]]]:
    """Keypoints projected with the true shape and the true camera."""
    out = {}
    for image_id, ann in annotations.items():
        cam = Camera.from_json(ann["camera"])
        uv, _ = cam.project(np.array(ann["kps_xyz"], np.float64).reshape(-1, 3))
        out[image_id] = {str(s): p for s, p in zip(ann["kps_ids"], uv.tolist())}
    return out
