"""Label-free keypoint detectors on a point cloud, the baselines of the unsupervised benchmark.

Each returns K point indices of a cloud (N, 3), in an order of its own:

* :func:`farthest_point_keypoints`: farthest-point sampling from the point farthest from the
  centroid (deterministic; evenly spread, blind to shape);
* :func:`random_keypoints`: K distinct points, seeded;
* :func:`iss_keypoints`: intrinsic shape signatures (Zhong, ICCV-W 2009), a curvature-style
  detector: the eigenvalues l1 >= l2 >= l3 of each point's neighbourhood scatter within
  ``salient_radius``; points with l2/l1 < gamma21 and l3/l2 < gamma32 are candidates, ranked by
  l3 (variation in every direction: corners, tips), with non-maximum suppression within
  ``nms_radius``. When fewer than K survive, the best suppressed-but-unfiltered points fill in,
  so every detector gives K.

:func:`check_cloud` names what makes a cloud unusable (too few points, all points equal,
collinear, flat) before a detector or a network sees it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from kpengine.errors import DataError

#: a singular value below this fraction of the largest counts as zero (flat or collinear clouds)
DEGENERATE_RATIO = 1e-6


def check_cloud(points: np.ndarray, k: int, *, allow_flat: bool = True, where: str = "cloud") -> None:
    """DataError when ``points`` (N, 3) cannot hold K distinct keypoints: fewer than K points,
    non-finite values, all points equal, collinear, or (``allow_flat`` False) in one plane."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise DataError(f"{where}: expected points of shape (N, 3), got {points.shape}")
    if len(points) < k:
        raise DataError(f"{where}: {len(points)} points, fewer than the {k} keypoints asked for")
    if not np.isfinite(points).all():
        raise DataError(f"{where}: non-finite coordinates")
    sv = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    if sv[0] <= 0:
        raise DataError(f"{where}: all {len(points)} points are the same point")
    if sv[1] < DEGENERATE_RATIO * sv[0]:
        raise DataError(f"{where}: the points are collinear (a line has no keypoint structure to learn)")
    if not allow_flat and sv[2] < DEGENERATE_RATIO * sv[0]:
        raise DataError(f"{where}: the points lie in one plane (no curvature for this detector)")


def farthest_point_keypoints(points: np.ndarray, k: int) -> np.ndarray:
    """(K,) indices by farthest-point sampling, starting at the point farthest from the centroid."""
    points = np.asarray(points, np.float64)
    start = int(np.argmax(np.sum((points - points.mean(axis=0)) ** 2, axis=1)))
    chosen = [start]
    d = np.sum((points - points[start]) ** 2, axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, np.sum((points - points[nxt]) ** 2, axis=1))
    return np.array(chosen, np.int64)


def random_keypoints(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(K,) distinct random indices."""
    return np.random.default_rng(seed).choice(len(points), size=k, replace=False).astype(np.int64)


def iss_saliency(points: np.ndarray, salient_radius: float) -> np.ndarray:
    """(N, 3) eigenvalues l1 >= l2 >= l3 of each point's neighbourhood scatter (distance-weighted
    as ISS: each neighbour weighted by 1 / its number of neighbours)."""
    points = np.asarray(points, np.float64)
    tree = cKDTree(points)
    hoods = tree.query_ball_point(points, salient_radius)
    density = np.array([len(h) for h in hoods], np.float64)
    out = np.zeros((len(points), 3))
    for i, hood in enumerate(hoods):
        if len(hood) < 4:
            continue
        q = points[hood] - points[i]
        w = 1.0 / density[hood]
        cov = (q * w[:, None]).T @ q / w.sum()
        out[i] = np.linalg.eigvalsh(cov)[::-1]
    return out


def iss_keypoints(
    points: np.ndarray,
    k: int,
    *,
    salient_radius: float = 0.05,
    nms_radius: float = 0.05,
    gamma21: float = 0.975,
    gamma32: float = 0.975,
) -> np.ndarray:
    """(K,) indices of the ISS keypoints, most salient first (radii in model units)."""
    lam = iss_saliency(points, salient_radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (lam[:, 1] / lam[:, 0] < gamma21) & (lam[:, 2] / lam[:, 1] < gamma32)
    ok &= lam[:, 2] > 0
    tree = cKDTree(np.asarray(points, np.float64))
    chosen: list[int] = []
    blocked = np.zeros(len(points), bool)
    everything = np.arange(len(points))
    # filtered candidates first; then any point outside the suppressed zones; then any point left
    for pool, suppress in ((np.where(ok)[0], True), (everything, True), (everything, False)):
        for i in pool[np.argsort(-lam[pool, 2], kind="stable")]:
            if len(chosen) == k:
                return np.array(chosen, np.int64)
            if blocked[i]:
                continue
            chosen.append(int(i))
            blocked[i] = True
            if suppress:
                blocked[tree.query_ball_point(points[i], nms_radius)] = True
        if not suppress:
            break
        if pool is everything:
            blocked[:] = False
            blocked[chosen] = True
    return np.array(chosen, np.int64)  # fewer than K only when N < K, which check_cloud refuses
