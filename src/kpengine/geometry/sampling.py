"""Deterministic surface sampling, so that a mesh-only model always gets the same cloud."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from kpengine.io.mesh import Mesh

DEFAULT_POINTS = 2048


@dataclass
class SurfaceSample:
    """Points (N, 3) float32 on a mesh, with the triangle (N,) and barycentrics (N, 3) of each."""

    points: np.ndarray
    face_index: np.ndarray
    barycentric: np.ndarray


def seed_for(model_id: str) -> int:
    """A stable per-model seed (CRC32 of the id): same model, same sample, on every machine."""
    return zlib.crc32(model_id.encode("utf-8"))


def sample_surface(mesh: Mesh, n_points: int = DEFAULT_POINTS, seed: int = 0) -> SurfaceSample:
    """Area-weighted uniform sampling of a triangle mesh.

    Triangles are drawn in proportion to their area and points uniformly inside them
    (square-root barycentric trick). Degenerate meshes of zero area raise ``ValueError``.
    """
    tri = mesh.vertices[mesh.faces]  # (F, 3, 3)
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = areas.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has zero surface area")
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(areas) / total
    faces = np.minimum(np.searchsorted(cdf, rng.random(n_points), side="right"), len(areas) - 1)
    r1, r2 = rng.random(n_points), rng.random(n_points)
    s1 = np.sqrt(r1)
    bary = np.stack([1.0 - s1, s1 * (1.0 - r2), s1 * r2], axis=1)
    points = np.einsum("nk,nkd->nd", bary, tri[faces])
    return SurfaceSample(points.astype(np.float32), faces.astype(np.int64), bary)


def snap_to_points(points: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest point (N, 3) for each query (Q, 3), and the distance to it."""
    if len(queries) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    dist, idx = cKDTree(points).query(np.asarray(queries, np.float64), k=1)
    return idx.astype(np.int64), dist


def barycentric_points(mesh: Mesh, face_index: np.ndarray, face_uv: np.ndarray) -> np.ndarray:
    """Rebuild surface points (K, 3) from triangle indices (K,) and barycentric weights (K, 3)."""
    return np.einsum("kj,kjd->kd", np.asarray(face_uv, np.float64), mesh.vertices[mesh.faces[face_index]])
