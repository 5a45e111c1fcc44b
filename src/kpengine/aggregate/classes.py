"""Semantic ids from the annotators' own numberings: link (annotator, kp_index) classes across annotators.

Every annotator numbers keypoints consistently over all their models, so one class
(annotator, kp_index) is one semantic id on every model that annotator clicked (bar a
mis-click, or a left/right flip). Two classes of *different* annotators are the same id
when their clicks coincide on the models both clicked; two classes of the *same*
annotator never are (a person does not give one point two numbers). So instead of
clustering every candidate of every model in t-SNE space (the paper's route, with its
over-split islands and chained clusters), we cluster the few hundred classes:

1. **links** (:func:`class_links`): on each model, for each pair of annotators a != b,
   a's click i and b's click j are linked when each is the other's geodesically nearest
   among the other annotator's clicks and they lie within ``link_radius``. ``links[p, q]``
   counts the models where classes p and q are linked, ``co[p, q]`` the models where both
   have a click. Mutual nearest neighbours keep two close keypoints apart as long as both
   annotators clicked both, and do not pair a's keypoint with b's neighbouring one when b
   skipped it.
2. **grouping** (:func:`group_classes`): average-linkage agglomeration of the classes, score
   ``L / (N + prior)`` between two groups (links over co-occurrences, shrunk by ``prior``
   so that one lucky co-occurrence is not certainty), merging while the best score is at
   least ``merge_score`` and never merging two groups that share an annotator
   (cannot-link). A class left alone (a mirrored annotator's class sits between two ids,
   scoring ~0.5 with each) joins its best group above ``attach_score`` when it can.
3. **consensus** (:func:`consensus_point`): on each model, the keypoint of id s is the cloud
   point where the saliency of the clicks of s's classes on this model sums highest (a
   mean shift over geodesic Gaussians: noise averages out, a lone mis-click or mirrored
   click among agreeing ones is outvoted); its *support* is the number of annotators
   with a click of s within ``2 sigma`` of it.

The learned embedding and the fidelity error still decide what a single click is worth:
a keypoint supported by one annotator only is kept when the fidelity support
``1 - F/sqrt(2)`` there (the other models' annotators, through the embedding, eq. 4)
reaches the candidates' threshold. Numbers that decided each choice: docs/aggregation.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from kpengine.aggregate.cluster import relabel_by_size
from kpengine.aggregate.fidelity import MISS_COST
from kpengine.aggregate.prior import PositionPrior, PriorConfig, fuse
from kpengine.aggregate.saliency import CUTOFF, gaussian
from kpengine.geometry.geodesic import GeodesicGraph

if TYPE_CHECKING:  # the embedding module pulls in torch
    from kpengine.aggregate.embedding import TrainingClicks


@dataclass(frozen=True)
class ClassConfig:
    link_radius: float = 0.15
    prior: float = 2.0
    merge_score: float = 0.4
    attach_score: float = 0.15
    support_radius: float = 2.0  # in sigmas
    single_support: float = 0.10  # fidelity support a one-annotator keypoint needs
    same_place: float = 0.5  # in sigmas: two ids' keypoints this close on a model are one point
    reliability: bool = True  # weight annotators by their measured spread
    single_spread: float | None = None  # if set, a one-annotator keypoint needs its annotator's spread <= this
    min_spread: float = 0.01
    position: PriorConfig = PriorConfig()  # one-annotator keypoints placed with the other models' help

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ModelClickGeometry:
    """One model's clicks: cloud index (C,), annotator (C,), class label (C,), geodesic distances (C, C)."""

    point_index: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    dist: np.ndarray


