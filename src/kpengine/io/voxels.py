"""Voxel grids on disk: a NumPy ``.npy`` of a cubic (R, R, R) grid, float32 occupancy probabilities
(or bool occupancy), in the frame of ``kpengine.geometry.voxelize`` (index axes x, y up, z; a cube
of side 1 model unit centred on the shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import atomic_open


def save_voxels(path: str | Path, grid: np.ndarray) -> None:
    """Write a cubic grid (R, R, R) float or bool as .npy, atomically."""
    a = np.asarray(grid)
    if a.ndim != 3 or len(set(a.shape)) != 1:
        raise DataError(f"a voxel grid must be cubic (R, R, R), got shape {a.shape}", path=path)
    if a.dtype != bool:
        a = a.astype(np.float32)
    with atomic_open(path, "wb") as fh:
        np.save(fh, a, allow_pickle=False)


def load_voxels(path: str | Path) -> np.ndarray:
    """Read a grid written by :func:`save_voxels`; refuses other shapes, types and non-finite values."""
    path = Path(path)
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable voxel grid ({exc})", path=path) from exc
    if a.ndim != 3 or len(set(a.shape)) != 1:
        raise DataError(f"not a cubic voxel grid: shape {a.shape}", path=path)
    if a.dtype != bool and not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"voxel grid of type {a.dtype}; expected float or bool", path=path)
    if a.dtype != bool and not np.isfinite(a).all():
        raise DataError("voxel grid holds NaN or infinite values", path=path)
    return a
