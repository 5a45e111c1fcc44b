"""Predictions of a trained run for a split, in the formats ``kpengine evaluate`` reads.

* saliency: ``{model_id: [[point_index, probability], ...]}``. Default mode "nms": points above
  ``threshold`` (0.1) kept greedily by probability, each suppressing the points within ``nms_radius``
  geodesic distance; mode "official": every point above 0.1, no suppression (the original code).
  A run tuned by ``kpengine.learn.decision`` (``decision.json``) predicts with its
  validation-chosen threshold and radius unless they are given.
* correspondence: ``{model_id: {semantic_id: point_index}}``, the argmax over points per id.
* embedding runs predict correspondences by transfer (nearest point to each id's prototype).

Which predictor a run gets is its task's business (``PointTask.predictor`` in
``kpengine/learn/tasks/``, or a task's own ``predict_split`` classmethod); this module only loads the run and the split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from kpengine.categories import resolve_category
from kpengine.data.dataset import KeypointNetDataset
from kpengine.errors import DataError
from kpengine.learn.config import TrainConfig
from kpengine.learn.decision import SaliencyMode
from kpengine.learn.inference import load_run
from kpengine.learn.registry import TASKS


class SplitPredictions(NamedTuple):
    #: the ``kpengine evaluate`` task the predictions are scored as
    evaluates_as: str
    #: ``{model_id: ...}`` in that task's format
    predictions: dict[str, Any]
    #: the split's models left out, with the reason (:meth:`KeypointNetDataset.skipped`)
    skipped: list[dict[str, str | None]]


def predictions_for_split(
    run: str | Path,
    data: str | Path,
    category: str,
    split: str = "test",
    *,
    saliency_mode: SaliencyMode = "nms",
    threshold: float | None = None,
    nms_radius: float | None = None,
) -> SplitPredictions:
    """Predictions for a split by the run's own task, with the models that were left out.

    Saliency in "nms" mode with neither ``threshold`` nor ``nms_radius`` given uses the run's
    ``decision.json`` (chosen on the validation split) when there is one, else 0.1 and 0.05."""
    model, state = load_run(run, category=resolve_category(category).name)
    own = getattr(TASKS.get(state["config"]["task"]), "predict_split", None)
    if own is not None:  # a task that predicts from its own inputs (multiview_fewshot: rendered views)
        return own(run, model, state, data, category, split)
    cfg = TrainConfig.from_json(state["config"])
    shapes = KeypointNetDataset(data, category, split, n_points=cfg.n_points)
    if len(shapes) == 0:
        raise DataError(f"{category}/{split} has no usable shapes under {data}: {shapes.problem_summary()}")
    predictor = TASKS.get(cfg.task).predictor(
        run, model, state, data, saliency_mode=saliency_mode, threshold=threshold, nms_radius=nms_radius
    )
    return SplitPredictions(predictor.evaluates_as, predictor.predict(shapes), shapes.skipped())


def predict_split(
    run: str | Path, data: str | Path, category: str, split: str = "test", **options: Any
) -> tuple[str, dict[str, Any]]:
    """(evaluate task name, predictions): :func:`predictions_for_split` (same options) without
    the skipped models."""
    out = predictions_for_split(run, data, category, split, **options)
    return out.evaluates_as, out.predictions
