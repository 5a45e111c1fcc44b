"""Render V views of each shape with the per-pixel cloud index, and cache them on disk.

The official bathtub and bed clouds have no meshes here, so a view draws the 2,048-point cloud
as oriented surfels (:class:`~kpengine.render.gl.GLSplatRenderer`, ``oriented=True``) in the
cloud's own colours: every pixel then shows exactly one cloud point (``Render.index``), which
is what the correspondence and the back-projection need. Cameras: ``n_views`` on two rings
(elevations 15 and 45 degrees, azimuths evenly spaced and the upper ring turned by half a step)
looking at the bounding-box centre from the distance at which the bounding sphere fills 90 % of
the image, so neighbouring views overlap by much and every view sees the shape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.geometry.transforms import bbox_centre
from kpengine.io.multiview import (
    ShapeViews,
    load_shape_views,
    load_view_meta,
    save_shape_views,
    save_view_meta,
    shape_views_path,
)
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, fit_distance, make_camera
from kpengine.render.splat import default_radius

log = logging.getLogger(__name__)

ELEVATIONS = (15.0, 45.0)


def view_cameras(points: np.ndarray, size: int, n_views: int, fov: float = 30.0) -> list[Camera]:
    """``n_views`` cameras of ``size`` x ``size`` px around the cloud (N, 3), on the rings above."""
    if n_views < 2:
        raise DataError(f"MvDeCor needs at least 2 views per shape, got {n_views}")
    k = Intrinsics.from_fov(size, size, fov)
    centre = bbox_centre(points)
    distance = fit_distance(float(np.linalg.norm(points - centre, axis=1).max()), k, 0.9)
    rings = len(ELEVATIONS)
    per_ring = [n_views // rings + (1 if r < n_views % rings else 0) for r in range(rings)]
    cams = []
    for r, (el, n) in enumerate(zip(ELEVATIONS, per_ring)):
        for j in range(n):
            az = (360.0 * (j + 0.5 * r)) / n
            cams.append(make_camera(Viewpoint(az, el, distance), k, centre))
    return cams


def render_shape_views(
    points: np.ndarray,
    colors: np.ndarray | None,
    model_id: str,
    *,
    size: int = 96,
    n_views: int = 12,
    fov: float = 30.0,
    splat_scale: float = 1.5,
) -> ShapeViews:
    """The views of one cloud (N, 3) with colours (N, 3) uint8 or None; DataError naming the model
    when a view sees nothing."""
    from kpengine.render.gl import GLSplatRenderer

    points = np.asarray(points, np.float64)
    if len(points) == 0:
        raise DataError("empty cloud: nothing to render", model_id=model_id)
    renderer = GLSplatRenderer(
        points, colors=colors, radius=splat_scale * default_radius(points), oriented=True, name=model_id
    )
    try:
        renders = [renderer.render(c, with_location=False) for c in view_cameras(points, size, n_views, fov)]
    finally:
        renderer.release()
    empty = [v for v, r in enumerate(renders) if not r.mask.any()]
    if empty:
        raise DataError(f"views {empty} of {n_views} see nothing of the shape (empty renders)", model_id=model_id)
    k = renders[0].camera.intrinsics
    return ShapeViews(
        model_id=model_id,
        color=np.stack([r.color for r in renders]),
        normals=np.stack([r.normals for r in renders]).astype(np.float32),
        depth=np.stack([r.depth for r in renders]).astype(np.float32),
        index=np.stack([r.index for r in renders]),
        intrinsics=np.array([k.fx, k.fy, k.cx, k.cy]),
        R=np.stack([r.camera.R for r in renders]),
        t=np.stack([r.camera.t for r in renders]),
    )


def build_view_cache(
    root: str | Path,
    shapes: Iterable[Shape],
    category: str,
    *,
    size: int = 96,
    n_views: int = 12,
    fov: float = 30.0,
    splat_scale: float = 1.5,
) -> dict[str, Any]:
    """Render every shape not yet in the cache ``root`` (resumable: existing files are kept).
    A cache made with other settings is refused. Returns {"rendered", "kept", "failed": {id: why}}."""
    root = Path(root)
    shapes = list(shapes)
    n_points = {len(s.points) for s in shapes}
    meta = {
        "category": category,
        "size": size,
        "n_views": n_views,
        "fov": fov,
        "splat_scale": splat_scale,
        "n_points": max(n_points) if n_points else 0,
    }
    if (root / "meta.json").is_file():
        old = load_view_meta(root)
        diff = [k for k in meta if k != "n_points" and old.get(k) != meta[k]]
        if diff:
            raise DataError(
                f"view cache made with other settings ({', '.join(f'{k} {old.get(k)!r}' for k in diff)}); "
                "use another directory",
                path=root,
            )
    root.mkdir(parents=True, exist_ok=True)
    save_view_meta(root, meta)
    rendered, kept, failed = 0, 0, {}
    for shape in shapes:
        path = shape_views_path(root, shape.model_id)
        if path.is_file():
            kept += 1
            continue
        try:
            views = render_shape_views(
                shape.points, shape.colors, shape.model_id, size=size, n_views=n_views, fov=fov, splat_scale=splat_scale
            )
        except DataError as exc:
            failed[shape.model_id] = exc.reason
            log.warning("%s", exc)
            continue
        save_shape_views(path, views)
        rendered += 1
    return {"rendered": rendered, "kept": kept, "failed": failed}


class ViewCache:
    """Read access to a view cache directory (files read on demand, the last few kept)."""

    def __init__(self, root: str | Path, category: str | None = None):
        self.root = Path(root)
        self.meta = load_view_meta(self.root)
        if category is not None and self.meta["category"] != category:
            raise DataError(
                f"view cache holds category {self.meta['category']!r}, not {category!r}", path=self.root / "meta.json"
            )
        self._load = lru_cache(maxsize=512)(self._read)

    def __contains__(self, model_id: str) -> bool:
        return shape_views_path(self.root, model_id).is_file()

    def _read(self, model_id: str) -> ShapeViews:
        path = shape_views_path(self.root, model_id)
        if not path.is_file():
            raise DataError("no views of this model in the cache (render them first)", path=path, model_id=model_id)
        return load_shape_views(path, n_points=self.meta["n_points"] or None)

    def get(self, model_id: str) -> ShapeViews:
        return self._load(model_id)
