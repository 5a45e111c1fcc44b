"""azimuth (24 bins) and elevation (12 bins) of an object crop, soft labels (paper §4.3); EPFL cars or renders

``--data``: a render set (``kpengine render-views``; the views of ``--category``), the older
``kpengine render-benchmark`` layout, or the EPFL cars folder
(sequences 1-10 train, 11-20 validate). Settings without a flag go in ``--config``: ``size``
(network input, px), ``widths`` (ResNet stage widths), ``val_data``, ``zoom_jitter``,
``shift_jitter``, ``flip``, ``swap``, ``grey``, ``erase``, ``crop_size``, ``half_weight`` (a front/back
head, 0 = none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kpengine.image.datasets import Indices, ViewSet, predict_viewpoints, viewpoint_batch, viewpoint_inputs
from kpengine.image.renders import view_sets
from kpengine.image.tasks._common import ImageConfig, ImageTask
from kpengine.image.viewpoint import ViewpointNet, viewpoint_loss, viewpoint_metrics
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, module_device, to_cpu


@dataclass(kw_only=True)
class ViewpointConfig(ImageConfig):
    flip: bool = True
    #: probabilities of a colour-channel permutation, a grey image, a blanked rectangle per training crop
    swap: float = 0.0
    grey: float = 0.0
    erase: float = 0.0
    #: side of the stored crops (px); the network input ``size`` is re-sampled from them
    crop_size: int = 96
    epochs: int = 60
    #: weight of the front/back half head's loss; 0 = no half head (the paper's network)
    half_weight: float = 0.0


@TASKS.register("viewpoint")
class ViewpointTask(ImageTask):
    config_class = ViewpointConfig

    def load_sets(self) -> tuple[ViewSet, ViewSet | None]:
        return view_sets(self.config.data, self.config.val_data or None, self.config.crop_size, self.config.category)

    def data(self) -> Data:
        train, _ = self.sets()
        c = self.config
        return Data(
            Indices(len(train)),
            None,
            lambda idx: viewpoint_batch(
                train, idx, c.size, c.zoom_jitter, c.shift_jitter, c.flip, c.swap, c.grey, c.erase
            ),
        )

    def model(self) -> nn.Module:
        return ViewpointNet(self.config.size, tuple(self.config.widths), half_head=self.config.half_weight > 0)

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, az, el = batch
        return viewpoint_loss(net(x), az, el, self.config.half_weight)

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        total, c, dev = 0.0, self.config, module_device(model)
        for i in range(0, len(val), 256):
            logits = to_cpu(model(viewpoint_inputs(val.crops[i : i + 256], self.config.size).to(dev)))
            n = min(256, len(val) - i)
            az, el = val.azimuth[i : i + 256], val.elevation[i : i + 256]
            total += float(viewpoint_loss(logits, az, el, c.half_weight)) * n
        p = predict_viewpoints(model, val.crops, flip_average=False)
        known = bool(torch.isfinite(val.elevation).all())
        met = viewpoint_metrics(
            p["azimuth"],
            val.azimuth.numpy(),
            p["elevation"] if known else None,
            val.elevation.numpy() if known else None,
        )
        met.pop("n")
        return {"val_loss": total / max(len(val), 1), **met, "median_confidence": float(np.median(p["confidence"]))}
