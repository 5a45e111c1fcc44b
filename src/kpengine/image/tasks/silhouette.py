"""object mask of a whole image (small encoder-decoder, BCE + Dice, IoU); trained on rendered sets

``--data``: a rendered image set (``kpengine render-benchmark`` layout, images and masks).
Settings without a flag go in ``--config``: ``size`` (network input, px), ``widths``,
``val_data`` (a rendered set to measure IoU on), ``zoom_jitter``, ``shift_jitter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from kpengine.image.crops import normalise, resample
from kpengine.image.datasets import Indices, MaskSet, mask_sets, silhouette_batch
from kpengine.image.silhouette import SilhouetteNet, mask_iou, silhouette_loss
from kpengine.learn.config import RunConfig
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, Task


@dataclass(kw_only=True)
class SilhouetteConfig(RunConfig):
    data: str
    category: str
    val_data: str = ""
    size: int = 64
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    zoom_jitter: float = 0.15
    shift_jitter: float = 0.08
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    weight_decay: float = 1e-4

    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device", "data", "val_data")
    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "category", "size", "widths")


@TASKS.register("silhouette")
class SilhouetteTask(Task):
    config_class = SilhouetteConfig

    def __init__(self, config: SilhouetteConfig):
        super().__init__(config)
        self._sets: tuple[MaskSet, MaskSet | None] | None = None

    def sets(self) -> tuple[MaskSet, MaskSet | None]:
        if self._sets is None:
            self._sets = mask_sets(self.config.data, self.config.val_data or None)
        return self._sets

    def data(self) -> Data:
        train, _ = self.sets()
        c = self.config
        return Data(
            Indices(len(train)), None, lambda idx: silhouette_batch(train, idx, c.size, c.zoom_jitter, c.shift_jitter)
        )

    def model(self) -> nn.Module:
        return SilhouetteNet(tuple(self.config.widths))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, target = batch
        return silhouette_loss(net(x), target)

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        size, total, ious = self.config.size, 0.0, []
        for i in range(0, len(val), 128):
            x = normalise(resample(val.images[i : i + 128], size, 1.0))
            target = resample(val.masks[i : i + 128][:, None], size, 1.0)[:, 0]
            logits = model(x)
            total += float(silhouette_loss(logits, target)) * x.shape[0]
            ious.append(mask_iou((logits > 0).numpy(), (target > 0.5).numpy()))
        iou = np.concatenate(ious)
        return {"val_loss": total / max(len(val), 1), "mean_iou": float(iou.mean())}

    def describe(self) -> dict[str, Any]:
        train, val = self.sets()
        return {"category": self.config.category, "train_images": len(train), "val_images": len(val) if val else 0}

    def title(self) -> str:
        return f"silhouette ({self.config.category})"
