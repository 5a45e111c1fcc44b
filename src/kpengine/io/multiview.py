"""Multi-view renders of one shape with per-pixel surface correspondence (MvDeCor view caches).

A view cache is a directory: ``meta.json`` (how the views were made: category, image size,
number of views, field of view, splat scale, input cloud size) and one ``<model_id>.npz`` per
shape (NumPy compressed archive, no pickles) holding, for V views of H x W pixels:

``color``   (V, H, W, 3) uint8   shaded colour, white off the object
``normals`` (V, H, W, 3) float16 unit world-frame normals turned towards the camera, 0 off it
``depth``   (V, H, W) float32    z-depth along the optical axis, 0 off the object
``index``   (V, H, W) int16      cloud point seen at each pixel, -1 off the object (clouds up to
                                 32,767 points; loaded arrays keep these compact types)
``intrinsics`` (4,) float64      fx, fy, cx, cy (shared by the views; the camera convention of
                                 :mod:`kpengine.render.cameras`)
``R`` (V, 3, 3), ``t`` (V, 3) float64  world-to-camera rotation and translation of each view

The world position a pixel sees is recomputed from depth and camera (:meth:`ShapeViews.location`)
rather than stored: it is exact, and the files are half the size. Validation happens here, at
the boundary: shapes, types, index range, finite values, a view that sees nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import atomic_open, read_json, write_json

META = "meta.json"
#: meta fields every cache has
META_FIELDS = ("category", "size", "n_views", "fov", "splat_scale", "n_points")


@dataclass
class ShapeViews:
    """V views of one shape (array shapes in the module docstring)."""

    model_id: str
    color: np.ndarray
    normals: np.ndarray
    depth: np.ndarray
    index: np.ndarray
    intrinsics: np.ndarray
    R: np.ndarray
    t: np.ndarray

    @property
    def n_views(self) -> int:
        return int(self.color.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.color.shape[1]), int(self.color.shape[2])

    @property
    def mask(self) -> np.ndarray:
        """(V, H, W) bool: pixels that see the shape."""
        return self.index >= 0

    def location(self, view: int) -> np.ndarray:
        """(H, W, 3) float32 world point seen at each pixel of ``view`` (0 off the object):
        ``X = R^T (z K^-1 [u, v, 1] - t)``."""
        fx, fy, cx, cy = self.intrinsics
        h, w = self.size
        z = self.depth[view].astype(np.float64)
        jj, ii = np.meshgrid(np.arange(w), np.arange(h))
        cam = np.stack([(jj - cx) / fx * z, (ii - cy) / fy * z, z], axis=-1)
        world = (cam - self.t[view]) @ self.R[view]
        world[~self.mask[view]] = 0.0
        return world.astype(np.float32)


def save_shape_views(path: str | Path, views: ShapeViews) -> None:
    """Write one shape's views as a compressed .npz, atomically."""
    _check(views, path)
    if views.index.max(initial=-1) > np.iinfo(np.int16).max:
        raise DataError(
            "cloud indices above 32,767 do not fit the int16 index field", path=path, model_id=views.model_id
        )
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        model_id=np.array(views.model_id),
        color=views.color.astype(np.uint8),
        normals=views.normals.astype(np.float16),
        depth=views.depth.astype(np.float32),
        index=views.index.astype(np.int16),
        intrinsics=np.asarray(views.intrinsics, np.float64),
        R=np.asarray(views.R, np.float64),
        t=np.asarray(views.t, np.float64),
    )
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())


def load_shape_views(path: str | Path, n_points: int | None = None) -> ShapeViews:
    """Read a file written by :func:`save_shape_views`; ``n_points``: the cloud size its indices
    must stay below. DataError naming the file and field on anything else."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"unreadable view file ({exc})", path=path) from exc
    missing = [k for k in ("model_id", "color", "normals", "depth", "index", "intrinsics", "R", "t") if k not in arrays]
    if missing:
        raise DataError(f"view file lacks field(s) {', '.join(missing)}", path=path)
    views = ShapeViews(
        model_id=str(arrays["model_id"]),
        color=arrays["color"],
        normals=arrays["normals"],
        depth=arrays["depth"],
        index=arrays["index"],
        intrinsics=arrays["intrinsics"],
        R=arrays["R"],
        t=arrays["t"],
    )
    _check(views, path, n_points)
    return views


def _check(v: ShapeViews, path: str | Path, n_points: int | None = None) -> None:
    if v.color.ndim != 4 or v.color.shape[-1] != 3 or v.color.dtype != np.uint8:
        raise DataError(f"field color must be (V, H, W, 3) uint8, got {v.color.shape} {v.color.dtype}", path=path)
    n, h, w = v.color.shape[:3]
    expected = {"normals": (n, h, w, 3), "depth": (n, h, w), "index": (n, h, w), "R": (n, 3, 3), "t": (n, 3)}
    for name, shape in expected.items():
        got = np.shape(getattr(v, name))
        if got != shape:
            raise DataError(f"field {name} has shape {got}; expected {shape}", path=path, model_id=v.model_id)
    if np.shape(v.intrinsics) != (4,):
        raise DataError("field intrinsics must be (fx, fy, cx, cy)", path=path, model_id=v.model_id)
    for name in ("normals", "depth", "intrinsics", "R", "t"):
        if not np.isfinite(np.asarray(getattr(v, name), np.float64)).all():
            raise DataError(f"field {name} holds NaN or infinite values", path=path, model_id=v.model_id)
    if v.index.min(initial=-1) < -1 or (n_points is not None and v.index.max(initial=-1) >= n_points):
        raise DataError(
            f"field index out of range [-1, {n_points}): {v.index.min()}..{v.index.max()}",
            path=path,
            model_id=v.model_id,
        )
    empty = [k for k in range(n) if not (v.index[k] >= 0).any()]
    if empty:
        raise DataError(f"views {empty} see nothing of the shape (empty renders)", path=path, model_id=v.model_id)


def save_view_meta(root: str | Path, meta: dict[str, Any]) -> None:
    """Write the cache's ``meta.json``."""
    missing = [k for k in META_FIELDS if k not in meta]
    if missing:
        raise DataError(f"view cache meta lacks {', '.join(missing)}", path=Path(root) / META)
    write_json(Path(root) / META, meta, indent=2)


def load_view_meta(root: str | Path) -> dict[str, Any]:
    """The cache's ``meta.json``; DataError when the directory is not a view cache."""
    path = Path(root) / META
    if not path.is_file():
        raise DataError("not a view cache (no meta.json); make one with the multiview tasks' render step", path=root)
    try:
        meta = read_json(path)
    except ValueError as exc:
        raise DataError(f"unreadable meta.json ({exc})", path=path) from exc
    if not isinstance(meta, dict):
        raise DataError("meta.json must be a JSON object", path=path)
    missing = [k for k in META_FIELDS if k not in meta]
    if missing:
        raise DataError(f"meta.json lacks {', '.join(missing)}", path=path)
    return meta


def shape_views_path(root: str | Path, model_id: str) -> Path:
    return Path(root) / f"{model_id}.npz"
