"""Occupancy grids of shapes in their canonical frame, and back to meshes (marching cubes).

The single-view reconstruction (paper §4.2, after MarrNet / ShapeHD) predicts a voxel grid in
the category's canonical frame and turns it into a mesh. This module holds the grid convention
and the two conversions, so that ground truth, networks and meshes agree on it.

Grid convention (stated once, relied on by ``image.reconstruct``):
    a cube of side ``side`` model units (default 1.0: ShapeNet's ``model_normalized`` has
    bounding-box diagonal 1, so every shape fits) centred on the shape's bounding-box centre
    (``geometry.transforms.bbox_centre``), split into ``resolution``³ voxels. ``occ[i, j, k]``
    is the voxel whose centre is ``origin + (i + 0.5, j + 0.5, k + 0.5) * voxel`` : ``i`` along
    x, ``j`` along y (up), ``k`` along z. The shape is not rescaled: a predicted grid is a
    shape in model units up to the centre, which the cameras look at anyway.

Ground truth:
    * from a **mesh**: area-weighted surface samples dense enough that every voxel the surface
      crosses gets several (``points_per_voxel`` per voxel face area), the voxels holding a
      sample are the surface, then every cavity the surface closes off is filled
      (``scipy.ndimage.binary_fill_holes``: 6-connected background, so a 26-connected wall
      seals). Open parts (a bathtub's basin, a sheet-like seat) stay a one-voxel shell.
    * from the official **2,048-point clouds** (bathtub, bed: no meshes here): about one point
      per surface voxel at 32³, so the occupied voxels have gaps (a quarter of a sphere's
      surface voxels stay empty); one 3×3×3 dilation seals them, the sealed shell is filled,
      then eroded back by one step (:func:`fill_closed`). At 64³ a 2,048-point cloud needs
      two steps (``image.reconstruct.data`` takes one per 32 voxels), which closes openings
      narrower than four voxels: clouds give honest ground truth at 32³ only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from kpengine.errors import DataError
from kpengine.geometry.sampling import sample_surface
from kpengine.geometry.transforms import bbox_centre
from kpengine.io.mesh import Mesh


@dataclass(frozen=True)
class VoxelGrid:
    """The frame of an occupancy grid: ``resolution`` voxels a side over a cube of ``side`` model
    units centred on ``centre`` (3,)."""

    resolution: int
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    side: float = 1.0

    def __post_init__(self) -> None:
        if self.resolution < 2:
            raise DataError(f"voxel resolution must be at least 2, got {self.resolution}")
        if not self.side > 0:
            raise DataError(f"voxel grid side must be positive, got {self.side}")

    @property
    def voxel(self) -> float:
        """Edge of one voxel (model units)."""
        return self.side / self.resolution

    @property
    def origin(self) -> np.ndarray:
        """Corner (3,) of voxel (0, 0, 0) (its low x, y, z)."""
        return np.asarray(self.centre, np.float64) - self.side / 2

    def index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voxel indices (N, 3) int64 of points (N, 3), and which (N,) fall inside the grid."""
        ijk = np.floor((np.asarray(points, np.float64) - self.origin) / self.voxel).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < self.resolution), axis=1)
        return ijk, inside

    def centres(self, ijk: np.ndarray) -> np.ndarray:
        """Model-frame positions (N, 3) of voxel indices (N, 3) (fractional indices allowed)."""
        return self.origin + (np.asarray(ijk, np.float64) + 0.5) * self.voxel


def grid_for(points: np.ndarray, resolution: int = 32, side: float = 1.0) -> VoxelGrid:
    """The canonical grid of a shape given its points or vertices (N, 3): centred on its box."""
    points = np.asarray(points)
    if len(points) == 0:
        raise DataError("no points to place a voxel grid on")
    return VoxelGrid(resolution, tuple(float(c) for c in bbox_centre(points.astype(np.float64))), side)


