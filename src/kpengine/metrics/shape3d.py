"""3D reconstruction measures: voxel IoU and Chamfer distance (the numbers 3D-R2N2, MarrNet and
ShapeHD report), as pure functions."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def voxel_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU of boolean grids (..., R, R, R) -> (...), batch dimensions broadcast (one grid against many):
    |pred ∧ target| / |pred ∨ target|; two empty grids count as 1 (nothing predicted where nothing is)."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if pred.shape[-3:] != target.shape[-3:]:
        raise ValueError(f"voxel grids of different shapes {pred.shape} and {target.shape}")
    axes = (-3, -2, -1)
    inter = (pred & target).sum(axes)
    union = (pred | target).sum(axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance between point sets (N, 3) and (M, 3): the mean distance from each
    point of one to its nearest in the other, averaged over both directions (model units, not
    squared: ShapeHD's table uses this form). NaN when either set is empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    d_ab = cKDTree(b).query(a, k=1)[0]
    d_ba = cKDTree(a).query(b, k=1)[0]
    return float((d_ab.mean() + d_ba.mean()) / 2)
