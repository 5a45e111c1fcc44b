"""Aggregated keypoints against ground truth: positions, ids, classes, symmetries.

All distances are geodesic on the model's cloud with the *strict* protocol (a pair in
different components of the 20-NN graph is infinitely far: no free hits).

- ``recall@t``: fraction of ground-truth keypoints with a predicted keypoint at distance
  < t; ``precision@t``: fraction of predicted keypoints with a ground-truth keypoint at
  distance < t (pooled over models; t = 0.01, 0.05).
- ids: every predicted keypoint within ``match`` (0.05) of a ground-truth keypoint is paired
  with the nearest one; over all such pairs, the adjusted Rand index between predicted
  and true ids, and purity (each predicted id counts its most common true id).
- classes: predicted ids used vs true ids present on the evaluated models.
- symmetries: each group (reflection pair or rotation group) as a set of ids; predicted
  groups translated to true ids through the pairing; per model, groups found vs true
  (precision, recall), and distinct category-level groups found vs true.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import adjusted_rand_score

from kpengine.data.shape import Shape
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.io.annotations import Symmetries

THRESHOLDS = (0.01, 0.05)


@dataclass
class Prediction:
    """One model's aggregated keypoints: cloud indices (K,), ids (K,) (-1: no id), symmetries."""

    point_index: np.ndarray
    ids: np.ndarray
    symmetries: Symmetries | None = None


def _groups(sym: Symmetries, ids: np.ndarray) -> set[frozenset[int]]:
    out = set()
    for g in [*sym.reflection, *sym.rotation]:
        sem = frozenset(int(ids[k]) for k in g.kp_indexes if ids[k] >= 0)
        if len(sem) >= 2:
            out.add(sem)
    return out


def evaluate_aggregation(
    shapes: Sequence[Shape],
    predictions: Mapping[str, Prediction],
    graphs: Mapping[str, GeodesicGraph] | None = None,
    match: float = 0.05,
) -> dict:
    """Scores (a JSON-ready dict) of ``predictions`` on ``shapes``; a missing model predicts nothing."""
    hits_gt = {t: 0 for t in THRESHOLDS}
    hits_pred = {t: 0 for t in THRESHOLDS}
    n_gt = n_pred = 0
    pred_ids, true_ids = [], []
    true_classes, pred_classes = set(), set()
    sym_tp = sym_pred = sym_true = 0
    cat_pred: Counter[frozenset[int]] = Counter()
    cat_true: Counter[frozenset[int]] = Counter()
    for shape in shapes:
        pred = predictions.get(shape.model_id, Prediction(np.zeros(0, np.int64), np.zeros(0, np.int64)))
        gt = shape.point_indices
        true_classes |= set(shape.semantic_ids.tolist())
        n_gt += len(gt)
        n_pred += len(pred.point_index)
        graph = graphs[shape.model_id] if graphs else GeodesicGraph(shape.points, protocol="strict")
        d = graph.from_sources(gt, limit=max(*THRESHOLDS, match))[:, pred.point_index]  # (G, P)
        for t in THRESHOLDS:
            if d.size:
                hits_gt[t] += int((d.min(axis=1) < t).sum())
                hits_pred[t] += int((d.min(axis=0) < t).sum())
        matched = np.full(len(pred.point_index), -1)
        if d.size:
            near = d.argmin(axis=0)
            ok = d[near, np.arange(d.shape[1])] < match
            matched[ok] = shape.semantic_ids[near[ok]]
        has_id = (matched >= 0) & (pred.ids >= 0)
        pred_ids += pred.ids[has_id].tolist()
        true_ids += matched[has_id].tolist()
        pred_classes |= set(pred.ids[pred.ids >= 0].tolist())
        t_groups = _groups(shape.symmetries, shape.semantic_ids)
        p_groups = _groups(pred.symmetries, matched) if pred.symmetries is not None else set()
        sym_tp += len(t_groups & p_groups)
        sym_pred += len(_groups(pred.symmetries, np.arange(len(pred.ids)))) if pred.symmetries else 0
        sym_true += len(t_groups)
        cat_true.update(t_groups)
        cat_pred.update(p_groups)
    pids, tids = np.array(pred_ids), np.array(true_ids)
    purity = float("nan")
    if len(pids):
        purity = sum(Counter(tids[pids == c].tolist()).most_common(1)[0][1] for c in np.unique(pids)) / len(pids)
    common = {g for g, n in cat_true.items() if n >= 0.1 * len(shapes)}
    return {
        "models": len(shapes),
        "gt_keypoints": n_gt,
        "pred_keypoints": n_pred,
        **{f"recall@{t}": hits_gt[t] / max(n_gt, 1) for t in THRESHOLDS},
        **{f"precision@{t}": hits_pred[t] / max(n_pred, 1) for t in THRESHOLDS},
        "ari": float(adjusted_rand_score(tids, pids)) if len(pids) else float("nan"),
        "purity": purity,
        "matched_keypoints": int(len(pids)),
        "classes_found": len(pred_classes),
        "classes_true": len(true_classes),
        "symmetry_precision": sym_tp / sym_pred if sym_pred else float("nan"),
        "symmetry_recall": sym_tp / sym_true if sym_true else float("nan"),
        "symmetry_groups_true": len(common),
        "symmetry_groups_found": len(common & {g for g, n in cat_pred.items() if n >= 0.1 * len(shapes)}),
    }
