"""The fidelity error map (KeypointNet eq. 4), its smoothing, and non-minimum suppression.

For a candidate point y of model m with embedding g_m(y) (unit length) and a reference
model m' (a sample of the other models, see below):

1. transfer: ``z = argmin_{z in T(m')} |g_m(y) - g_m'(z)|`` -- y's nearest point in
   embedding space on m';
2. for each annotator c of m': ``x_c`` = c's click on m' geodesically nearest to z, with
   Gaussian weight ``w_c = exp(-d(z, x_c)^2 / 2 sigma^2)`` (0 beyond 3 sigma);
3. cost ``w_c |g_m(y) - g_m'(x_c)| + (1 - w_c) D`` -- the Gaussian-weighted embedding distance
   to c's nearest click, and the miss cost ``D = sqrt(2)`` (two orthogonal embeddings) when
   c clicked nothing near z. The distance is capped at D: with features that can be
   negative (DGCNN ends in LeakyReLU) unit embeddings can lie up to 2 apart, and an
   uncapped poor match would cost more than no click at all, so support ``1 - F/D``
   could go negative.

``F_m(y)`` = the mean cost over all (m', c) pairs. A true keypoint transfers onto the
clicks of most annotators who know it (low F); a mis-click has no counterpart on other
models (F near D). Choices the paper leaves open, and ours:

- **the model itself is a reference** (m' = m): there the transfer is the identity
  (y's nearest embedding on m is y), so the term is the Gaussian-weighted agreement of
  m's own annotators *at y*, free of transfer error. It gets weight ``self_weight``
  (default 0.5) against the mean over the other references. Without it (weight 1/(R+1)
  or 0) F only asks "does y's embedding look like something clicked elsewhere", which
  is smooth over the whole region a keypoint's embedding class covers: its minima
  wander off the clicks and points between two keypoints score as well as the
  keypoints (measured on 40 beds: candidate recall 0.61 -> 0.82 and candidate precision
  0.81 -> 0.94 with 0.5, at the same NMS; see docs/aggregation.md).

- **where y and z range**: over the near-click set ``T(m)`` = points whose geodesic
  distance to some click is below ``near * sigma`` (default 2.5 sigma); elsewhere
  ``F = D``. A keypoint far from every click cannot be supported by them, and this cuts
  the cost from N x N to |T| x |T| per model pair.
- **which m'**: ``n_references`` other models with clicks, drawn per model with a fixed
  seed (default 16; all when fewer). The sum over all m' of eq. 4 is thus estimated.
- **smoothing**: mean of F over each point's 8 nearest cloud neighbours (itself included).
- **non-minimum suppression**: y is kept when its smoothed F is the smallest among its 55
  geodesically nearest points (ties broken by index) *that lie within* ``nms_radius``
  (default 2 sigma = 0.06), and ``1 - F/D >= min_support`` (default 0.10). On a
  2,048-point cloud the 55 nearest points reach ~0.1 model units, more than the gap
  between a quarter of neighbouring keypoints (bed: nearest-keypoint gap quartile 0.09,
  decile 0.064), so 55 alone suppresses real keypoints. 2 sigma is the spacing the
  saliency itself can resolve: a sum of two Gaussians of width sigma has two maxima
  only when they are more than 2 sigma apart. With ~6 annotators per model (each
  clicking a given keypoint with probability ~0.7, with noise), the support of a true
  keypoint is typically only 0.15-0.35, so the threshold sits low; mis-clicks (one
  annotator, no counterpart elsewhere) fall below it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.spatial import cKDTree

from kpengine.geometry.geodesic import GeodesicGraph

MISS_COST = float(np.sqrt(2.0))


@dataclass(frozen=True)
class FidelityConfig:
    near: float = 2.5
    n_references: int = 16
    smooth_k: int = 8
    nms_neighbours: int = 55
    nms_radius: float = 0.06
    min_support: float = 0.10
    self_weight: float = 0.5
    anywhere: bool = False
    cross_support: float = 0.3
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ModelEvidence:
    """What one model contributes as a reference.

    ``near`` (T,) cloud indices of the near-click set; ``weight`` (T, A) Gaussian weight of
    each annotator's nearest click; ``nearest`` (T, A) index into the model's clicks of that
    click; ``click_emb`` (C, D) embeddings of the clicked points.
    """

    near: np.ndarray
    weight: np.ndarray
    nearest: np.ndarray
    click_emb: np.ndarray


def model_evidence(per_click: np.ndarray, annotator: np.ndarray, near_threshold: float) -> ModelEvidence:
    """Near-click set and per-annotator nearest clicks from saliency maps ``per_click`` (C, N)."""
    near = np.flatnonzero(per_click.max(axis=0) >= near_threshold) if len(per_click) else np.zeros(0, np.int64)
    anns = np.unique(annotator)
    weight = np.zeros((len(near), len(anns)))
    nearest = np.zeros((len(near), len(anns)), np.int64)
    sub = per_click[:, near]  # (C, T)
    for j, a in enumerate(anns):
        mine = np.flatnonzero(annotator == a)
        k = sub[mine].argmax(axis=0)
        weight[:, j] = sub[mine][k, np.arange(len(near))]
        nearest[:, j] = mine[k]
    return ModelEvidence(near, weight, nearest, np.zeros((0, 0), np.float32))


def _agreement(y: np.ndarray, weight: np.ndarray, nearest: np.ndarray, click_emb: np.ndarray) -> np.ndarray:
    """Sum over annotators (Y,) of ``w |g(y) - g(x_c)| + (1 - w) D`` for weights/nearest clicks (Y, A)."""
    s = np.take_along_axis(y @ click_emb.T, nearest, axis=1)  # (Y, A) cosine to c's nearest click
    # a match is never worse than a miss: sqrt(2) (orthogonal) is "nothing there" only for
    # non-negative features; DGCNN ends in LeakyReLU, so cosines can be negative and
    # distances reach 2, which would make a poor match cost more than clicking nothing
    dist = np.minimum(np.sqrt(np.clip(2.0 - 2.0 * s, 0.0, None)), MISS_COST)
    return (weight * dist + (1.0 - weight) * MISS_COST).sum(axis=1)


def reference_term(y: np.ndarray, refs: list[tuple[np.ndarray, ModelEvidence]]) -> np.ndarray | None:
    """Mean cost (Y,) over the (m', c) pairs of ``refs`` of embeddings ``y`` (Y, D); None without references."""
    total = np.zeros(len(y))
    pairs = 0
    for emb_r, ev in refs:
        if len(ev.near) == 0:
            continue
        z = (y @ emb_r[ev.near].T).argmax(axis=1)  # transfer: nearest embedding on m' (unit rows)
        total += _agreement(y, ev.weight[z], ev.nearest[z], ev.click_emb)
        pairs += ev.weight.shape[1]
    return total / pairs if pairs else None


def fidelity_error(
    emb: np.ndarray,
    own: ModelEvidence,
    refs: list[tuple[np.ndarray, ModelEvidence]],
    self_weight: float = 0.5,
    anywhere: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """F (N,) for one model: ``emb`` (N, D) unit rows; ``refs`` [(emb', evidence')] of the other reference models.

    ``self_weight`` of F comes from the model's own annotators at y (m' = m, identity
    transfer), the rest from the mean over ``refs`` (see the module docstring).

    ``anywhere``: y ranges over every point, not only the near-click set (eq. 4 as
    written: other models' annotators can support a keypoint that this model's annotators
    all missed; there the own-model term is the miss cost). Returns ``(F, R)`` with R (N,)
    the reference term alone (``MISS_COST`` where there are no references).
    """
    n = len(emb)
    out = np.full(n, MISS_COST)
    f_self = np.full(n, MISS_COST)
    ys = np.arange(n) if anywhere else own.near
    if len(own.near):
        f_self[own.near] = _agreement(emb[own.near], own.weight, own.nearest, own.click_emb) / max(
            own.weight.shape[1], 1
        )
    ref = np.full(n, MISS_COST)
    if len(ys):
        r = reference_term(emb[ys], refs)
        if r is not None:
            ref[ys] = r
            out[ys] = self_weight * f_self[ys] + (1.0 - self_weight) * r
        else:
            out[ys] = f_self[ys]
    return (out, ref) if anywhere else out


def smooth(points: np.ndarray, values: np.ndarray, k: int = 8) -> np.ndarray:
    """Mean of ``values`` (N,) over each point's ``k`` nearest neighbours in ``points`` (N, 3)."""
    if k <= 1:
        return values.copy()
    idx = cKDTree(points).query(points, k=min(k, len(points)))[1]
    return values[idx].mean(axis=1)


def non_minimum_suppression(
    graph: GeodesicGraph,
    values: np.ndarray,
    candidates: np.ndarray,
    neighbours: int = 55,
    radius: float = 0.06,
) -> np.ndarray:
    """Candidates (subset of ``candidates`` (Y,)) whose value is the minimum of their geodesic neighbourhood.

    The neighbourhood is the ``neighbours`` geodesically nearest points that lie within
    ``radius`` (fewer where fewer do). Ties go to the smaller index.
    """
    candidates = np.asarray(candidates, np.int64)
    if len(candidates) == 0:
        return candidates
    d = graph.from_sources(candidates, limit=radius)  # (Y, N), inf beyond radius
    k = min(neighbours + 1, d.shape[1])
    nbr = np.argpartition(d, k - 1, axis=1)[:, :k]  # includes the point itself (distance 0)
    reach = np.isfinite(np.take_along_axis(d, nbr, axis=1))
    v_self = values[candidates][:, None]
    v_nbr = values[nbr]
    lower = (v_nbr < v_self) | ((v_nbr == v_self) & (nbr < candidates[:, None]))
    keep = ~(lower & reach).any(axis=1)
    return candidates[keep]


def reference_models(n_models: int, usable: np.ndarray, n_refs: int, seed: int) -> list[np.ndarray]:
    """For each model, ``n_refs`` other usable models (indices), drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    usable = np.asarray(usable, np.int64)
    out = []
    for m in range(n_models):
        others = usable[usable != m]
        out.append(others if len(others) <= n_refs else np.sort(rng.choice(others, n_refs, replace=False)))
    return out
