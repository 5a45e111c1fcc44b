"""Two baselines measured beside the KeypointNet aggregation.

- :func:`geodesic_clustering` -- Dutagaci, Cheung & Godil (2012): on each model, repeatedly
  take the click with the most clicks within geodesic radius ``r``, make those clicks a
  cluster if they come from at least ``min_votes`` distinct annotators, and place the
  consensus point at the cluster's geodesic mean (the cloud point minimising the sum of
  squared geodesic distances to its clicks); remove them and repeat. Per model only: it
  gives no ids shared across models.
- :func:`dbscan_positions` -- DBSCAN on the raw click positions of all models pooled in
  the canonical frame; each cluster is a semantic id, a model's keypoint for it the mean
  of its clicks in that cluster, snapped to the cloud; noise is dropped.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import DBSCAN

from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.geometry.sampling import snap_to_points


def geodesic_clustering(
    graph: GeodesicGraph, clicks: np.ndarray, annotator: np.ndarray, radius: float = 0.05, min_votes: int = 2
) -> np.ndarray:
    """Consensus point indices (K,) from click point indices (C,) and their annotators (C,)."""
    clicks = np.asarray(clicks, np.int64)
    if len(clicks) == 0:
        return np.zeros(0, np.int64)
    d = graph.from_sources(clicks, limit=2 * radius)  # (C, N); inf beyond 2r or across gaps (strict)
    dc = d[:, clicks]  # (C, C)
    alive = np.ones(len(clicks), bool)
    out = []
    while alive.any():
        within = (dc <= radius) & alive[None, :] & alive[:, None]
        counts = within.sum(axis=1)
        seed = int(counts.argmax())
        members = np.flatnonzero(within[seed])
        if len(np.unique(annotator[members])) < min_votes:
            break
        sq = np.square(d[members]).sum(axis=0)
        out.append(int(sq.argmin()))
        alive[members] = False
    return np.array(out, np.int64)


def dbscan_positions(
    xyz: np.ndarray, model_index: np.ndarray, eps: float = 0.05, min_samples: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """DBSCAN labels (C,) of pooled click positions (C, 3) (-1 noise), and per-click model ids passed through.

    Returns ``(labels, model_index)``; see :func:`dbscan_keypoints` for per-model keypoints.
    """
    labels = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(np.asarray(xyz, np.float64))
    return labels, np.asarray(model_index)


def dbscan_keypoints(points: np.ndarray, xyz: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One model's keypoints: (point indices (K,), ids (K,)) = mean click per cluster, snapped to ``points``."""
    ids = np.unique(labels[labels >= 0])
    if len(ids) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    means = np.stack([xyz[labels == i].mean(axis=0) for i in ids])
    return snap_to_points(points, means)[0], ids.astype(np.int64)
