"""Rotational relabellings of a shape's keypoints, as the official benchmark builds them.

For every category but chair, a shape with rotation groups gets extra ground-truth
labellings: all its keypoints rotated about the vertical (y) axis through the centre of
its *first* rotation group (centre's y set to 0) by 2*pi*i/n, i = 1..n-1, with n the
group's size, or 36 when every group is a circle, each rotated keypoint snapped to the
nearest cloud point. A prediction may legitimately match any of them.

This is benchmark protocol (which categories, which centre, how many steps), so it lives with
the metrics; the rotation itself is :mod:`kpengine.geometry.transforms`'s. The official code
turns the *opposite* way to that module's right-handed convention (it maps +x towards +z),
so the angles below are negated: the i-th relabelling is the official code's i-th.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from kpengine.data.shape import Shape
from kpengine.geometry.transforms import rotate_about_y

EXCLUDED_CATEGORIES = frozenset({"chair"})
CIRCLE_STEPS = 36


def official_turn(i: int, steps: int) -> float:
    """The angle of the official code's i-th of ``steps`` turns, in the right-handed convention of
    :mod:`kpengine.geometry.transforms` (the official rotation matrix turns left-handedly about +y)."""
    return -2 * np.pi * i / steps


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
        rotated = rotate_about_y(coords, official_turn(i, steps), centre)
        relabel = np.full_like(label, -1)
        relabel[present] = tree.query(rotated, k=1)[1]
        out.append(relabel)
    return out
