"""2.5D sketches of a photo: silhouette, depth, camera-frame normals (paper §4.2, MarrNet); render sets

``--data``: a render set (``kpengine render-views``, with its mask, depth and normal maps);
``--category``: one category or a comma-separated list (one network for them). Settings without
a flag go in ``--config``: ``size`` (network input, px; the render side must be a multiple),
``widths``, ``val_data`` (a render set of other shapes: per-output errors), ``views_per_shape``,
``augment`` (framing, flips and kornia colour/blur/noise: ``reconstruct.data.augment_views``),
``view_weight`` (a viewpoint head on the encoder, trained on the renders' viewpoint; 0 = none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kpengine.image.crops import normalise
from kpengine.image.datasets import Indices
from kpengine.image.reconstruct.data import SketchSet, augment_views, load_sketch_set
from kpengine.image.reconstruct.nets import SketchNet, sketch_errors, sketch_loss
from kpengine.image.tasks._common import ImageConfig, ImageTask
from kpengine.image.viewpoint import angle_difference, decode, viewpoint_loss
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, module_device, to_cpu


def categories_of(category: str) -> list[str]:
    """'bathtub,bed' -> ['bathtub', 'bed'] (the render set's category names)."""
    from kpengine.categories import resolve_category

    return [resolve_category(c.strip()).name for c in category.split(",") if c.strip()]


@dataclass(kw_only=True)
class SketchConfig(ImageConfig):
    #: the first N views of each shape (0 = all)
    views_per_shape: int = 0
    augment: bool = True
    #: a viewpoint head on the encoder (viewpoint from RGB), its loss weighted so
    view_weight: float = 0.1
    epochs: int = 20
    batch_size: int = 32


@TASKS.register("sketch")
class SketchTask(ImageTask):
    config_class = SketchConfig

    def load_sets(self) -> tuple[SketchSet, SketchSet | None]:
        c = self.config
        cats = categories_of(c.category)
        train = load_sketch_set(c.data, c.size, cats, c.views_per_shape or None, training=True)
        val = load_sketch_set(c.val_data, c.size, cats) if c.val_data else None
        return train, val

    def data(self) -> Data:
        train, _ = self.sets()
        gen = torch.Generator().manual_seed(self.config.seed)

        def collate(idx: list[int]) -> tuple[torch.Tensor, ...]:
            i = torch.tensor(idx)
            az, el = train.azimuth[i], train.elevation[i]
            if self.config.augment:
                img, mask, depth, normals, flip = augment_views(
                    train.images[i], train.mask[i], train.depth[i], train.normals[i], gen
                )
                # a mirrored view of a shape is the mirror shape seen from -azimuth (bins: image.viewpoint)
                az = torch.where(flip, -az, az)
                return normalise(img), mask, depth, normals, az, el
            return normalise(train.images[i]), train.mask[i], train.depth[i], train.normals[i], az, el

        return Data(Indices(len(train)), None, collate)

    def model(self) -> nn.Module:
        c = self.config
        return SketchNet(tuple(c.widths), c.size, viewpoint_head=c.view_weight > 0)

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, mask, depth, normals, az, el = batch
        pred = net(x)
        loss = sketch_loss(pred, mask, depth, normals)
        if "azimuth" in pred:
            loss = loss + self.config.view_weight * viewpoint_loss(pred, az, el)
        return loss

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        total, sums = 0.0, {}
        for s in range(0, len(val), 128):
            i = torch.arange(s, min(s + 128, len(val)))
            pred = to_cpu(model(normalise(val.images[i]).to(module_device(model))))
            total += float(sketch_loss(pred, val.mask[i], val.depth[i], val.normals[i])) * len(i)
            for k, v in sketch_errors(pred, val.mask[i], val.depth[i], val.normals[i]).items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
            if "azimuth" in pred:
                err = angle_difference(decode(pred)["azimuth"].numpy(), val.azimuth[i].numpy())
                sums["azimuth_acc30"] = sums.get("azimuth_acc30", 0.0) + float((err <= 30).sum())
        return {"val_loss": total / len(val), **{k: v / len(val) for k, v in sums.items()}}

    def title(self) -> str:
        return f"2.5D sketches ({self.config.category})"
