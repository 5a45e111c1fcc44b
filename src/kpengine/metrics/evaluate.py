"""Score a predictions file against a dataset split: the library behind ``kpengine evaluate``.

The predictions formats are read by :mod:`kpengine.io.predictions`. A model of the split
that is missing from the file counts as predicting nothing, and so does an annotated model
whose geometry cannot be used (a truncated mesh, say): it has ground truth, no method could
predict on it, and leaving it out would flatter every method alike; the result names it
(``skipped``). Models or semantic ids the split
does not know are reported as warnings and ignored; a malformed entry is an error naming
the file and the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kpengine.data.dataset import KeypointNetDataset
from kpengine.errors import DataError
from kpengine.geometry.geodesic import GeodesicGraph, Protocol
from kpengine.io import predictions as io_predictions
from kpengine.io.annotations import ModelAnnotation
from kpengine.io.predictions import CorrespondencePredictions, SaliencyPredictions
from kpengine.metrics import THRESHOLDS
from kpengine.metrics.correspondence import pck
from kpengine.metrics.relabel import rotational_relabellings
from kpengine.metrics.saliency import mean_average_precision, mean_iou

Task = Literal["saliency", "correspondence"]


@dataclass
class EvaluationResult:
    task: str
    category: str
    split: str
    protocol: str
    thresholds: list[float]
    metrics: dict[str, list[float]]
    n_shapes: int
    symmetry: str = "plain"
    warnings: list[str] = field(default_factory=list)
    #: models of the split that were not scored on geometry: ``model_id``, ``reason``, ``path``
    #: and ``counted_as_nothing`` (true when the model has ground truth, so it counts as a miss)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("metrics"))
        return out

    def table(self) -> str:
        names = list(self.metrics)
        head = f"{self.task} on {self.category}/{self.split}: {self.n_shapes} shapes, geodesic protocol {self.protocol}"
        counted = sum(s["counted_as_nothing"] for s in self.skipped)
        if counted:
            head = head.replace(" shapes,", f" shapes + {counted} unusable (counted as predicting nothing),", 1)
        if self.task == "correspondence":
            head += f", symmetry {self.symmetry}"
        lines = [head, "threshold  " + "  ".join(f"{n:>6}" for n in names)]
        for i, t in enumerate(self.thresholds):
            lines.append(f"{t:9.2f}  " + "  ".join(f"{self.metrics[n][i]:6.3f}" for n in names))
        return "\n".join(lines)


# --------------------------------------------------------------------------- predictions files


def load_saliency_predictions(path: str | Path, dataset: KeypointNetDataset) -> tuple[SaliencyPredictions, list[str]]:
    """:func:`kpengine.io.predictions.load_saliency_predictions` checked against ``dataset``'s models."""
    return io_predictions.load_saliency_predictions(path, {s.model_id: s.n_points for s in dataset})


def load_correspondence_predictions(
    path: str | Path, dataset: KeypointNetDataset
) -> tuple[CorrespondencePredictions, list[str]]:
    """:func:`kpengine.io.predictions.load_correspondence_predictions` checked against ``dataset``."""
    return io_predictions.load_correspondence_predictions(
        path, {s.model_id: s.n_points for s in dataset}, dataset.n_classes
    )


# --------------------------------------------------------------------------- scoring


def saliency_ground_truth_distances(
    dataset: KeypointNetDataset, protocol: Protocol = "official", thresholds: tuple[float, ...] = THRESHOLDS
) -> list[np.ndarray]:
    """Per shape, geodesic distances (K, N) from its keypoints to every point, up to the largest threshold."""
    return [
        # a point is a keypoint once, however many ids it carries
        GeodesicGraph(shape.points, protocol=protocol).from_sources(
            np.unique(shape.point_indices), limit=max(thresholds)
        )
        for shape in dataset
    ]


def evaluate_saliency(
    dataset: KeypointNetDataset,
    predictions: SaliencyPredictions,
    *,
    protocol: Protocol = "official",
    thresholds: tuple[float, ...] = THRESHOLDS,
    gt_distances: list[np.ndarray] | None = None,
    unusable: Sequence[ModelAnnotation] = (),
) -> EvaluationResult:
    """mIoU (all listed points) and mAP (ranked by score) at each threshold, pooled over the split.

    ``gt_distances`` (from :func:`saliency_ground_truth_distances` with the same protocol and
    thresholds) saves recomputing them when one split is scored many times. ``unusable``:
    annotated models without usable geometry; each adds its keypoints as misses."""
    dists = gt_distances if gt_distances is not None else saliency_ground_truth_distances(dataset, protocol, thresholds)
    dists = list(dists)
    preds, scores = [], []
    for shape in dataset:
        idx, score = predictions.get(shape.model_id, (np.zeros(0, np.int64), np.zeros(0)))
        preds.append(idx)
        scores.append(score)
    for ann in unusable:  # (K, 0): K ground-truth keypoints, no points, nothing predicted
        keypoints = {kp.point_index if kp.point_index is not None else tuple(kp.xyz or ()) for kp in ann.keypoints}
        dists.append(np.zeros((len(keypoints), 0)))
        preds.append(np.zeros(0, np.int64))
        scores.append(np.zeros(0))
    metrics = {
        "miou": [mean_iou(dists, preds, t) for t in thresholds],
        "map": [mean_average_precision(dists, preds, scores, t) for t in thresholds],
    }
    return EvaluationResult(
        "saliency", dataset.category.name, dataset.split, protocol, list(thresholds), metrics, len(dataset)
    )