def class_links(models: Sequence[ModelClickGeometry], n_classes: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``(links, co)`` (L, L) int counts over models (see the module docstring); symmetric, zero diagonal."""
    links = np.zeros((n_classes, n_classes), np.int64)
    co = np.zeros((n_classes, n_classes), np.int64)
    for m in models:
        anns = np.unique(m.annotator)
        for ia, a in enumerate(anns):
            ca = np.flatnonzero(m.annotator == a)
            for b in anns[ia + 1 :]:
                cb = np.flatnonzero(m.annotator == b)
                pa, pb = np.unique(m.label[ca]), np.unique(m.label[cb])
                co[np.ix_(pa, pb)] += 1
                d = m.dist[np.ix_(ca, cb)]  # (Ca, Cb)
                ja = d.argmin(axis=1)  # a's click -> nearest of b's
                ib = d.argmin(axis=0)  # b's click -> nearest of a's
                mutual = ib[ja] == np.arange(len(ca))
                ok = mutual & (d[np.arange(len(ca)), ja] <= radius)
                for i, j in zip(np.flatnonzero(ok), ja[ok]):
                    links[m.label[ca[i]], m.label[cb[j]]] += 1
    co = co + co.T
    links = links + links.T
    return links, co


def group_classes(
    links: np.ndarray,
    co: np.ndarray,
    class_annotator: np.ndarray,
    merge_score: float = 0.4,
    attach_score: float = 0.15,
    prior: float = 2.0,
) -> np.ndarray:
    """Group index (L,) per class: average-linkage with cannot-link inside an annotator (module docstring)."""
    n = len(class_annotator)
    if n == 0:
        return np.zeros(0, np.int64)
    n_ann = int(class_annotator.max()) + 1
    member = np.eye(n, dtype=bool)  # (G, L) group membership
    has = np.zeros((n, n_ann), bool)
    has[np.arange(n), class_annotator] = True
    lk, cc = links.astype(np.float64).copy(), co.astype(np.float64).copy()
    alive = np.ones(n, bool)

    def best(threshold: float, singles_only: bool) -> tuple[int, int] | None:
        score = lk / (cc + prior)
        conflict = (has.astype(np.int64) @ has.T.astype(np.int64)) > 0
        ok = alive[:, None] & alive[None, :] & ~conflict & (score >= threshold)
        np.fill_diagonal(ok, False)
        if singles_only:
            ok &= (member.sum(axis=1) == 1)[:, None]
        if not ok.any():
            return None
        s = np.where(ok, score, -1.0)
        g, h = np.unravel_index(int(s.argmax()), s.shape)
        return int(g), int(h)

    for threshold, singles in ((merge_score, False), (attach_score, True)):
        while (pair := best(threshold, singles)) is not None:
            g, h = pair  # h joins g
            lk[g] += lk[h]
            lk[:, g] += lk[:, h]
            cc[g] += cc[h]
            cc[:, g] += cc[:, h]
            lk[g, g] = cc[g, g] = 0.0
            lk[h], lk[:, h], cc[h], cc[:, h] = 0.0, 0.0, 0.0, 0.0
            member[g] |= member[h]
            has[g] |= has[h]
            member[h] = has[h] = alive[h] = False
    groups = np.flatnonzero(alive)
    out = np.zeros(n, np.int64)
    for k, g in enumerate(groups):
        out[member[g]] = k
    return out


def consensus_point(
    saliency: np.ndarray, annotator: np.ndarray, support_threshold: float, weight: np.ndarray | None = None
) -> tuple[int, int]:
    """(column, support) of one id on one model from its clicks' saliency maps (C, T).

    The column maximising the summed saliency, each click weighted by ``weight`` (C,) (its
    annotator's reliability; 1 when None; ties: the smaller index); support = the number of
    distinct annotators whose click of this id has saliency >= ``support_threshold`` there.
    """
    total = saliency.sum(axis=0) if weight is None else weight @ saliency
    p = int(total.argmax())
    near = saliency[:, p] >= support_threshold
    return p, len(np.unique(annotator[near]))


def annotator_spread(
    dist: Sequence[np.ndarray], annotator: Sequence[np.ndarray], n_annotators: int, cap: float
) -> np.ndarray:
    """Median distance (A,) of each annotator's clicks to the consensus point of their id (nan: never measured).

    ``dist`` per consensus point with >= 2 annotators: (C_k,) distances of its clicks (inf
    capped at ``cap``), ``annotator`` (C_k,) whose they are.
    """
    per: list[list[float]] = [[] for _ in range(n_annotators)]
    for d, a in zip(dist, annotator):
        for v, w in zip(np.minimum(d, cap), a):
            per[int(w)].append(float(v))
    return np.array([np.median(v) if v else np.nan for v in per])


def assign_by_classes(
    graphs: Sequence[GeodesicGraph],
    clicks: Sequence[TrainingClicks],
    class_annotator: np.ndarray,
    fidelity: Sequence[np.ndarray],
    sigma: float,
    min_models: int,
    cfg: ClassConfig = ClassConfig(),
    points: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Keypoints with ids for every model: ``(cand_model, cand_point, labels, keep, stats)``.

    ``graphs`` and ``clicks`` (cloud index, class label, annotator index per click) per
    model; ``class_annotator`` (L,) the annotator of each class; ``fidelity`` (N,) smoothed
    F per model. One candidate per (model, class group) with clicks there; ``labels`` (n,)
    the id (numbered by size; -1 for a group on fewer than ``min_models`` models and for
    rejected candidates), ``keep`` (n,) bool: the keypoints output (support >= 2 annotators;
    a one-annotator keypoint placed by the position prior, :mod:`kpengine.aggregate.prior`, when
    ``points`` (per model, (N_m, 3)) are given and the prior has references, else kept when
    its fidelity support >= ``single_support``; not on the same spot as a better-supported
    id). ``stats``: groups, links, one-annotator keypoints kept/rejected/placed by the prior,
    spread per annotator.
    """
    n_classes = len(class_annotator)
    reach = max(cfg.link_radius, CUTOFF * sigma)
    geo, sal = [], []
    for g, c in zip(graphs, clicks):
        d = g.from_sources(c.point_index, limit=reach)  # (C, N)
        geo.append(ModelClickGeometry(c.point_index, c.annotator, c.label, d[:, c.point_index]))
        near = np.flatnonzero(d.min(axis=0, initial=np.inf) <= CUTOFF * sigma)
        dn = d[:, near]
        sal.append((near, gaussian(np.where(dn <= CUTOFF * sigma, dn, np.inf), sigma), dn))
    links, co = class_links(geo, n_classes, cfg.link_radius)
    group = group_classes(links, co, class_annotator, cfg.merge_score, cfg.attach_score, cfg.prior)
    thr = float(gaussian(cfg.support_radius * sigma, sigma))
    n_ann = int(class_annotator.max()) + 1 if len(class_annotator) else 0

    who: list[int] = []  # per candidate: the annotator whose click is nearest it

    def consensus(weight: np.ndarray | None) -> tuple[list, list, list, list, list]:
        cm, cp, cg, sup, spread = [], [], [], [], []
        who.clear()
        for i, (c, (near, s, dn)) in enumerate(zip(clicks, sal)):
            gl = group[c.label]
            for k in np.unique(gl):
                rows = np.flatnonzero(gl == k)
                w = None if weight is None else weight[c.annotator[rows]]
                j, n_sup = consensus_point(s[rows], c.annotator[rows], thr, w)
                who.append(int(c.annotator[rows][int(s[rows, j].argmax())]))
                cm.append(i)
                cp.append(int(near[j]))
                cg.append(int(k))
                sup.append(n_sup)
                anns = np.unique(c.annotator[rows])
                if n_sup >= 2 and len(anns) >= 2:
                    # leave-one-out: each annotator's clicks against the consensus of the others'
                    for a in anns:
                        mine = c.annotator[rows] == a
                        jo = int(s[rows[~mine]].sum(axis=0).argmax())
                        spread.append((dn[rows[mine], jo], c.annotator[rows[mine]]))
        return cm, cp, cg, sup, spread

    cm, cp, cg, sup, spread = consensus(None)
    weight, r = None, np.full(n_ann, np.nan)
    if cfg.reliability and spread:
        # each annotator's own noise, measured against the consensus of the others' clicks:
        # inverse-variance weights so that a careful annotator outvotes a careless one
        r = annotator_spread([d for d, _ in spread], [a for _, a in spread], n_ann, reach)
        r = np.where(np.isfinite(r), np.maximum(r, cfg.min_spread), np.nanmedian(r))
        weight = np.square(np.nanmedian(r) / r)
        cm, cp, cg, sup, _ = consensus(weight)
    cand_model, cand_point = np.array(cm, np.int64), np.array(cp, np.int64)
    cand_group, support = np.array(cg, np.int64), np.array(sup, np.int64)
    f_sup = np.array([1.0 - fidelity[m][p] / MISS_COST for m, p in zip(cand_model, cand_point)])
    # one annotator alone: the other models' evidence (fidelity) must back it, and the annotator must be careful
    careful = np.ones(len(support), bool)
    if cfg.single_spread is not None:
        careful = np.nan_to_num(r, nan=0.0)[np.array(who, np.int64)] <= cfg.single_spread
    keep = (support >= 2) | ((f_sup >= cfg.single_support) & careful)
    # one annotator alone, second opinion: where the other models put this id (prior.py). The
    # position is the click fused with the prior; a click far from the prior (a wrong or
    # mirrored click) is dropped, or with far="prior" replaced by the prior (the annotator's
    # number says the model has the id)
    placed = moved = dropped = 0
    if points is not None and cfg.position.enabled and len(support):
        conf = np.flatnonzero(support >= 2)
        pts = [np.asarray(p, np.float64) for p in points]
        prior = PositionPrior(
            pts,
            cand_model[conf],
            cand_group[conf],
            np.stack([pts[m][p] for m, p in zip(cand_model[conf], cand_point[conf])])
            if len(conf)
            else np.zeros((0, 3)),
            int(cand_group.max()) + 1,
            cfg.position,
        )
        spread_of = np.where(np.isfinite(r), r, cfg.position.spread)
        for c in np.flatnonzero(support == 1):
            m = int(cand_model[c])
            guess = prior.predict(m, int(cand_group[c]))
            if guess is None:
                continue
            if cfg.position.far == "reject" and np.linalg.norm(pts[m][cand_point[c]] - guess) > cfg.position.agree:
                keep[c] = False
                dropped += 1
                continue
            x = fuse(pts[m][cand_point[c]], guess, float(spread_of[who[c]]), cfg.position)
            p = int(np.argmin(((pts[m] - x) ** 2).sum(axis=1)))
            moved += int(p != cand_point[c])
            cand_point[c] = p
            keep[c] = True
            placed += 1
        if placed:
            f_sup = np.array([1.0 - fidelity[m][p] / MISS_COST for m, p in zip(cand_model, cand_point)])
    # two ids on one spot of a model (a mirrored or mis-click numbered as another id): the better supported stays
    same = cfg.same_place * sigma
    for i in np.unique(cand_model):
        idx = np.flatnonzero((cand_model == i) & keep)
        if len(idx) < 2:
            continue
        d = graphs[i].from_sources(cand_point[idx], limit=same)[:, cand_point[idx]]
        rank = np.lexsort((-f_sup[idx], -support[idx]))  # best first
        for a in rank:
            if not keep[idx[a]]:
                continue
            clash = np.flatnonzero((d[a] <= same) & keep[idx])
            keep[idx[clash[clash != a]]] = False
    # an id must recur on several models (as DBSCAN's min_samples asked of a cluster)
    labels = cand_group.copy()
    for k in np.unique(cand_group):
        sel = (cand_group == k) & keep
        if len(np.unique(cand_model[sel])) < min_models:
            labels[cand_group == k] = -1
    labels = relabel_by_size(np.where(keep, labels, -1))
    keep &= labels >= 0
    stats = {
        "class_groups": int(group.max()) + 1 if len(group) else 0,
        "class_links": int(links.sum()) // 2,
        "single_annotator_kept": int((keep & (support == 1)).sum()),
        "single_annotator_rejected": int(((support == 1) & ~keep).sum()),
        "single_annotator_placed_by_prior": placed,
        "single_annotator_moved_by_prior": moved,
        "single_annotator_dropped_by_prior": dropped,
        "annotator_spread": [round(float(v), 4) for v in r],
    }
    return cand_model, cand_point, labels, keep, stats
