"""2.5D sketches of a photo: silhouette, depth, camera-frame normals (paper §4.2, MarrNet); render sets

``--data``: a render set (``kpengine render-views``, with its mask, depth and normal maps);
``--category``: one category or a comma-separated list (one network for them). Settings without
a flag go in ``--config``: ``size`` (network input, px; the render side must be a multiple),
``widths``, ``val_data`` (a render set of other shapes: per-output errors), ``views_per_shape``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from kpengine.image.crops import normalise
from kpengine.image.datasets import Indices
from kpengine.image.reconstruct.data import SketchSet, load_sketch_set
from kpengine.image.reconstruct.nets import SketchNet, sketch_errors, sketch_loss
from kpengine.learn.config import RunConfig
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, Task


def categories_of(category: str) -> list[str]:
    """'bathtub,bed' -> ['bathtub', 'bed'] (the render set's category names)."""
    from kpengine.categories import resolve_category

    return [resolve_category(c.strip()).name for c in category.split(",") if c.strip()]


@dataclass(kw_only=True)
class SketchConfig(RunConfig):
    data: str
    category: str
    val_data: str = ""
    size: int = 64
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    views_per_shape: int = 0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    weight_decay: float = 1e-4

    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device", "data", "val_data")
    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "category", "size", "widths")


@TASKS.register("sketch")
class SketchTask(Task):
    config_class = SketchConfig

    def __init__(self, config: SketchConfig):
        super().__init__(config)
        self._sets: tuple[SketchSet, SketchSet | None] | None = None

    def sets(self) -> tuple[SketchSet, SketchSet | None]:
        if self._sets is None:
            c = self.config
            cats = categories_of(c.category)
            vps = c.views_per_shape or None
            train = load_sketch_set(c.data, c.size, cats, vps)
            val = load_sketch_set(c.val_data, c.size, cats) if c.val_data else None
            self._sets = (train, val)
        return self._sets

    def data(self) -> Data:
        train, _ = self.sets()

        def collate(idx: list[int]) -> tuple[torch.Tensor, ...]:
            i = torch.tensor(idx)
            return normalise(train.images[i]), train.mask[i], train.depth[i], train.normals[i]

        return Data(Indices(len(train)), None, collate)

    def model(self) -> nn.Module:
        return SketchNet(tuple(self.config.widths))

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, mask, depth, normals = batch
        return sketch_loss(net(x), mask, depth, normals)

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        total, sums = 0.0, {}
        for s in range(0, len(val), 128):
            i = torch.arange(s, min(s + 128, len(val)))
            pred = model(normalise(val.images[i]))
            total += float(sketch_loss(pred, val.mask[i], val.depth[i], val.normals[i])) * len(i)
            for k, v in sketch_errors(pred, val.mask[i], val.depth[i], val.normals[i]).items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
        return {"val_loss": total / len(val), **{k: v / len(val) for k, v in sums.items()}}

    def describe(self) -> dict[str, Any]:
        train, val = self.sets()
        return {"category": self.config.category, "train_images": len(train), "val_images": len(val) if val else 0}

    def title(self) -> str:
        return f"2.5D sketches ({self.config.category})"
