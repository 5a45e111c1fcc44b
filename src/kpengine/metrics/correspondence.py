"""Keypoint correspondence: PCK at geodesic thresholds, per shape then averaged.

For each shape, over the semantic ids its ground truth has, the fraction whose predicted
point lies at geodesic distance strictly below the threshold from the true point; the
split's PCK is the mean of these fractions over shapes (shapes without keypoints are
left out). A missing prediction for an id counts as a miss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pck_per_shape(dist_to_pred: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(T,) PCK of one shape; ``dist_to_pred`` (G,) holds each id's distance, inf for a miss."""
    return (dist_to_pred[None, :] < np.asarray(thresholds)[:, None]).mean(axis=1)


def pck(per_shape_distances: Sequence[np.ndarray], thresholds: Sequence[float]) -> np.ndarray:
    """(T,) mean over shapes of :func:`pck_per_shape`; empty shapes are ignored."""
    rows = [pck_per_shape(d, thresholds) for d in per_shape_distances if len(d)]
    if not rows:
        return np.full(len(thresholds), np.nan)
    return np.mean(rows, axis=0)
