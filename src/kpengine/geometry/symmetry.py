"""Rotational relabellings of a shape's keypoints, as the official benchmark builds them.

For every category but chair, a shape with rotation groups gets extra ground-truth
labellings: all its keypoints rotated about the vertical (y) axis through the centre of
its *first* rotation group (centre's y set to 0) by 2*pi*i/n, i = 1..n-1, with n the
group's size, or 36 when every group is a circle, each rotated keypoint snapped to the
nearest cloud point. A prediction may legitimately match any of them.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from kpengine.data.shape import Shape

EXCLUDED_CATEGORIES = frozenset({"chair"})
CIRCLE_STEPS = 36


def rotation_about_y(angle: float) -> np.ndarray:
    """The official code's (3, 3) rotation about +y (it maps x towards -z for positive angles)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def rotational_relabellings(shape: Shape, n_classes: int) -> list[np.ndarray]:
    """Ground-truth labellings (each (n_classes,) point indices, -1 for absent ids), identity first."""
    label = shape.index_by_semantic_id(n_classes)
    groups = shape.symmetries.rotation
    if not groups or shape.category.name in EXCLUDED_CATEGORIES:
        return [label]
    points = shape.points.astype(np.float64)
    present = label >= 0
    coords = points[label[present]]
    group = groups[0].kp_indexes
    centre = points[[label[shape.semantic_ids[i]] for i in group]].mean(axis=0)
    centre[1] = 0.0
    steps = CIRCLE_STEPS if all(g.is_circle for g in groups) else len(group)
    tree = cKDTree(points)
    out = [label]
    for i in range(1, steps):
        rotated = (coords - centre) @ rotation_about_y(2 * np.pi * i / steps).T + centre
        relabel = np.full_like(label, -1)
        relabel[present] = tree.query(rotated, k=1)[1]
        out.append(relabel)
    return out
