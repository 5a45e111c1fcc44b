"""Render point clouds as splats: each point a camera-facing disc of a fixed world radius.

A z-buffer over every (point, covered pixel) pair: NumPy, vectorised, no loops over points.
Normals come from a local PCA of each point's neighbours (clouds carry none), turned towards
the camera. Returns the same :class:`~kpengine.render.raycast.Render` as the mesh renderer,
with ``index`` the point seen at each pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from kpengine.errors import DataError
from kpengine.render.cameras import Camera
from kpengine.render.raycast import DEFAULT_GREY, Render, compose, shade


def estimate_normals(points: np.ndarray, k: int = 16) -> np.ndarray:
    """Unit normals (N, 3) of a cloud (N, 3): the smallest principal axis of each point's k neighbours."""
    k = min(k, len(points))
    _, nbr = cKDTree(points).query(points, k=k)
    local = points[nbr] - points[nbr].mean(axis=1, keepdims=True)  # (N, k, 3)
    cov = np.einsum("nki,nkj->nij", local, local)
    _, vecs = np.linalg.eigh(cov)
    return vecs[:, :, 0]


def default_radius(points: np.ndarray) -> float:
    """A splat radius that closes the gaps between neighbours: 0.75 x the median 4-NN distance."""
    d, _ = cKDTree(points).query(points, k=min(5, len(points)))
    return float(0.75 * np.median(d[:, -1])) if len(points) > 1 else 0.01


def render_points(
    points: np.ndarray,
    camera: Camera,
    *,
    radius: float | None = None,
    colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    background: np.ndarray | Sequence[float] | None = None,
    light: np.ndarray | None = None,
    max_radius_px: int = 12,
    name: str = "points",
) -> Render:
    """Splat ``points`` (N, 3) world; ``colors`` (N, 3) uint8 or None (grey); ``radius`` in model units."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise DataError(f"cannot render points of shape {points.shape}; expected (N, 3) with N > 0", path=name)
    if not np.isfinite(points).all():
        raise DataError("cannot render points with NaN or infinite coordinates", path=name)
    radius = default_radius(points) if radius is None else radius
    normals = estimate_normals(points) if normals is None else np.asarray(normals, np.float64)
    h, w = camera.height, camera.width
    uv, z = camera.project(points)
    front = np.isfinite(uv).all(axis=1) & (z > 0)
    ids = np.nonzero(front)[0]
    r_px = np.minimum(radius * camera.intrinsics.fx / z[ids], max_radius_px)
    rmax = int(np.ceil(r_px.max())) if len(ids) else 0
    off = np.arange(-rmax, rmax + 1)
    dj, di = (a.ravel() for a in np.meshgrid(off, off))
    cj = np.rint(uv[ids, 0])[:, None] + dj[None]  # (n, S) candidate pixels
    ci = np.rint(uv[ids, 1])[:, None] + di[None]
    inside = ((cj - uv[ids, 0:1]) ** 2 + (ci - uv[ids, 1:2]) ** 2 <= np.maximum(r_px, 0.5)[:, None] ** 2) & (
        (cj >= 0) & (cj < w) & (ci >= 0) & (ci < h)
    )
    owner = np.broadcast_to(ids[:, None], inside.shape)[inside]
    pix = (ci[inside] * w + cj[inside]).astype(np.int64)
    order = np.lexsort((z[owner], pix))  # by pixel, then nearest first
    pix, owner = pix[order], owner[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    pix, owner = pix[first], owner[first]

    index = np.full(h * w, -1, np.int64)
    index[pix] = owner
    depth = np.zeros(h * w)
    depth[pix] = z[owner]
    _, dirs = camera.rays()
    n = normals[owner]
    n *= -np.sign(np.einsum("nd,nd->n", n, dirs[pix]) + 1e-12)[:, None]
    nmap = np.zeros((h * w, 3))
    nmap[pix] = n
    loc = np.zeros((h * w, 3))
    loc[pix] = points[owner]
    base = DEFAULT_GREY[None].repeat(len(owner), 0) if colors is None else np.asarray(colors)[owner] / 255.0
    fg = np.zeros((h * w, 3))
    fg[pix] = shade(base, n, dirs[pix], light)
    mask = (index >= 0).reshape(h, w)
    return Render(
        camera=camera,
        depth=depth.reshape(h, w).astype(np.float32),
        normals=nmap.reshape(h, w, 3).astype(np.float32),
        mask=mask,
        index=index.reshape(h, w),
        location=loc.reshape(h, w, 3).astype(np.float32),
        color=compose(fg.reshape(h, w, 3), mask, background),
    )
