"""Task heads on a backbone: one :class:`KeypointModel` per point task, same call shape.

``forward(points (B, N, 3))`` returns per-point outputs:
saliency (B, N, 2) logits; correspondence (B, N, C) logits (softmax over N per id);
embedding (B, N, D) unit-normalised embeddings. The head's size and normalisation come from
the task's class in the task registry (``kpengine/learn/tasks/``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kpengine.learn.backbones import build_backbone
from kpengine.learn.registry import TASKS


class KeypointModel(nn.Module):
    def __init__(self, task: str, backbone: str, n_classes: int, embedding_dim: int = 32, **backbone_kwargs):
        super().__init__()
        self.task = task
        spec = TASKS.get(task)  # a PointTask subclass
        self.normalize = spec.unit_outputs
        self.backbone = build_backbone(backbone, **backbone_kwargs)
        out = spec.head_channels(n_classes, embedding_dim)
        self.head = nn.Conv1d(self.backbone.out_channels, out, 1)

    @property
    def min_points(self) -> int:
        return self.backbone.min_points

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(points)  # (B, N, F)
        out = self.head(feats.transpose(1, 2)).transpose(1, 2)
        if self.normalize:
            out = F.normalize(out, dim=-1)
        return out

    def regularizer(self) -> torch.Tensor:
        return self.backbone.regularizer()
