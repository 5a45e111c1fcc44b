"""object mask of a whole image (small encoder-decoder, BCE + Dice, IoU); trained on rendered sets

``--data``: a render set (``kpengine render-views``; the views of ``--category``) or the older
``kpengine render-benchmark`` layout (images and masks).
Settings without a flag go in ``--config``: ``size`` (network input, px), ``widths``,
``val_data`` (a rendered set to measure IoU on), ``zoom_jitter``, ``shift_jitter``, ``swap``, ``grey``
(probabilities of a colour-channel permutation / a grey image per training image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kpengine.image.crops import normalise, resample
from kpengine.image.datasets import Indices, MaskSet, silhouette_batch
from kpengine.image.renders import mask_sets
from kpengine.image.silhouette import SilhouetteNet, mask_iou, silhouette_loss
from kpengine.image.tasks._common import ImageConfig, ImageTask
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, module_device


@dataclass(kw_only=True)
class SilhouetteConfig(ImageConfig):
    zoom_jitter: float = 0.15
    shift_jitter: float = 0.08
    batch_size: int = 32
    epochs: int = 30
    #: probabilities of a colour-channel permutation and of a grey image per training image (0 = off):
    #: liveries and lighting that the renders' colours do not cover
    swap: float = 0.0
    grey: float = 0.0


@TASKS.register("silhouette")
class SilhouetteTask(ImageTask):
    config_class = SilhouetteConfig

    def load_sets(self) -> tuple[MaskSet, MaskSet | None]:
        return mask_sets(self.config.data, self.config.val_data or None, category=self.config.category)

    def data(self) -> Data:
        train, _ = self.sets()
        c = self.config
        return Data(
            Indices(len(train)),
            None,
            lambda idx: silhouette_batch(train, idx, c.size, c.zoom_jitter, c.shift_jitter, c.swap, c.grey),
        )

    def model(self) -> nn.Module:
        return SilhouetteNet(tuple(self.config.widths))

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, target = batch
        return silhouette_loss(net(x), target)

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        size, total, ious, dev = self.config.size, 0.0, [], module_device(model)
        for i in range(0, len(val), 128):
            x = normalise(resample(val.images[i : i + 128], size, 1.0))
            target = resample(val.masks[i : i + 128][:, None], size, 1.0)[:, 0]
            logits = model(x.to(dev)).cpu()
            total += float(silhouette_loss(logits, target)) * x.shape[0]
            ious.append(mask_iou((logits > 0).numpy(), (target > 0.5).numpy()))
        iou = np.concatenate(ious)
        return {"val_loss": total / max(len(val), 1), "mean_iou": float(iou.mean())}
