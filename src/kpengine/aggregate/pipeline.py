"""The aggregation pipeline: validated clicks -> semantic keypoints per model, with a report.

``aggregate(shapes, clicks, cfg)`` runs, for ``cfg.rounds`` rounds:

1. saliency of every click on its model's cloud (geodesic Gaussians, once);
2. the embedding g, trained on annotator-index classes (round 1) or on the previous
   round's semantic ids (later rounds);
3. the fidelity error map of every model, smoothed (eq. 4);
4. semantic ids: by default (``ids="classes"``, :mod:`kpengine.aggregate.classes`) the
   annotators' own (annotator, kp_index) classes are linked across annotators where their
   clicks coincide, and each model's keypoint of an id is the reliability-weighted consensus
   of its clicks (one-annotator keypoints must be backed by F); with ``ids="tsne"`` (the
   paper's route) non-minimum suppression of F gives candidates and t-SNE + DBSCAN of their
   embeddings gives the ids (noise = mis-clicks dropped). Either way t-SNE of the keypoints'
   embeddings is kept for the cluster plot and the /verify page;

then symmetry detection on the final keypoints. Models without clicks get no keypoints
(and a problem saying so); everything that can be aggregated is.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from kpengine.aggregate.checks import crowd_problems
from kpengine.aggregate.classes import ClassConfig, assign_by_classes
from kpengine.aggregate.cluster import (
    ClusterConfig,
    Clustering,
    cluster_candidates,
    min_samples_for,
    project_tsne,
)
from kpengine.aggregate.embedding import EmbeddingConfig, TrainingClicks, embed, train_embedding
from kpengine.aggregate.evaluate import Prediction
from kpengine.aggregate.fidelity import (
    MISS_COST,
    FidelityConfig,
    fidelity_error,
    model_evidence,
    non_minimum_suppression,
    reference_models,
    smooth,
)
from kpengine.aggregate.raw import ClickSet, check_clicks
from kpengine.aggregate.saliency import SIGMA, click_saliency, gaussian
from kpengine.aggregate.symmetry import SymmetryConfig, detect_symmetries
from kpengine.data.shape import Shape
from kpengine.errors import DataError, Problem
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.geometry.sampling import snap_to_points
from kpengine.geometry.transforms import bbox_centre
from kpengine.io.annotations import Keypoint, ModelAnnotation
from kpengine.io.clicks import Click

MIN_MODELS = 2


@dataclass(frozen=True)
class AggregateConfig:
    sigma: float = SIGMA
    rounds: int = 1
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    symmetry: SymmetryConfig = field(default_factory=SymmetryConfig)
    ids: str = "classes"
    classes: ClassConfig = field(default_factory=ClassConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.ids not in ("classes", "tsne"):
            raise ValueError(f"ids must be 'classes' or 'tsne', got {self.ids!r}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class AggregationResult:
    """Everything the CLI writes and the store/web tool shows.

    ``predictions`` per model id; ``fidelity`` smoothed F (N,) per model id; candidate arrays
    (n,) ``cand_model`` (index into ``model_ids``), ``cand_point`` (cloud index),
    ``cand_error``; ``clustering`` of the last round.
    """

    model_ids: list[str]
    predictions: dict[str, Prediction]
    annotations: list[ModelAnnotation]
    fidelity: dict[str, np.ndarray]
    cand_model: np.ndarray
    cand_point: np.ndarray
    cand_error: np.ndarray
    clustering: Clustering
    problems: list[Problem]
    report: dict


def _snap_clicks(points: np.ndarray, xyz: np.ndarray, given: np.ndarray) -> np.ndarray:
    """Cloud index per click: the given ``point_index`` when it names a point at ``xyz`` (1e-3), else the nearest."""
    idx, _ = snap_to_points(points, xyz)
    ok = (given >= 0) & (given < len(points))
    ok[ok] &= np.linalg.norm(points[given[ok]] - xyz[ok], axis=1) < 1e-3
    idx[ok] = given[ok]
    return idx


#: the stages :func:`aggregate` reports to ``on_stage``, with the share of the work done when each starts
STAGES = {"saliency": 0.0, "embedding": 0.15, "fidelity": 0.45, "ids": 0.65, "symmetry": 0.9, "done": 1.0}


def aggregate(
    shapes: Sequence[Shape],
    clicks: Sequence[Click],
    cfg: AggregateConfig = AggregateConfig(),
    on_stage: Callable[[str, float], None] | None = None,
) -> AggregationResult:
    """Aggregate raw ``clicks`` on ``shapes`` (see the module docstring).

    ``on_stage(name, fraction)`` is called as each stage of :data:`STAGES` starts (the
    embedding, fidelity and ids stages once per round), so a server job can show progress.
    """

    def stage(name: str, r: int = 0) -> None:
        if on_stage is not None:
            f = STAGES[name]
            if name in ("embedding", "fidelity", "ids"):  # per round, inside the rounds' share [0.15, 0.9)
                f = 0.15 + 0.75 * (r + (f - 0.15) / 0.75) / cfg.rounds
            on_stage(name, f)

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    by_id = {s.model_id: s for s in shapes}
    kept, problems = check_clicks(clicks, by_id)
    cs = ClickSet.from_clicks(kept)
    order = [s.model_id for s in shapes if s.model_id in cs.models]
    for s in shapes:
        if s.model_id not in cs.models:
            problems.append(Problem(s.model_id, "no clicks on this model; it gets no keypoints", fatal=False))
    if len(order) < MIN_MODELS or cs.n_clicks < 3:
        # the problems say why clicks were dropped; name the first few here, since the caller
        # never gets the list when this raises
        dropped = [str(p) for p in problems if p.fatal][:3]
        raise DataError(
            f"too few annotations to cluster: {cs.n_clicks} usable clicks on {len(order)} model(s); "
            f"aggregation needs clicks on at least {MIN_MODELS} models (of {len(shapes)} in the dataset, "
            f"{len(clicks)} clicks given, {len(clicks) - len(kept)} dropped"
            + (f"; first problems: {'; '.join(dropped)})" if dropped else ")")
        )
    # 1. saliency (geodesic Gaussians), evidence per model
    stage("saliency")
    near_thr = float(gaussian(cfg.fidelity.near * cfg.sigma, cfg.sigma))
    points = [by_id[m].points.astype(np.float64) for m in order]
    graphs, train, evidence = [], [], []
    for m, pts in zip(tqdm(order, desc="saliency", disable=not cfg.progress, leave=False), points):
        mc = cs.models[m]
        graph = GeodesicGraph(pts, protocol="strict")
        pidx = _snap_clicks(pts, mc.xyz.astype(np.float64), mc.point_index)
        per_click = click_saliency(graph, pidx, cfg.sigma)
        graphs.append(graph)
        train.append(TrainingClicks(pidx, mc.label, mc.annotator))
        evidence.append(model_evidence(per_click, mc.annotator, near_thr))
    timings["saliency_s"] = time.perf_counter() - t0
    # rounds
    supervision, label_owner, n_owners = train, cs.classes[:, 0], len(cs.annotators)
    refs = reference_models(len(order), np.arange(len(order)), cfg.fidelity.n_references, cfg.fidelity.seed)
    losses: list[list[float]] = []
    class_stats: dict = {}
    for r in range(cfg.rounds):
        t = time.perf_counter()
        stage("embedding", r)
        net, loss = train_embedding(points, supervision, n_owners, label_owner, cfg.embedding, cfg.progress)
        losses.append(loss)
        emb = embed(net, points)
        timings[f"round{r + 1}_embedding_s"] = time.perf_counter() - t
        t = time.perf_counter()
        stage("fidelity", r)
        for ev, e, tc in zip(evidence, emb, train):
            ev.click_emb = e[tc.point_index]
        fid, cand_m, cand_p, cand_x = {}, [], [], []
        fc = cfg.fidelity
        for i in tqdm(range(len(order)), desc=f"fidelity (round {r + 1})", disable=not cfg.progress, leave=False):
            pool = [(emb[j], evidence[j]) for j in refs[i]]
            if fc.anywhere:
                f, ref = fidelity_error(emb[i], evidence[i], pool, fc.self_weight, anywhere=True)
            else:
                f, ref = fidelity_error(emb[i], evidence[i], pool, fc.self_weight), None
            fs = smooth(points[i], f, fc.smooth_k)
            fid[order[i]] = fs
            near = np.zeros(len(fs), bool)
            near[evidence[i].near] = True
            ok = near & (1.0 - fs / MISS_COST >= fc.min_support)
            if ref is not None:
                # cross-model evidence: where none of this model's annotators clicked, other models'
                # annotators alone (through the embedding) may propose a keypoint they all missed
                ok |= ~near & (1.0 - smooth(points[i], ref, fc.smooth_k) / MISS_COST >= fc.cross_support)
            kept_pts = non_minimum_suppression(graphs[i], fs, np.flatnonzero(ok), fc.nms_neighbours, fc.nms_radius)
            cand_m += [i] * len(kept_pts)
            cand_p += kept_pts.tolist()
            cand_x += (~near[kept_pts]).tolist()
        cand_model, cand_point = np.array(cand_m, np.int64), np.array(cand_p, np.int64)
        cand_cross = np.array(cand_x, bool)
        timings[f"round{r + 1}_fidelity_s"] = time.perf_counter() - t
        t = time.perf_counter()
        stage("ids", r)
        if cfg.ids == "classes":
            # ids from the annotators' own numberings (classes.py); candidates = per-id consensus points
            fids = [fid[m] for m in order]
            cand_model, cand_point, labels, keep, class_stats = assign_by_classes(
                graphs,
                train,
                cs.classes[:, 0],
                fids,
                cfg.sigma,
                min_samples_for(cfg.cluster, len(order)),
                cfg.classes,
                points=points,
            )
            class_stats["annotator_spread"] = dict(zip(cs.annotators, class_stats["annotator_spread"]))
            cand_cross = np.zeros(len(cand_point), bool)
        cand_error = np.array([fid[order[m]][p] for m, p in zip(cand_model, cand_point)])
        cand_emb = (
            np.stack([emb[m][p] for m, p in zip(cand_model, cand_point)]) if len(cand_point) else np.zeros((0, 1))
        )
        if cfg.ids == "classes":
            xy = project_tsne(cand_emb, cfg.cluster.perplexity, cfg.cluster.seed)
            clustering = Clustering(xy, labels, keep, float("nan"), min_samples_for(cfg.cluster, len(order)))
        else:
            centred = [p - bbox_centre(p) for p in points]
            cand_xyz = (
                np.stack([centred[m][p] for m, p in zip(cand_model, cand_point)])
                if len(cand_point)
                else np.zeros((0, 3))
            )
            clustering = cluster_candidates(cand_emb, cand_model, cand_error, len(order), cfg.cluster, cand_xyz)
        timings[f"round{r + 1}_cluster_s"] = time.perf_counter() - t
        # next round's supervision: the recovered keypoints, one "annotator" numbering by id
        sel = clustering.keep
        supervision = [
            TrainingClicks(cand_point[sel & (cand_model == i)], clustering.labels[sel & (cand_model == i)],
                           np.zeros(int((sel & (cand_model == i)).sum()), np.int64))
            for i in range(len(order))
        ]  # fmt: skip
        label_owner, n_owners = np.zeros(max(clustering.n_clusters, 1), np.int64), 1
    # outputs
    t = time.perf_counter()
    stage("symmetry")
    sel = clustering.keep
    kp_pts, kp_ids = [], []
    for i in range(len(order)):
        mine = np.flatnonzero(sel & (cand_model == i))
        mine = mine[np.argsort(clustering.labels[mine], kind="stable")]
        kp_pts.append(cand_point[mine])
        kp_ids.append(clustering.labels[mine].astype(np.int64))
    syms = detect_symmetries([p[k] for p, k in zip(points, kp_pts)], kp_ids, points, cfg.symmetry)
    problems += crowd_problems(
        order,
        [(p[tc.point_index], tc.label, tc.annotator) for p, tc in zip(points, train)],
        [(p[k], i) for p, k, i in zip(points, kp_pts, kp_ids)],
        cs.annotators,
        cs.classes,
    )
    timings["symmetry_s"] = time.perf_counter() - t
    predictions, annotations = {}, []
    for i, m in enumerate(order):
        shape = by_id[m]
        predictions[m] = Prediction(kp_pts[i], kp_ids[i], syms[i])
        kps = [
            Keypoint(xyz=tuple(float(v) for v in shape.points[p]), semantic_id=int(s), point_index=int(p))  # type: ignore[arg-type]
            for p, s in zip(kp_pts[i], kp_ids[i])
        ]
        annotations.append(ModelAnnotation(shape.category.synset, m, kps, syms[i]))
    timings["total_s"] = time.perf_counter() - t0
    sizes = Counter(clustering.labels[clustering.labels >= 0].tolist())
    report = {
        "models": len(shapes),
        "models_with_clicks": len(order),
        "annotators": len(cs.annotators),
        "clicks": len(clicks),
        "clicks_used": cs.n_clicks,
        "annotator_classes": cs.n_classes,
        "candidates": len(cand_point),
        "clusters": {
            str(c): {"candidates": n, "models": int((sel & (clustering.labels == c)).sum())}
            for c, n in sorted(sizes.items())
        },  # fmt: skip
        "noise_candidates": int((clustering.labels < 0).sum()),
        "duplicates_dropped": int(((clustering.labels >= 0) & ~sel).sum()),
        "cross_model_candidates": int(cand_cross.sum()),
        "cross_model_keypoints": [
            {"model_id": order[m], "point_index": int(p), "semantic_id": int(c)}
            for m, p, c in zip(
                cand_model[sel & cand_cross], cand_point[sel & cand_cross], clustering.labels[sel & cand_cross]
            )
        ],  # fmt: skip
        "ids": cfg.ids,
        "class_grouping": class_stats,
        "dbscan": {"eps": clustering.eps, "min_samples": clustering.min_samples},
        "keypoints_per_model": {m: len(kp_pts[i]) for i, m in enumerate(order)},
        "reflection_pairs": sum(len(s.reflection) for s in syms),
        "rotation_groups": sum(len(s.rotation) for s in syms),
        "final_loss": [lo[-1] for lo in losses],
        "problems": [str(p) for p in problems],
        "timings": timings,
        "loadavg": list(os.getloadavg()),
        "config": cfg.to_json(),
    }
    stage("done")
    return AggregationResult(
        order, predictions, annotations, fid, cand_model, cand_point, cand_error, clustering, problems, report
    )
