"""Candidate keypoints -> semantic ids: t-SNE to 2D, then DBSCAN (KeypointNet §3.4).

Clusters become semantic ids (numbered by size, largest first); DBSCAN noise points are
treated as mis-clicks and dropped. Choices the paper leaves open, and ours:

- t-SNE: scikit-learn's Barnes-Hut, ``perplexity = min(30, (n - 1) / 3)``, PCA
  initialisation, fixed ``random_state``.
- DBSCAN ``min_samples = max(3, round(min_cluster_frac * n_models))`` (default 5 % of the
  annotated models): a semantic id must recur on several models.
- DBSCAN ``eps`` (t-SNE units, which have no fixed scale): by default ``eps_scale`` times
  the median distance of each point to its ``min_samples``-th neighbour.
- One keypoint per model and id: when a cluster holds several candidates of one model,
  the one with the lowest fidelity error is kept; the others are dropped as duplicates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors


@dataclass(frozen=True)
class ClusterConfig:
    min_cluster_frac: float = 0.05
    eps: float | None = None
    eps_scale: float = 1.5
    perplexity: float = 30.0
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Clustering:
    """``xy`` (n, 2) t-SNE coordinates; ``labels`` (n,) semantic id or -1 (noise);
    ``keep`` (n,) bool, the candidate chosen for its (model, id); ``eps``, ``min_samples`` used."""

    xy: np.ndarray
    labels: np.ndarray
    keep: np.ndarray
    eps: float
    min_samples: int

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def project_tsne(emb: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """t-SNE of embeddings (n, D) -> (n, 2). Fewer than 4 points are laid out on a line."""
    n = len(emb)
    if n < 4:
        return np.stack([np.arange(n, dtype=np.float64), np.zeros(n)], axis=1)
    tsne = TSNE(2, perplexity=min(perplexity, (n - 1) / 3), init="pca", random_state=seed, n_jobs=1)
    return tsne.fit_transform(np.asarray(emb, np.float32)).astype(np.float64)


def cluster_candidates(
    emb: np.ndarray, model_index: np.ndarray, fidelity: np.ndarray, n_models: int, cfg: ClusterConfig = ClusterConfig()
) -> Clustering:
    """Cluster candidate embeddings (n, D) of candidates on models ``model_index`` (n,) with errors (n,)."""
    xy = project_tsne(emb, cfg.perplexity, cfg.seed)
    n = len(xy)
    min_samples = max(3, int(round(cfg.min_cluster_frac * n_models)))
    if n < min_samples:
        return Clustering(xy, np.full(n, -1), np.zeros(n, bool), float("nan"), min_samples)
    eps = cfg.eps
    if eps is None:
        dist = NearestNeighbors(n_neighbors=min(min_samples, n)).fit(xy).kneighbors(xy)[0][:, -1]
        eps = cfg.eps_scale * float(np.median(dist))
    raw = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(xy)
    labels = relabel_by_size(raw)
    keep = best_per_model(labels, model_index, fidelity)
    return Clustering(xy, labels, keep, float(eps), min_samples)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber cluster labels (n,) 0, 1, ... by decreasing size (ties: first appearance); -1 stays."""
    out = np.full_like(labels, -1)
    ids, first, counts = np.unique(labels[labels >= 0], return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    for new, old in enumerate(ids[order]):
        out[labels == old] = new
    return out


def best_per_model(labels: np.ndarray, model_index: np.ndarray, fidelity: np.ndarray) -> np.ndarray:
    """(n,) bool: for every (model, label >= 0) the candidate with the lowest fidelity error."""
    keep = np.zeros(len(labels), bool)
    ok = np.flatnonzero(labels >= 0)
    if len(ok) == 0:
        return keep
    order = ok[np.lexsort((fidelity[ok], labels[ok], model_index[ok]))]
    pair = np.stack([model_index[order], labels[order]], axis=1)
    first = np.ones(len(order), bool)
    first[1:] = (pair[1:] != pair[:-1]).any(axis=1)
    keep[order[first]] = True
    return keep
