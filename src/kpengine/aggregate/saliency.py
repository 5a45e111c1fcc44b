"""Keypoint saliency: every click is a Gaussian on the surface, not a delta.

``s_x(p) = exp(-d(p, x)^2 / (2 sigma^2))`` with ``d`` the geodesic distance on the model's
cloud (the 20-NN graph of :mod:`kpengine.geometry.geodesic`, searched only to ``3 sigma``:
beyond it the weight is below 0.011 and is set to 0) and ``sigma = 0.03`` model units
(bounding-box diagonal 1), as in KeypointNet §3.4. Pairs in different graph components
are infinitely far (the "strict" protocol): a click never lends saliency across a gap.
"""

from __future__ import annotations

import numpy as np

from kpengine.geometry.geodesic import GeodesicGraph

SIGMA = 0.03
CUTOFF = 3.0  # in sigmas


def gaussian(d: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """Gaussian weights of distances (any shape); ``inf`` maps to 0."""
    d = np.asarray(d, np.float64)
    return np.exp(-0.5 * np.square(d / sigma))


def click_saliency(
    graph: GeodesicGraph,
    click_points: np.ndarray,
    sigma: float = SIGMA,
    geodesic: bool = True,
    points: np.ndarray | None = None,
) -> np.ndarray:
    """Per-click saliency maps (C, N) for clicks at cloud indices ``click_points`` (C,).

    ``geodesic=False`` uses Euclidean distances instead (needs ``points`` (N, 3)).
    """
    click_points = np.asarray(click_points, np.int64)
    if len(click_points) == 0:
        return np.zeros((0, graph.n_points))
    if geodesic:
        if graph.protocol != "strict":
            raise ValueError("saliency needs a 'strict' geodesic graph (unreachable points are infinitely far)")
        d = graph.from_sources(click_points, limit=CUTOFF * sigma)
    else:
        if points is None:
            raise ValueError("Euclidean saliency needs the points")
        d = np.linalg.norm(points[None, :, :] - points[click_points][:, None, :], axis=-1)
        d[d > CUTOFF * sigma] = np.inf
    return gaussian(d, sigma)


def saliency_map(per_click: np.ndarray, annotator: np.ndarray, n_annotators: int | None = None) -> np.ndarray:
    """Crowd saliency (N,): per annotator the max over their clicks, then the mean over annotators.

    ``per_click`` (C, N); ``annotator`` (C,) indices. A point every annotator clicked scores 1.
    """
    if len(per_click) == 0:
        return np.zeros(per_click.shape[1] if per_click.ndim == 2 else 0)
    ids, inv = np.unique(annotator, return_inverse=True)
    best = np.zeros((len(ids), per_click.shape[1]))
    np.maximum.at(best, inv, per_click)
    return best.sum(axis=0) / (n_annotators or len(ids))