def evaluate_correspondence(
    dataset: KeypointNetDataset,
    predictions: CorrespondencePredictions,
    *,
    protocol: Protocol = "official",
    symmetry: Literal["plain", "best"] = "plain",
    thresholds: tuple[float, ...] = THRESHOLDS,
    unusable: Sequence[ModelAnnotation] = (),
) -> EvaluationResult:
    """PCK per shape, averaged. ``symmetry="best"`` scores each shape against the rotational
    relabelling of its ground truth that lies closest to the prediction: the smallest mean
    geodesic distance over its ids, each distance clipped at twice the largest threshold
    (a missing prediction counts as clipped). ``unusable``: annotated models without usable
    geometry; each counts as a shape whose ids were all missed."""
    n_classes = dataset.n_classes
    clip = 2 * max(thresholds)
    per_shape = []
    for shape in dataset:
        pred = predictions.get(shape.model_id, {})
        labellings = (
            rotational_relabellings(shape, n_classes) if symmetry == "best" else [shape.index_by_semantic_id(n_classes)]
        )
        graph = GeodesicGraph(shape.points, protocol=protocol)
        candidates = []
        for label in labellings:
            ids = np.where(label >= 0)[0]
            rows = graph.from_sources(label[ids], limit=clip)
            d = np.array([rows[k, pred[s]] if s in pred else np.inf for k, s in enumerate(ids.tolist())])
            candidates.append(d)
        if len(candidates) > 1:
            best = int(np.argmin([np.mean(np.minimum(d, clip)) if len(d) else 0.0 for d in candidates]))
            candidates = [candidates[best]]
        per_shape.append(candidates[0])
    for ann in unusable:
        ids = {kp.semantic_id for kp in ann.keypoints if 0 <= kp.semantic_id < n_classes}
        per_shape.append(np.full(len(ids), np.inf))
    metrics = {"pck": pck(per_shape, thresholds).tolist()}
    return EvaluationResult(
        "correspondence",
        dataset.category.name,
        dataset.split,
        protocol,
        list(thresholds),
        metrics,
        len(dataset),
        symmetry,
    )


def evaluate_file(
    root: str | Path,
    category: str,
    split: str,
    task: Task,
    predictions_path: str | Path,
    *,
    protocol: Protocol = "official",
    symmetry: Literal["plain", "best"] = "plain",
) -> EvaluationResult:
    """Load the split and the predictions file, then score; warnings travel in the result."""
    dataset = KeypointNetDataset(root, category, split)
    if len(dataset) == 0:
        raise DataError(f"{category}/{split} has no usable shapes under {root}: {dataset.problem_summary()}")
    unusable = list(dataset.unloaded.values())
    if task == "saliency":
        preds, warnings = load_saliency_predictions(predictions_path, dataset)
        result = evaluate_saliency(dataset, preds, protocol=protocol, unusable=unusable)
    elif task == "correspondence":
        preds_c, warnings = load_correspondence_predictions(predictions_path, dataset)
        result = evaluate_correspondence(dataset, preds_c, protocol=protocol, symmetry=symmetry, unusable=unusable)
    else:
        raise DataError(f"unknown task {task!r}; choose saliency or correspondence")
    missing = [m for m in dataset.model_ids if m not in (preds if task == "saliency" else preds_c)]
    if missing:
        warnings.append(f"{len(missing)} models of the split have no predictions and count as predicting nothing")
    if unusable:
        warnings.append(
            f"{len(unusable)} annotated models have unusable geometry and count as predicting nothing: "
            + ", ".join(sorted(a.model_id for a in unusable)[:5])
            + (" ..." if len(unusable) > 5 else "")
            + " (reasons in the output's 'skipped')"
        )
    result.warnings = warnings
    result.skipped = [{**row, "counted_as_nothing": row["model_id"] in dataset.unloaded} for row in dataset.skipped()]
    return result