def surface_voxels(points: np.ndarray, grid: VoxelGrid) -> np.ndarray:
    """(R, R, R) bool: the voxels that hold at least one point (points outside the grid are dropped)."""
    ijk, inside = grid.index(points)
    occ = np.zeros((grid.resolution,) * 3, bool)
    ijk = ijk[inside]
    occ[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    return occ


def fill_closed(surface: np.ndarray, close_steps: int = 0) -> np.ndarray:
    """Fill the cavities a surface grid (R, R, R) closes off. With ``close_steps`` > 0 the surface is
    first dilated that many times (3×3×3), which seals gaps between sparse samples, filled while
    sealed, then eroded back by as many steps (a closing with the fill in the middle: a plain
    closing reopens the gaps on slanted sheets) and united with the surface voxels, so no sampled
    voxel is lost. The grid is padded so the border is not eaten and the outside stays one
    connected background."""
    pad = close_steps + 1
    surface = np.asarray(surface, bool)
    occ = np.pad(surface, pad)
    cube = np.ones((3, 3, 3), bool)
    if close_steps > 0:
        occ = ndimage.binary_dilation(occ, structure=cube, iterations=close_steps)
    occ = ndimage.binary_fill_holes(occ)
    if close_steps > 0:
        occ = ndimage.binary_erosion(occ, structure=cube, iterations=close_steps)
    return occ[pad:-pad, pad:-pad, pad:-pad] | surface


def voxelize_mesh(
    mesh: Mesh, resolution: int = 32, side: float = 1.0, points_per_voxel: float = 8.0, seed: int = 0
) -> tuple[np.ndarray, VoxelGrid]:
    """Filled occupancy (R, R, R) bool of a mesh in its canonical grid (module docstring)."""
    grid = grid_for(mesh.vertices, resolution, side)
    tri = mesh.vertices[mesh.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    n = int(min(max(area / grid.voxel**2 * points_per_voxel, 1000), 2_000_000))
    try:
        points = sample_surface(mesh, n, seed).points
    except ValueError as exc:
        raise DataError(f"cannot voxelize the mesh: {exc}") from exc
    # the vertices too: thin triangles smaller than a sample's spacing still mark their voxels
    surface = surface_voxels(np.concatenate([points, mesh.vertices.astype(np.float32)]), grid)
    return fill_closed(surface, 0), grid


def voxelize_cloud(
    points: np.ndarray, resolution: int = 32, side: float = 1.0, close_steps: int = 1
) -> tuple[np.ndarray, VoxelGrid]:
    """Occupancy (R, R, R) bool of a surface point cloud (N, 3): surface voxels, ``close_steps``
    closings, filled where closed (module docstring)."""
    grid = grid_for(points, resolution, side)
    return fill_closed(surface_voxels(points, grid), close_steps), grid


def voxels_to_mesh(values: np.ndarray, grid: VoxelGrid, level: float = 0.5) -> Mesh:
    """Marching cubes (scikit-image) of an occupancy or probability grid (R, R, R) at ``level``,
    in model units. The grid is padded with empty voxels so the surface is closed. A grid with
    nothing above ``level`` has no surface: DataError."""
    from skimage.measure import marching_cubes

    values = np.asarray(values, np.float32)
    if values.shape != (grid.resolution,) * 3:
        raise DataError(f"voxel grid has shape {values.shape}, expected {(grid.resolution,) * 3}")
    if not np.isfinite(values).all():
        raise DataError("voxel grid holds NaN or infinite values")
    if not (values > level).any():
        raise DataError(f"no voxel above the threshold {level} (max {values.max():.3f}): no surface to mesh")
    padded = np.pad(values, 1, constant_values=min(0.0, float(values.min())))
    verts, faces, _, _ = marching_cubes(padded, level=level)
    vertices = grid.centres(verts - 1.0)  # padded index -> grid index -> model frame
    # skimage's triangles wind with their normals towards increasing values (into an occupied
    # solid; tests/test_voxelize.py measures a negative volume): reversed, they face outwards
    return Mesh(vertices.astype(np.float64), np.ascontiguousarray(faces[:, ::-1]).astype(np.int64))
