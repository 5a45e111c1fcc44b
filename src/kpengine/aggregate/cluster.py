"""Candidate keypoints -> semantic ids: t-SNE to 2D, then DBSCAN (KeypointNet §3.4).

Clusters become semantic ids (numbered by size, largest first); DBSCAN noise points are
treated as mis-clicks and dropped. Choices the paper leaves open, and ours:

- t-SNE: scikit-learn's Barnes-Hut t-SNE (n log n; an exact one was 7.6x slower at 3,000
  candidates), ``perplexity = min(30, (n - 1) / 3)``, PCA initialisation, 600 iterations
  (see :func:`project_tsne`; seeded, deterministic). ``max_iter`` needs scikit-learn >= 1.5.
- DBSCAN ``min_samples = max(4, round(min_cluster_frac * n_models))`` (default 5 % of the
  annotated models): a semantic id must recur on several models.
- DBSCAN ``eps`` (t-SNE units, which have no fixed scale): by default ``eps_scale`` (2.5)
  times the median distance of each point to its ``min_samples``-th neighbour. At 1.5
  t-SNE's tendency to break one class into a few tight islands (left/right variants,
  models of two styles) split true ids into 36 clusters for 20 true ids on 40 beds
  (ARI 0.58, purity 0.98); 2.5 keeps the islands of one id together (ARI 0.87).
- Noise: a DBSCAN noise candidate joins the cluster of its nearest clustered candidate
  in t-SNE space when that is within ``assign_scale`` (2) x eps -- a border point DBSCAN
  left out because its neighbourhood was thin, not a mis-click; those were already
  removed by the fidelity support threshold, and a far outlier stays noise. It then
  competes for its (model, id) like any member.
- Two ids in one cluster: one id occurs at most once per model, so when more than
  ``split_duplicates`` (25 %) of a cluster's models hold two or more of its candidates
  (typically a left/right pair whose islands the wider eps joined), the cluster is split in
  two by 2-means in t-SNE space, kept when each half has ``min_samples`` candidates and
  at most half the duplicate rate (checked once more on each half).
- One keypoint per model and id: when a cluster holds several candidates of one model,
  the one with the lowest fidelity error is kept; the others are dropped as duplicates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.neighbors import NearestNeighbors


@dataclass(frozen=True)
class ClusterConfig:
    min_cluster_frac: float = 0.05
    eps: float | None = None
    eps_scale: float = 2.5
    assign_scale: float = 2.0
    min_samples_floor: int = 4
    split_duplicates: float = 0.25
    split_positions: bool = True
    split_dense: int = 3
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


def project_tsne(emb: np.ndarray, perplexity: float = 30.0, seed: int = 0, iterations: int = 600) -> np.ndarray:
    """t-SNE (van der Maaten & Hinton 2008) of embeddings (n, D) -> (n, 2); fewer than 4 points on a line.

    scikit-learn's Barnes-Hut t-SNE with PCA initialisation, seeded. Measured side by side
    against an exact numpy t-SNE with the same optimiser (2026-11-21, 2 cores): equal at
    400 candidates (0.9 s), 3.4x faster at 1,600 and 7.6x at 3,000 — its cost grows as
    n log n rather than n², which is what a 500-model category (~5,500 candidates) needs.
    ``perplexity`` is capped at (n - 1) / 3 (t-SNE needs perplexity < n).
    """
    from sklearn.manifold import TSNE

    x = np.asarray(emb, np.float64)
    n = len(x)
    if n < 4:
        return np.stack([np.arange(n, dtype=np.float64), np.zeros(n)], axis=1)
    perplexity = min(perplexity, (n - 1) / 3)
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max(iterations, 250))
    return tsne.fit_transform(x).astype(np.float64)


def min_samples_for(cfg: ClusterConfig, n_models: int) -> int:
    """DBSCAN's min_samples, and the fewest models an id must recur on: ``max(floor, frac * n_models)``."""
    return max(cfg.min_samples_floor, int(round(cfg.min_cluster_frac * n_models)))


