"""Matched pixels of two views of one shape: MvDeCor's positives.

Pixel ``p`` of view A and pixel ``q`` of view B match when the world points they see (from each
view's depth and camera, :meth:`~kpengine.io.multiview.ShapeViews.location`) lie within
``max_distance`` of each other. Each view's pixel sees only the front-most surface, so a match
is a surface point visible in both views; a point hidden in B has no pixel of B near it and
stays unmatched. Among the pixels of B within the distance, the nearest is taken.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from kpengine.io.multiview import ShapeViews

#: default match distance (model units; bounding-box diagonal 1): about a third of the mean
#: spacing of a 2,048-point cloud, a pixel at 96 px spans ~0.011
MATCH_DISTANCE = 0.01


def match_pixels(
    loc_a: np.ndarray,
    mask_a: np.ndarray,
    loc_b: np.ndarray,
    mask_b: np.ndarray,
    pixels_a: np.ndarray | None = None,
    max_distance: float = MATCH_DISTANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices (M,), (M,) of matched pairs: ``pixels_a`` (flat indices into A, default
    every foreground pixel of A) that have a foreground pixel of B within ``max_distance``, and that
    nearest pixel of B. ``loc_*`` (H, W, 3) world points seen, ``mask_*`` (H, W) foreground."""
    flat_a, flat_b = loc_a.reshape(-1, 3), loc_b.reshape(-1, 3)
    fg_a, fg_b = mask_a.reshape(-1), np.flatnonzero(mask_b.reshape(-1))
    if pixels_a is None:
        pixels_a = np.flatnonzero(fg_a)
    pixels_a = np.asarray(pixels_a, np.int64)
    pixels_a = pixels_a[fg_a[pixels_a]]
    if len(pixels_a) == 0 or len(fg_b) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    dist, nearest = cKDTree(flat_b[fg_b]).query(flat_a[pixels_a], k=1, distance_upper_bound=max_distance)
    ok = np.isfinite(dist)
    return pixels_a[ok], fg_b[nearest[ok]]


def sample_matches(
    views: ShapeViews,
    a: int,
    b: int,
    n: int,
    rng: np.random.Generator,
    max_distance: float = MATCH_DISTANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` matched pairs between views ``a`` and ``b``, each pixel of B used once (so that
    the other pairs' pixels are true negatives): flat pixel indices (M,), (M,)."""
    mask_a, mask_b = views.mask[a], views.mask[b]
    fg = np.flatnonzero(mask_a.reshape(-1))
    pick = rng.permutation(fg)[: 4 * n]
    pa, pb = match_pixels(views.location(a), mask_a, views.location(b), mask_b, pick, max_distance)
    _, first = np.unique(pb, return_index=True)
    first = np.sort(first)[:n]
    return pa[first], pb[first]
