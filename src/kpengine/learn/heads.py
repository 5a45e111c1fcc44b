"""Task heads on a backbone: one :class:`KeypointModel` per task, same call shape.

``forward(points (B, N, 3))`` returns per-point outputs:
saliency (B, N, 2) logits; correspondence (B, N, C) logits (softmax over N per id);
embedding (B, N, D) unit-normalised embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kpengine.learn.backbones import build_backbone


class KeypointModel(nn.Module):
    def __init__(self, task: str, backbone: str, n_classes: int, embedding_dim: int = 32, **backbone_kwargs):
        super().__init__()
        self.task = task
        self.backbone = build_backbone(backbone, **backbone_kwargs)
        out = {"saliency": 2, "correspondence": n_classes, "embedding": embedding_dim}[task]
        self.head = nn.Conv1d(self.backbone.out_channels, out, 1)

    @property
    def min_points(self) -> int:
        return self.backbone.min_points

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(points)  # (B, N, F)
        out = self.head(feats.transpose(1, 2)).transpose(1, 2)
        if self.task == "embedding":
            out = F.normalize(out, dim=-1)
        return out

    def regularizer(self) -> torch.Tensor:
        return self.backbone.regularizer()
