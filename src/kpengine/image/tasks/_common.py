"""What the image tasks share: the config fields of an image run and the task plumbing around them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from kpengine.learn.config import RunConfig
from kpengine.learn.runs import Task


@dataclass(kw_only=True)
class ImageConfig(RunConfig):
    """``data`` / ``val_data``: image sets; ``size``: network input (px); ``widths``: ResNet stage widths."""

    data: str
    category: str
    val_data: str = ""
    size: int = 64
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    zoom_jitter: float = 0.1
    shift_jitter: float = 0.06
    batch_size: int = 64
    lr: float = 2e-3
    lr_schedule: str = "cosine"
    weight_decay: float = 1e-4

    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device", "data", "val_data")
    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "category", "size", "widths")


class ImageTask(Task):
    """Loads its (train, val) sets once (``load_sets``), trains with AdamW, names its category."""

    def __init__(self, config: ImageConfig):
        super().__init__(config)
        self._sets: tuple[Any, Any] | None = None

    def load_sets(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def sets(self) -> tuple[Any, Any]:
        if self._sets is None:
            self._sets = self.load_sets()
        return self._sets

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def describe(self) -> dict[str, Any]:
        train, val = self.sets()
        return {"category": self.config.category, "train_images": len(train), "val_images": len(val) if val else 0}

    def title(self) -> str:
        return f"{self.config.task} ({self.config.category})"
