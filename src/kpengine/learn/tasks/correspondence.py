"""per semantic id a softmax over points; absent ids ignored; minimum over symmetric relabellings
(``relabel_margin`` in the config: the identity preferred by that many nats, 0 = official)

Head (B, N, C) logits, C the category's semantic ids; the loss is
:func:`kpengine.learn.losses.correspondence_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kpengine.data.shape import Shape
from kpengine.learn.heads import KeypointModel
from kpengine.learn.inference import infer
from kpengine.learn.losses import correspondence_loss
from kpengine.learn.pointtask import PointTask
from kpengine.learn.predictor import Predictor
from kpengine.learn.registry import TASKS


class CorrespondencePredictor(Predictor):
    """Each semantic id at the point where its logit is largest (argmax over the points)."""

    evaluates_as = "correspondence"

    def __init__(self, model: KeypointModel):
        self.model = model

    def predict(self, shapes: Sequence[Shape]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for shape, logits in zip(shapes, infer(self.model, [s.points for s in shapes])):
            out[shape.model_id] = {str(c): int(i) for c, i in enumerate(logits.argmax(axis=0).tolist())}
        return out


@TASKS.register("correspondence")
class CorrespondenceTask(PointTask):
    evaluates_as = "correspondence"

    @staticmethod
    def head_channels(n_classes: int, embedding_dim: int) -> int:
        return n_classes

    def loss(self, net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return correspondence_loss(net(batch["points"]), batch["labellings"], self.config.relabel_margin)

    @classmethod
    def predictor(
        cls, run: str | Path, model: KeypointModel, state: dict[str, Any], data: str | Path, **options: Any
    ) -> CorrespondencePredictor:
        return CorrespondencePredictor(model)
