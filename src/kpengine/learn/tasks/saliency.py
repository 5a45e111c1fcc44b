"""per-point keypoint probability (two-class cross-entropy; soft targets with --saliency-sigma)

Head (B, N, 2) logits; hard 0/1 targets as the official benchmark, or with ``saliency_sigma``
> 0 the soft geodesic targets of :func:`kpengine.learn.batches.soft_saliency`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kpengine.learn.decision import SaliencyPredictor, stored_decision
from kpengine.learn.heads import KeypointModel
from kpengine.learn.losses import saliency_loss
from kpengine.learn.pointtask import PointTask
from kpengine.learn.registry import TASKS


@TASKS.register("saliency")
class SaliencyTask(PointTask):
    evaluates_as = "saliency"
    soft_saliency = True

    @staticmethod
    def head_channels(n_classes: int, embedding_dim: int) -> int:
        return 2

    def loss(self, net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return saliency_loss(net(batch["points"]), batch.get("saliency_soft", batch["saliency"]))

    @classmethod
    def predictor(
        cls, run: str | Path, model: KeypointModel, state: dict[str, Any], data: str | Path, **options: Any
    ) -> SaliencyPredictor:
        """Mode "nms" without a threshold or radius given: the run's stored decision, if any."""
        mode = options.get("saliency_mode", "nms")
        threshold, radius = options.get("threshold"), options.get("nms_radius")
        if mode == "nms" and threshold is None and radius is None:
            tuned = stored_decision(run)
            if tuned is not None:
                threshold, radius = tuned["threshold"], tuned["nms_radius"]
        return SaliencyPredictor(model, mode, threshold, radius)
