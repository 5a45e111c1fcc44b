"""dense per-point embeddings, contrastive loss on keypoints; used by `kpengine transfer`

Head (B, N, D) unit vectors; the paper's contrastive loss
(:func:`kpengine.learn.losses.contrastive_loss`): the same id on different shapes together,
other ids beyond ``margin``, online hardest negatives. Predictions are correspondences by
transfer from the training split's prototypes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kpengine.learn.heads import KeypointModel
from kpengine.learn.losses import contrastive_loss
from kpengine.learn.pointtask import PointTask
from kpengine.learn.registry import TASKS
from kpengine.learn.transfer import Prototypes, TransferPredictor


@TASKS.register("embedding")
class EmbeddingTask(PointTask):
    evaluates_as = "correspondence"
    unit_outputs = True

    @staticmethod
    def head_channels(n_classes: int, embedding_dim: int) -> int:
        return embedding_dim

    def loss(self, net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return contrastive_loss(net(batch["points"]), batch["keypoint_index"], self.config.margin)

    @classmethod
    def predictor(
        cls, run: str | Path, model: KeypointModel, state: dict[str, Any], data: str | Path, **options: Any
    ) -> TransferPredictor:
        """Prototypes from the training split of the run's category under ``data`` (cached in the run)."""
        return TransferPredictor(model, state["n_classes"], Prototypes.for_run(run, model, state, data))
