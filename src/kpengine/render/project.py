"""Put 3D semantics onto pixels: projected keypoints with visibility, dense embedding and semantic maps.

Visibility is decided against a rendered depth buffer (self-occlusion): a point is visible
when it lies inside the image, in front of the camera, and no nearer than ``tolerance``
behind the surface the depth buffer holds at its pixel (a background pixel counts as
visible: only surface points are projected, so it sits on the silhouette edge).

Point-cloud (splat) renders need another test, :func:`splat_visibility`: a splat's depth is its
point's depth over the whole disc, so a neighbour on the same surface seen at a slant can sit
well in front of a point without hiding it, and gaps between splats show whatever lies behind.
There a point is occluded only when most of its own splat's pixels are covered by a surface
that is both nearer (by more than the splat radius) and far from it in 3D (more than three
splat radii: not its own neighbourhood).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from kpengine.render.cameras import Camera
from kpengine.render.raycast import Render


@dataclass
class Projection:
    """``uv`` (N, 2) pixels (u right, v down; NaN behind the camera), ``depth`` (N,), ``visible`` (N,) bool."""

    uv: np.ndarray
    depth: np.ndarray
    visible: np.ndarray


def project_points(
    points: np.ndarray, camera: Camera, depth_buffer: np.ndarray | None = None, *, tolerance: float = 0.015
) -> Projection:
    """Project ``points`` (N, 3); with a ``depth_buffer`` (H, W) (0 = background) mark occluded ones.

    ``tolerance`` is in model units (the ShapeNet bounding-box diagonal is 1)."""
    uv, z = camera.project(points)
    h, w = camera.height, camera.width
    j, i = (
        np.rint(np.nan_to_num(uv[:, 0], nan=-1)).astype(np.int64),
        np.rint(np.nan_to_num(uv[:, 1], nan=-1)).astype(np.int64),
    )
    inside = (z > 0) & (j >= 0) & (j < w) & (i >= 0) & (i < h)
    visible = inside.copy()
    if depth_buffer is not None:
        if depth_buffer.shape != (h, w):
            raise ValueError(f"depth buffer is {depth_buffer.shape}, camera is {(h, w)}")
        d = np.zeros(len(z))
        d[inside] = depth_buffer[i[inside], j[inside]]
        visible &= (d <= 0) | (z <= d + tolerance)
    return Projection(uv, z, visible)


def splat_visibility(
    points: np.ndarray,
    camera: Camera,
    render: Render,
    radius: float,
    *,
    depth_tolerance: float | None = None,
    neighbour_distance: float | None = None,
    covered_fraction: float = 0.5,
) -> Projection:
    """Project ``points`` (N, 3) and mark occlusion against a splat ``render`` drawn with world ``radius``.

    A point is occluded when at least ``covered_fraction`` of the pixels of its disc (radius
    ``radius * fx / z`` pixels, at least the pixel itself) show a surface nearer than ``z -
    depth_tolerance`` (default ``radius``) whose 3D location is farther than ``neighbour_distance``
    (default ``3 * radius``) from the point. Background pixels never occlude."""
    points = np.asarray(points, np.float64)
    proj = project_points(points, camera)
    h, w = camera.height, camera.width
    tol_d = radius if depth_tolerance is None else depth_tolerance
    tol_n = 3.0 * radius if neighbour_distance is None else neighbour_distance
    visible = proj.visible.copy()
    depth = render.depth.astype(np.float64)
    loc = render.location.astype(np.float64)
    for n in np.nonzero(visible)[0]:
        u, v = proj.uv[n]
        r_px = max(radius * camera.intrinsics.fx / proj.depth[n], 0.5)
        ext = int(np.ceil(r_px))
        jj, ii = np.meshgrid(np.arange(-ext, ext + 1), np.arange(-ext, ext + 1))
        j, i = np.rint(u).astype(int) + jj.ravel(), np.rint(v).astype(int) + ii.ravel()
        disc = ((j - u) ** 2 + (i - v) ** 2 <= r_px**2) & (j >= 0) & (j < w) & (i >= 0) & (i < h)
        if not disc.any():  # sub-pixel disc off the pixel grid: its own pixel
            disc = (j == np.rint(u)) & (i == np.rint(v))
        i, j = i[disc], j[disc]
        nearer = render.mask[i, j] & (depth[i, j] < proj.depth[n] - tol_d)
        nearer &= np.linalg.norm(loc[i, j] - points[n], axis=1) > tol_n
        visible[n] = nearer.mean() < covered_fraction
    return Projection(proj.uv, proj.depth, visible)


def dense_point_map(render: Render, points: np.ndarray, max_distance: float = 0.05) -> np.ndarray:
    """(H, W) int64 index into ``points`` (N, 3) of the cloud point nearest to the surface seen at each
    pixel; -1 on the background or farther than ``max_distance``. Splat renders already hold it."""
    out = np.full(render.mask.shape, -1, np.int64)
    dist, idx = cKDTree(points).query(render.location[render.mask].astype(np.float64), k=1)
    out[render.mask] = np.where(dist <= max_distance, idx, -1)
    return out


def embedding_map(point_map: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Per-pixel embeddings (H, W, D) float32 from a point map (H, W) and per-point embeddings (N, D); 0 off-object."""
    out = np.zeros((*point_map.shape, embeddings.shape[1]), np.float32)
    hit = point_map >= 0
    out[hit] = embeddings[point_map[hit]]
    return out


def semantic_map(
    point_map: np.ndarray, points: np.ndarray, keypoints: np.ndarray, semantic_ids: np.ndarray, radius: float = 0.05
) -> np.ndarray:
    """(H, W) int64 semantic id of the nearest keypoint (K, 3) within ``radius`` of each pixel's point; -1 elsewhere."""
    out = np.full(point_map.shape, -1, np.int64)
    if len(keypoints) == 0:
        return out
    dist, nearest = cKDTree(keypoints).query(points, k=1)
    label = np.where(dist <= radius, np.asarray(semantic_ids)[nearest], -1)
    hit = point_map >= 0
    out[hit] = label[point_map[hit]]
    return out


def pca_rgb(embeddings: np.ndarray) -> np.ndarray:
    """Embeddings (N, D) -> colours (N, 3) in [0, 1] from their first three principal components."""
    x = np.asarray(embeddings, np.float64)
    x = x - x.mean(axis=0)
    if x.shape[1] < 3:
        x = np.pad(x, ((0, 0), (0, 3 - x.shape[1])))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    y = x @ vt[:3].T
    lo, hi = np.percentile(y, 1, axis=0), np.percentile(y, 99, axis=0)
    return np.clip((y - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
