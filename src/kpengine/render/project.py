"""Put 3D semantics onto pixels: projected keypoints with visibility, dense embedding and semantic maps.

Visibility is decided against a rendered depth buffer (self-occlusion): a point is visible
when it lies inside the image, in front of the camera, and no nearer than ``tolerance``
behind the surface the depth buffer holds at its pixel (a background pixel counts as
visible: only surface points are projected, so it sits on the silhouette edge).
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
