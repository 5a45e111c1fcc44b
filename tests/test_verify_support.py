"""Shared set-up for the verification tests (no tests here).

A small store of sample chairs with a simulated crowd's raw clicks, and an aggregation
result built from the ground truth (clusters = true semantic ids, t-SNE = one blob per id,
a few noise candidates), so the verification actions are tested on a known answer in
milliseconds; the real pipeline is exercised once, tiny, in ``test_verify_api``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import delete, select

from kpengine.aggregate.cluster import Clustering
from kpengine.aggregate.crowd import CrowdModel, simulate_crowd
from kpengine.aggregate.evaluate import Prediction
from kpengine.aggregate.pipeline import AggregationResult
from kpengine.data import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.io.annotations import Keypoint, ModelAnnotation, Symmetries
from kpengine.store import Store, open_store, repo
from kpengine.store.exchange import import_dataset
from kpengine.store.schema import AggregatedKeypoint, Model

N_MODELS = 5


def chairs(root: Path) -> list[Shape]:
    ds = KeypointNetDataset(root, "chair", "all")
    return list(ds)[:N_MODELS]


def fill_store(url: str, root: Path, *, keep_truth: bool = False) -> tuple[Store, dict[str, str], list[Shape]]:
    """Import the sample chairs, invite an admin and an annotator, save a crowd's clicks.

    Without ``keep_truth`` the imported ground-truth keypoints are removed, as in a category
    that only has raw annotations so far. Returns the store, tokens by role, the shapes."""
    store = open_store(url)
    shapes = chairs(root)
    clicks = simulate_crowd(shapes, CrowdModel(n_annotators=4, seed=1))
    with store.session() as s:
        import_dataset(s, root, ["chair"])
        if not keep_truth:
            cat = repo.get_category(s, "chair")
            mine = select(Model.id).where(Model.category_id == cat.id)  # type: ignore[union-attr]
            s.execute(delete(AggregatedKeypoint).where(AggregatedKeypoint.model_id.in_(mine)))
        _, admin = repo.create_annotator(s, "root", "admin")
        _, annotator = repo.create_annotator(s, "eve")
        people = {}
        for c in clicks:
            if c.annotator not in people:
                people[c.annotator] = repo.create_annotator(s, c.annotator)[0]
        sets: dict[tuple[str, str], list] = {}
        for c in clicks:
            sets.setdefault((c.annotator, c.model_id), []).append(
                repo.Click(c.model_id, c.annotator, c.kp_index, c.xyz, point_index=c.point_index)
            )
        for (who, mid), kps in sets.items():
            repo.save_raw_annotation(s, repo.get_model(s, "chair", mid), people[who], kps)  # type: ignore[arg-type]
    return store, {"admin": admin, "annotator": annotator}, shapes


def truth_result(shapes: list[Shape], seed: int = 0) -> AggregationResult:
    """An ``AggregationResult`` whose clusters are the true semantic ids (see module doc)."""
    rng = np.random.default_rng(seed)
    cand_m, cand_p, labels, keep = [], [], [], []
    predictions, annotations = {}, []
    for i, shape in enumerate(shapes):
        pts, ids = shape.point_indices.astype(np.int64), shape.semantic_ids.astype(np.int64)
        order = np.argsort(ids, kind="stable")
        pts, ids = pts[order], ids[order]
        cand_m += [i] * len(pts)
        cand_p += pts.tolist()
        labels += ids.tolist()
        keep += [True] * len(pts)
        noise = int(rng.integers(0, len(shape.points)))
        if noise not in pts:
            cand_m.append(i), cand_p.append(noise), labels.append(-1), keep.append(False)
        predictions[shape.model_id] = Prediction(pts, ids, Symmetries())
        kps = [
            Keypoint(xyz=tuple(float(v) for v in shape.points[p]), semantic_id=int(s), point_index=int(p))  # type: ignore[arg-type]
            for p, s in zip(pts, ids)
        ]
        annotations.append(ModelAnnotation(shape.category.synset, shape.model_id, kps, Symmetries()))
    lab = np.array(labels, np.int64)
    angle = lab * 2.4
    centres = np.stack([np.cos(angle), np.sin(angle)], 1) * (3 + lab[:, None] * 0.4)
    xy = np.where(lab[:, None] >= 0, centres, 0.0) + rng.normal(0, 0.25, (len(lab), 2))
    clustering = Clustering(xy, lab, np.array(keep), eps=1.0, min_samples=2)
    n = len(lab)
    report = {
        "clusters": {str(c): {"candidates": int((lab == c).sum())} for c in sorted(set(lab.tolist()) - {-1})},
        "noise_candidates": int((lab < 0).sum()),
        "candidates": n,
        "problems": [],
    }
    return AggregationResult(
        [s.model_id for s in shapes],
        predictions,
        annotations,
        {},
        np.array(cand_m, np.int64),
        np.array(cand_p, np.int64),
        rng.uniform(0, 1, n),
        clustering,
        [],
        report,
    )