def cluster_candidates(
    emb: np.ndarray,
    model_index: np.ndarray,
    fidelity: np.ndarray,
    n_models: int,
    cfg: ClusterConfig = ClusterConfig(),
    positions: np.ndarray | None = None,
) -> Clustering:
    """Cluster candidate embeddings (n, D) of candidates on models ``model_index`` (n,) with errors (n,).

    ``positions`` (n, 3): the candidates' coordinates in their model's centred frame; when
    given (and ``split_positions``), clusters that still hold several candidates per model
    are split by position (:func:`split_by_position`).
    """
    xy = project_tsne(emb, cfg.perplexity, cfg.seed)
    n = len(xy)
    min_samples = min_samples_for(cfg, n_models)
    if n < min_samples:
        return Clustering(xy, np.full(n, -1), np.zeros(n, bool), float("nan"), min_samples)
    eps = cfg.eps
    if eps is None:
        dist = NearestNeighbors(n_neighbors=min(min_samples, n)).fit(xy).kneighbors(xy)[0][:, -1]
        eps = cfg.eps_scale * float(np.median(dist))
    raw = DBSCAN(eps=eps, min_samples=min_samples).fit_predict(xy)
    raw = assign_noise(xy, raw, cfg.assign_scale * eps)
    raw = split_dense(xy, raw, model_index, eps, min_samples, cfg.split_duplicates, cfg.split_dense)
    raw = split_shared(xy, raw, model_index, min_samples, cfg.split_duplicates)
    if positions is not None and cfg.split_positions:
        raw = split_by_position(positions, raw, model_index, min_samples, cfg.split_duplicates)
    labels = relabel_by_size(raw)
    keep = best_per_model(labels, model_index, fidelity)
    return Clustering(xy, labels, keep, float(eps), min_samples)


def assign_noise(xy: np.ndarray, labels: np.ndarray, radius: float) -> np.ndarray:
    """Labels (n,) with each noise point (-1) given its nearest clustered point's label when within ``radius``."""
    out = labels.copy()
    noise, core = labels < 0, labels >= 0
    if radius <= 0 or not noise.any() or not core.any():
        return out
    d, j = NearestNeighbors(n_neighbors=1).fit(xy[core]).kneighbors(xy[noise])
    ok = d[:, 0] <= radius
    out[np.flatnonzero(noise)[ok]] = labels[core][j[ok, 0]]
    return out


def _duplicate_rate(models: np.ndarray) -> float:
    """Fraction of the distinct models in ``models`` that occur more than once."""
    _, counts = np.unique(models, return_counts=True)
    return float((counts > 1).mean()) if len(counts) else 0.0


