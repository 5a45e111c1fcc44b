"""Dense keypoint regions: each surface point labelled by its nearest keypoint's semantic id within
a geodesic radius, else background; and their mIoU (the MvDeCor benchmark's dense measure).

Geodesics are the benchmark's (20-nearest-neighbour graph of the cloud, Dijkstra) with the
``strict`` protocol: a point in another connected component of the graph is not near a keypoint.
"""

from __future__ import annotations

import numpy as np

from kpengine.geometry.geodesic import GeodesicGraph

#: default region radius (model units): the middle PCK threshold of the benchmark
REGION_RADIUS = 0.05


def region_labels(
    points: np.ndarray,
    point_indices: np.ndarray,
    semantic_ids: np.ndarray,
    background: int,
    radius: float = REGION_RADIUS,
    graph: GeodesicGraph | None = None,
) -> np.ndarray:
    """(N,) int64 label per point: the semantic id of the geodesically nearest keypoint
    (``point_indices`` (K,) into ``points`` (N, 3), ids (K,)) when within ``radius``, else
    ``background``. Ties go to the keypoint listed first."""
    return region_distances(points, point_indices, semantic_ids, background, radius, graph)[0]


def region_distances(
    points: np.ndarray,
    point_indices: np.ndarray,
    semantic_ids: np.ndarray,
    background: int,
    radius: float = REGION_RADIUS,
    graph: GeodesicGraph | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``region_labels`` and (N,) the geodesic distance of each point to the keypoint of its
    region (inf for background points)."""
    n = len(points)
    labels = np.full(n, background, np.int64)
    out = np.full(n, np.inf)
    if len(point_indices) == 0:
        return labels, out
    graph = graph or GeodesicGraph(points, protocol="strict")
    dist = graph.from_sources(np.asarray(point_indices), limit=radius)  # (K, N), inf beyond
    nearest = dist.argmin(axis=0)
    d = dist[nearest, np.arange(n)]
    near = d <= radius
    labels[near] = np.asarray(semantic_ids, np.int64)[nearest[near]]
    out[near] = d[near]
    return labels, out


def region_iou(pred: np.ndarray, truth: np.ndarray, background: int) -> float:
    """Mean IoU over the ids (background excluded) that the truth or the prediction has; NaN when
    neither has any (the shape is left out of the mean)."""
    ids = np.union1d(np.unique(pred), np.unique(truth))
    ids = ids[ids != background]
    if len(ids) == 0:
        return float("nan")
    ious = [np.sum((pred == s) & (truth == s)) / np.sum((pred == s) | (truth == s)) for s in ids]
    return float(np.mean(ious))


def region_miou(preds: list[np.ndarray], truths: list[np.ndarray], background: int) -> float:
    """Mean over shapes of :func:`region_iou` (shapes with no region on either side left out)."""
    values = [region_iou(p, t, background) for p, t in zip(preds, truths)]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")
