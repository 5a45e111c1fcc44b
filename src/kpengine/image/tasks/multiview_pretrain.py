"""MvDeCor pretraining: a U-Net's per-pixel embedding by dense InfoNCE between matched pixels of two views

``--data``: KeypointNet root; ``--views DIR``: the view cache (rendered there on first use: 12
views of 96 px per shape). Trains on the train and val splits of the category without labels
(never the test split). Settings without a flag go in ``--config``: ``inputs`` (rgb | rgbnd |
geometry), ``size``, ``n_views``, ``widths``, ``embedding_dim``, ``pixels`` (matched pixels per
view pair), ``temperature``, ``match_distance``. See docs/mvdecor.md.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kpengine.image.multiview.training import (
    EpochIndices,
    MultiviewConfig,
    load_shapes,
    new_unet,
    open_views,
    pair_batch,
    pair_loss,
)
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, Task


@TASKS.register("multiview_pretrain")
class MultiviewPretrainTask(Task):
    config_class = MultiviewConfig
    config: MultiviewConfig

    def data(self) -> Data:
        cfg = self.config
        shapes = [s for split in cfg.pretrain_splits for s in load_shapes(cfg, split)]
        self.cache, self.shapes = open_views(cfg, shapes)
        self.train_set = EpochIndices(len(self.shapes))
        return Data(
            self.train_set, None, lambda idx: pair_batch(cfg, self.cache, self.shapes, idx, self.train_set.epoch)
        )

    def model(self) -> nn.Module:
        return new_unet(self.config)

    def loss(self, net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return pair_loss(net, batch, self.config.temperature)

    def trainable(self, batch: dict[str, Any]) -> bool:
        return len(batch["pairs"]) >= 2  # batch norm

    def size(self, batch: dict[str, Any]) -> int:
        return len(batch["pairs"])

    def where(self, batch: dict[str, Any]) -> str:
        return f"models {batch['model_id']}"

    def describe(self) -> dict[str, Any]:
        return {"category": self.config.category, "inputs": self.config.inputs, "shapes": len(self.shapes)}

    def title(self) -> str:
        return f"MvDeCor pretraining ({self.config.category}, {self.config.inputs})"