def two_means(xy: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Deterministic 2-means (n, 2) -> (n,) bool side: seeded with the two mutually farthest points."""
    a = int(np.square(xy - xy.mean(axis=0)).sum(axis=1).argmax())
    b = int(np.square(xy - xy[a]).sum(axis=1).argmax())
    centres = xy[[a, b]].copy()
    side = np.zeros(len(xy), bool)
    for _ in range(iterations):
        side = np.square(xy - centres[1]).sum(axis=1) < np.square(xy - centres[0]).sum(axis=1)
        if side.all() or not side.any():
            break
        centres = np.stack([xy[~side].mean(axis=0), xy[side].mean(axis=0)])
    return side


def split_shared(xy: np.ndarray, labels: np.ndarray, model_index: np.ndarray, min_size: int, rate: float,
                 depth: int = 2) -> np.ndarray:  # fmt: skip
    """Split clusters whose duplicate rate exceeds ``rate`` in two (see the module docstring); -1 stays."""
    out = labels.copy()
    if rate >= 1.0 or depth <= 0:
        return out
    next_label = int(out.max()) + 1 if len(out) else 0
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        r = _duplicate_rate(model_index[idx])
        if r <= rate or len(idx) < 2 * min_size:
            continue
        side = two_means(xy[idx])
        halves = [idx[~side], idx[side]]
        if min(len(h) for h in halves) < min_size or max(_duplicate_rate(model_index[h]) for h in halves) > r / 2:
            continue
        sub = np.zeros(len(idx), np.int64)
        sub[side] = 1
        sub = split_shared(xy[idx], sub, model_index[idx], min_size, rate, depth - 1)
        for k in np.unique(sub):
            out[idx[sub == k]] = c if k == 0 else next_label
            next_label += int(k != 0)
    return out


def split_dense(xy: np.ndarray, labels: np.ndarray, model_index: np.ndarray, eps: float, min_samples: int,
                rate: float, depth: int = 3) -> np.ndarray:  # fmt: skip
    """Re-cluster, with eps halved, every cluster whose duplicate rate exceeds ``rate`` (up to ``depth`` times).

    DBSCAN chains the islands of many ids into one cluster when they touch (on 492 bathtubs
    one cluster took ~14 of the 24 ids). One id occurs once per model, so a cluster with
    many duplicated models is several ids; DBSCAN at eps / 2 inside it separates its
    islands (what HDBSCAN would do with a full hierarchy). The points the finer DBSCAN
    leaves as noise join their nearest sub-cluster. Kept when it yields >= 2 clusters.
    """
    out = labels.copy()
    if depth <= 0 or rate >= 1.0:
        return out
    next_label = int(out.max()) + 1 if len(out) else 0
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        if _duplicate_rate(model_index[idx]) <= rate or len(idx) < 2 * min_samples:
            continue
        sub = DBSCAN(eps=eps / 2, min_samples=min_samples).fit_predict(xy[idx])
        if sub.max() < 1:
            continue
        sub = assign_noise(xy[idx], sub, np.inf)
        sub = split_dense(xy[idx], sub, model_index[idx], eps / 2, min_samples, rate, depth - 1)
        for k in np.unique(sub):
            out[idx[sub == k]] = c if k == sub.min() else next_label
            next_label += int(k != sub.min())
    return out


def kmeans(x: np.ndarray, k: int, iterations: int = 30) -> np.ndarray:
    """Deterministic k-means (n, d) -> (n,) labels, seeded by farthest-point sampling from the point farthest out."""
    seeds = [int(np.square(x - x.mean(axis=0)).sum(axis=1).argmax())]
    d = np.square(x - x[seeds[0]]).sum(axis=1)
    for _ in range(1, k):
        seeds.append(int(d.argmax()))
        d = np.minimum(d, np.square(x - x[seeds[-1]]).sum(axis=1))
    centres = x[seeds].copy()
    lab = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        lab = np.square(x[:, None, :] - centres[None, :, :]).sum(axis=2).argmin(axis=1)
        new = np.stack([x[lab == j].mean(axis=0) if (lab == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return lab


def split_by_position(positions: np.ndarray, labels: np.ndarray, model_index: np.ndarray, min_size: int,
                      rate: float) -> np.ndarray:  # fmt: skip
    """Split clusters holding several candidates per model into k parts by position (k-means, centred xyz).

    One id occurs once per model, so a cluster whose models hold k candidates each is k ids
    the embedding could not tell apart (a round rim's front, back, left and right points
    look alike to it) -- but the models are canonically oriented, so their positions can.
    k = the median count over the cluster's models holding two or more; the split is kept
    when every part has ``min_size`` candidates and its duplicate rate is at most half the
    cluster's. On a KeypointNet-shaped crowd of 150 bathtubs this took 10 ids to N (see
    docs/aggregation.md).
    """
    out = labels.copy()
    if rate >= 1.0:
        return out
    next_label = int(out.max()) + 1 if len(out) else 0
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        r = _duplicate_rate(model_index[idx])
        if r <= rate:
            continue
        _, counts = np.unique(model_index[idx], return_counts=True)
        k = max(2, int(np.median(counts[counts >= 2])))
        if len(idx) < k * min_size:
            continue
        part = kmeans(positions[idx], k)
        sizes = np.bincount(part, minlength=k)
        if sizes.min() < min_size or max(_duplicate_rate(model_index[idx[part == j]]) for j in range(k)) > r / 2:
            continue
        for j in range(1, k):
            out[idx[part == j]] = next_label
            next_label += 1
    return out


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
