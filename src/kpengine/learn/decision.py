"""The saliency decision of a run, chosen on its validation split.

A saliency network outputs a probability per point; keypoints are the points above a threshold
after geodesic non-maximum suppression. Which threshold and radius work best depends on the
training (soft targets spread probability over a keypoint's neighbours, hard ones do not), so
kpengine picks them on the validation split, never the test split, and stores the choice as
``RUN_DIR/decision.json``; ``kpengine predict`` uses it unless told otherwise.
:class:`SaliencyPredictor` is a saliency network behind the predictor interface: ``fit`` on
validation shapes makes this choice, ``predict`` applies it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.io.atomic import read_json, write_json
from kpengine.learn.config import TrainConfig
from kpengine.learn.heads import KeypointModel
from kpengine.learn.inference import infer, load_run, saliency_keypoints, saliency_probabilities
from kpengine.learn.predictor import Predictor
from kpengine.metrics.evaluate import evaluate_saliency, saliency_ground_truth_distances

SaliencyMode = Literal["nms", "official"]
THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)
RADII: tuple[float, ...] = (0.0, 0.02, 0.03, 0.05)  # 0: no suppression
#: the choice maximises the mean validation mIoU at these geodesic thresholds (issue 6's goal)
OBJECTIVE_AT: tuple[float, ...] = (0.01, 0.05)
DECISION_FILE = "decision.json"
#: without a stored or given decision: threshold and NMS radius; "official" mode: > 0.1, no NMS
DEFAULT_THRESHOLD, DEFAULT_RADIUS = 0.1, 0.05


def decide(
    shapes: Sequence[Shape],
    probs: Sequence[np.ndarray],
    threshold: float,
    radius: float,
    graphs: Sequence[GeodesicGraph | None] | None = None,
) -> dict:
    """Saliency predictions {model_id: (indices, scores)} for one decision (radius 0: no suppression).
    ``graphs``: each shape's strict-protocol geodesic graph, built once for a whole grid."""
    out = {}
    for shape, prob, graph in zip(shapes, probs, graphs or [None] * len(shapes)):
        kept = saliency_keypoints(shape.points, prob, threshold, radius, graph)
        out[shape.model_id] = (np.array([k for k, _ in kept], np.int64), np.array([p for _, p in kept]))
    return out


def scores_at(
    dataset, preds: dict, at: Sequence[float] = (0.01, 0.02, 0.05, 0.1), gt_distances: list | None = None
) -> dict[str, Any]:
    """mIoU and mAP at the thresholds ``at``, and the mean number of points kept per shape."""
    res = evaluate_saliency(dataset, preds, gt_distances=gt_distances)
    th = [round(t, 2) for t in res.thresholds]
    pick = [th.index(t) for t in at]
    out: dict[str, Any] = {k: [round(float(res.metrics[k][i]), 4) for i in pick] for k in ("miou", "map")}
    out["points_per_shape"] = round(float(np.mean([len(p[0]) for p in preds.values()])), 2) if preds else 0.0
    return out


def choose_decision(shapes: Sequence[Shape], probs: Sequence[np.ndarray]) -> dict[str, Any]:
    """Grid-search (threshold, radius) on annotated ``shapes`` with the network's keypoint
    probabilities ``probs`` (N,) per shape; returns the choice and the whole grid."""
    graphs = [GeodesicGraph(s.points, protocol="strict") for s in shapes]  # one per shape for the whole grid
    truth = saliency_ground_truth_distances(shapes)
    grid = []
    for threshold, radius in itertools.product(THRESHOLDS, RADII):
        s = scores_at(shapes, decide(shapes, probs, threshold, radius, graphs), OBJECTIVE_AT, truth)
        grid.append({"threshold": threshold, "radius": radius, "objective": float(np.mean(s["miou"])), **s})
    best = max(grid, key=lambda g: g["objective"])
    return {
        "threshold": best["threshold"],
        "nms_radius": best["radius"],
        "objective": f"mean mIoU at {', '.join(map(str, OBJECTIVE_AT))}",
        "grid": grid,
    }


class SaliencyPredictor(Predictor):
    """A saliency network's keypoints: points above ``threshold``, each suppressing its geodesic
    neighbours within ``nms_radius`` (mode "nms"), or every point above 0.1 (mode "official")."""

    evaluates_as = "saliency"

    def __init__(
        self,
        model: KeypointModel,
        mode: SaliencyMode = "nms",
        threshold: float | None = None,
        nms_radius: float | None = None,
    ):
        self.model = model
        self.mode = mode
        self.threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        self.nms_radius = 0.0 if mode == "official" else (DEFAULT_RADIUS if nms_radius is None else nms_radius)
        self.decision: dict[str, Any] | None = None

    def probabilities(self, shapes: Sequence[Shape]) -> list[np.ndarray]:
        return [saliency_probabilities(o) for o in infer(self.model, [s.points for s in shapes])]

    def fit(self, shapes: Sequence[Shape]) -> Self:
        """Choose the threshold and radius on annotated shapes (the validation split, never test)."""
        self.decision = choose_decision(shapes, self.probabilities(shapes))
        self.threshold, self.nms_radius = self.decision["threshold"], self.decision["nms_radius"]
        return self

    def predict(self, shapes: Sequence[Shape]) -> dict[str, list[list[float]]]:
        out: dict[str, list[list[float]]] = {}
        for shape, prob in zip(shapes, self.probabilities(shapes)):
            kept = saliency_keypoints(shape.points, prob, self.threshold, self.nms_radius)
            out[shape.model_id] = [[i, p] for i, p in kept]
        return out


def tune_saliency_decision(run: str | Path, data: str | Path, category: str, split: str = "val") -> dict[str, Any]:
    """Grid-search (threshold, radius) on ``split``; writes and returns ``decision.json``'s content."""
    model, state = load_run(run, task="saliency")
    shapes = KeypointNetDataset(data, category, split, n_points=TrainConfig.from_json(state["config"]).n_points)
    chosen = SaliencyPredictor(model).fit(shapes).decision
    result = {"threshold": chosen["threshold"], "nms_radius": chosen["nms_radius"], "chosen_on": split}
    result |= {"objective": chosen["objective"], "grid": chosen["grid"]}
    write_json(Path(run) / DECISION_FILE, result, indent=1)
    return result


def stored_decision(run: str | Path) -> dict[str, Any] | None:
    """The run's tuned decision, or None if it was never tuned."""
    path = Path(run) / DECISION_FILE
    return read_json(path) if path.is_file() else None
