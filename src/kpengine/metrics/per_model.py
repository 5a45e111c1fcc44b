"""Per-model errors of a predictions file: where each prediction went and how far it was.

``kpengine evaluate`` pools a split into one curve; a researcher looking for failures needs
the opposite: one score per model (to sort models by it) and, per model, which prediction
belongs to which ground-truth keypoint and how far apart they are (to draw error lines).
The numbers use the benchmark's own pieces, so a model's score here is the score the pooled
metric would give a one-model split:

* saliency: IoU per threshold (:func:`kpengine.metrics.saliency.mean_iou` on this model
  alone); each prediction is paired with its geodesically nearest ground-truth keypoint,
  and each ground-truth keypoint records its distance to the nearest prediction (a keypoint
  farther than the threshold from every prediction is a miss).
* correspondence: PCK per threshold (:func:`kpengine.metrics.correspondence.pck_per_shape`);
  the prediction for semantic id ``s`` is paired with the ground-truth keypoint of id ``s``.
  Plain labelling only (no rotational relabelling: ``evaluate --symmetry best`` can differ
  on rotationally symmetric models).

``mean_error`` is the mean over pairs of the geodesic distance, each clipped at
``2 * max(thresholds)`` (a missing or unreachable prediction counts as clipped), the same
clipping ``evaluate --symmetry best`` uses to compare labellings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kpengine.geometry.geodesic import GeodesicGraph, Protocol
from kpengine.metrics import THRESHOLDS
from kpengine.metrics.correspondence import pck_per_shape
from kpengine.metrics.saliency import mean_iou

Task = Literal["saliency", "correspondence"]


@dataclass
class ErrorPair:
    """One error line: a prediction (point index) and the ground-truth point it is judged against.

    ``gt`` is None for a correspondence prediction of an id the model does not have;
    ``pred`` is None for a ground-truth keypoint nobody predicted (correspondence only).
    ``distance`` is geodesic (inf when beyond the search limit or unpredicted)."""

    pred: int | None
    gt: int | None
    semantic_id: int | None
    distance: float


@dataclass
class ModelErrors:
    """One model's score per threshold, its mean clipped error and its error lines.

    ``gt_distance`` (G,) is, per ground-truth keypoint (in the order given), the geodesic
    distance to its nearest prediction (saliency) or to the prediction of its id (correspondence)."""

    model_id: str
    task: str
    thresholds: list[float]
    score: list[float]
    mean_error: float
    pairs: list[ErrorPair] = field(default_factory=list)
    gt_distance: list[float] = field(default_factory=list)


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def model_errors(
    model_id: str,
    points: np.ndarray,
    gt_points: np.ndarray,
    gt_ids: np.ndarray,
    task: Task,
    prediction: np.ndarray | dict[int, int],
    *,
    protocol: Protocol = "official",
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> ModelErrors:
    """Score one model's prediction.

    ``points`` (N, 3) the cloud the indices refer to; ``gt_points`` (G,) point indices of the
    ground-truth keypoints and ``gt_ids`` (G,) their semantic ids; ``prediction`` is (P,) point
    indices for saliency or ``{semantic_id: point_index}`` for correspondence.
    """
    clip = 2 * max(thresholds)
    gt_points = np.asarray(gt_points, np.int64)
    gt_ids = np.asarray(gt_ids, np.int64)
    graph = GeodesicGraph(points, protocol=protocol)
    rows = graph.from_sources(gt_points, limit=clip)  # (G, N)
    if task == "saliency":
        pred = np.unique(np.asarray(prediction, np.int64))
        score = [mean_iou([rows], [pred], t) for t in thresholds]
        pairs = []
        if len(gt_points) and len(pred):
            nearest = rows[:, pred].argmin(axis=0)
            d = rows[nearest, pred]
            pairs = [
                ErrorPair(int(p), int(gt_points[g]), int(gt_ids[g]), float(x)) for p, g, x in zip(pred, nearest, d)
            ]
            gt_distance = rows[:, pred].min(axis=1)
        else:
            d = np.full(len(pred), np.inf)
            pairs = [ErrorPair(int(p), None, None, float("inf")) for p in pred]
            gt_distance = np.full(len(gt_points), np.inf)
        judged = np.concatenate([d, gt_distance])  # false positives and misses both count
    elif task == "correspondence":
        assert isinstance(prediction, dict)
        gt_distance = np.array(
            [rows[k, prediction[int(s)]] if int(s) in prediction else np.inf for k, s in enumerate(gt_ids)]
        )
        score = pck_per_shape(gt_distance, thresholds).tolist() if len(gt_ids) else [float("nan")] * len(thresholds)
        pairs = [
            ErrorPair(prediction.get(int(s)), int(g), int(s), float(x))
            for g, s, x in zip(gt_points, gt_ids, gt_distance)
        ]
        known = {int(s) for s in gt_ids}
        pairs += [
            ErrorPair(int(p), None, int(s), float("inf")) for s, p in sorted(prediction.items()) if s not in known
        ]
        judged = gt_distance
    else:
        raise ValueError(f"unknown task {task!r}; choose saliency or correspondence")
    mean_error = float(np.mean(np.minimum(judged, clip))) if len(judged) else 0.0
    return ModelErrors(
        model_id,
        task,
        list(thresholds),
        [float(s) for s in score],
        mean_error,
        pairs,
        [float(x) for x in gt_distance],
    )
