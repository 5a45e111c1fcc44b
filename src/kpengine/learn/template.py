"""The mean-position template: a baseline that learns nothing but where ids usually are.

Each semantic id is predicted at its mean position over the training shapes that have
it, snapped to the nearest point of the test cloud. It is the floor every learned method
must clear (the issue's anchor: PCK 0.074 / 0.411 / 0.742 at 0.01 / 0.05 / 0.10 on
bathtub). For saliency every template position is a detection, scored by the fraction of
training shapes that carry the id. :class:`TemplatePredictor` is the template behind the
predictor interface (``fit`` on training shapes, ``predict`` in evaluate's format).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from kpengine.data.shape import Shape
from kpengine.geometry.sampling import snap_to_points
from kpengine.learn.predictor import Predictor


@dataclass
class MeanPositionTemplate:
    """Per semantic id: mean position (C, 3) and frequency (C,) over the training shapes."""

    positions: np.ndarray
    frequency: np.ndarray

    @classmethod
    def fit(cls, shapes: Iterable[Shape]) -> MeanPositionTemplate:
        sums: dict[int, np.ndarray] = {}
        counts: dict[int, int] = {}
        n_shapes = 0
        for shape in shapes:
            n_shapes += 1
            for sid in np.unique(shape.semantic_ids).tolist():
                xyz = shape.keypoints[shape.semantic_ids == sid].mean(axis=0)
                sums[sid] = sums.get(sid, 0.0) + xyz
                counts[sid] = counts.get(sid, 0) + 1
        if not counts:
            raise ValueError("cannot fit a template: the training shapes have no keypoints")
        n_classes = max(counts) + 1
        positions = np.full((n_classes, 3), np.nan)
        frequency = np.zeros(n_classes)
        for sid, c in counts.items():
            positions[sid] = sums[sid] / c
            frequency[sid] = c / n_shapes
        return cls(positions, frequency)

    @property
    def semantic_ids(self) -> np.ndarray:
        return np.where(self.frequency > 0)[0]

    def predict_correspondence(self, shape: Shape) -> dict[int, int]:
        ids = self.semantic_ids
        idx, _ = snap_to_points(shape.points, self.positions[ids])
        return {int(s): int(i) for s, i in zip(ids, idx)}

    def predict_saliency(self, shape: Shape) -> list[tuple[int, float]]:
        ids = self.semantic_ids
        idx, _ = snap_to_points(shape.points, self.positions[ids])
        best: dict[int, float] = {}
        for i, f in zip(idx.tolist(), self.frequency[ids].tolist()):
            best[i] = max(best.get(i, 0.0), f)
        return sorted(best.items(), key=lambda kv: -kv[1])


class TemplatePredictor(Predictor):
    """The mean-position template for ``task`` "correspondence" or "saliency"."""

    def __init__(self, task: str = "correspondence"):
        if task not in ("correspondence", "saliency"):
            raise ValueError(f"the template predicts correspondence or saliency, not {task!r}")
        self.evaluates_as = task
        self.template: MeanPositionTemplate | None = None

    def fit(self, shapes: Sequence[Shape]) -> Self:
        self.template = MeanPositionTemplate.fit(shapes)
        return self

    def predict(self, shapes: Sequence[Shape]) -> dict[str, Any]:
        if self.template is None:
            raise ValueError("fit the template on annotated shapes first")
        if self.evaluates_as == "correspondence":
            return {s.model_id: {str(k): v for k, v in self.template.predict_correspondence(s).items()} for s in shapes}
        return {s.model_id: [[i, f] for i, f in self.template.predict_saliency(s)] for s in shapes}
