"""2D keypoints straight from the image: one heatmap per semantic id with visibility (the 2D competitor)

``--data``: a render set (``kpengine render-views``; the views of ``--category``, with their
projected keypoints and visibility). The whole image is squashed to ``size`` x ``size`` (renders
are square and object-centred, as the paper's crops); the network is
:class:`kpengine.image.heatmap.HeatmapNet`. Augmentation: random zoom and shift (keypoints move
with the pixels; one that leaves the picture counts as not visible) and colour jitter, no flip
(a mirror swaps left and right semantic ids). Settings without a flag go in ``--config``:
``size``, ``widths``, ``val_data``, ``sigma`` (target Gaussian, heatmap px), ``vis_weight``,
``n_ids`` (heatmap channels; 0 = the largest semantic id in the data + 1), ``store_size``.
Validation: PCK@0.1 of the image side over visible keypoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kpengine.errors import DataError
from kpengine.image.crops import colour_jitter, normalise, resample, to_tensor
from kpengine.image.datasets import Indices
from kpengine.image.heatmap import HeatmapNet, decode, heatmap_loss, image_to_heatmap
from kpengine.image.tasks._common import ImageConfig, ImageTask
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, module_device, to_cpu


@dataclass
class KeypointImageSet:
    """Images (N, 3, S, S) uint8 squashed to S x S; ``uv`` (N, K, 2) float32 in those pixels (NaN: absent);
    ``visible`` (N, K) bool (present and not occluded)."""

    images: torch.Tensor
    uv: torch.Tensor
    visible: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def keypoint_set(items: list, size: int, n_ids: int | None = None) -> KeypointImageSet:
    """Render-set views (:func:`kpengine.image.renders.load_render_views`) -> a :class:`KeypointImageSet`."""
    from kpengine.image.renders import squash

    if not items:
        raise DataError("no images to train the keypoint heatmaps on")
    kps = []
    for it in items:
        kp = it.annotation.get("keypoints")
        if not isinstance(kp, dict):
            raise DataError(f"image {it.name} has no keypoints (a render set of `kpengine render-views` has them)")
        kps.append(kp)
    k = n_ids or 1 + max((max(kp["semantic_ids"], default=-1) for kp in kps), default=-1)
    uv = np.full((len(items), max(k, 1), 2), np.nan, np.float32)
    vis = np.zeros((len(items), max(k, 1)), bool)
    for i, (it, kp) in enumerate(zip(items, kps)):
        h, w = it.image.shape[:2]
        for (u, v), sid, seen in zip(kp["uv"], kp["semantic_ids"], kp["visible"]):
            if 0 <= sid < k:
                uv[i, sid] = image_to_heatmap(np.array([u, v]), size, w, h)
                vis[i, sid] = bool(seen)
    imgs = np.stack([squash(it.image, size) for it in items])
    return KeypointImageSet(to_tensor(imgs), torch.from_numpy(uv), torch.from_numpy(vis), [it.name for it in items])


def move_keypoints(uv: torch.Tensor, in_size: int, out_size: int, zoom: torch.Tensor, shift: torch.Tensor):
    """Pixel coordinates (B, K, 2) in the stored image -> in :func:`~kpengine.image.crops.resample`'s output.

    ``resample`` samples input normalised coordinates ``zoom * x_out + 2 shift`` (align_corners False:
    ``x = (2 u + 1) / S - 1``); this is its inverse."""
    x_in = (2 * uv + 1) / in_size - 1
    x_out = (x_in - 2 * shift[:, None, :]) / zoom[:, None, None]
    return ((x_out + 1) * out_size - 1) / 2


@dataclass(kw_only=True)
class KeypointHeatmapConfig(ImageConfig):
    size: int = 64
    store_size: int = 96
    zoom_jitter: float = 0.12
    shift_jitter: float = 0.06
    sigma: float = 1.5
    vis_weight: float = 0.1
    n_ids: int = 0
    batch_size: int = 32
    epochs: int = 30


@TASKS.register("keypoint_heatmap")
class KeypointHeatmapTask(ImageTask):
    config_class = KeypointHeatmapConfig

    def load_sets(self) -> tuple[KeypointImageSet, KeypointImageSet | None]:
        from kpengine.image.renders import is_render_set, load_render_views

        c = self.config
        for path in (c.data, c.val_data):
            if path and not is_render_set(path):
                raise DataError("keypoint heatmaps train on a render set (`kpengine render-views`)", path=path)
        train = keypoint_set(load_render_views(c.data, c.category), c.store_size, c.n_ids or None)
        k = int(train.uv.shape[1])
        val = keypoint_set(load_render_views(c.val_data, c.category), c.store_size, k) if c.val_data else None
        return train, val

    def data(self) -> Data:
        train, _ = self.sets()
        c = self.config

        def batch(idx: list[int]):
            i = torch.as_tensor(idx)
            b = len(i)
            zoom = 1 + c.zoom_jitter * (2 * torch.rand(b) - 1)
            shift = c.shift_jitter * (2 * torch.rand(b, 2) - 1)
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
            x = colour_jitter(resample(train.images[i], c.size, zoom, shift), gen)
            uv = move_keypoints(train.uv[i], c.store_size, c.size, zoom, shift)
            inside = ((uv >= -0.5) & (uv <= c.size - 0.5)).all(-1)
            return normalise(x), torch.nan_to_num(uv), train.visible[i] & inside

        return Data(Indices(len(train)), None, batch)

    def model(self) -> nn.Module:
        if self.config.n_ids <= 0:  # from the data, then saved with the run's config
            self.config.n_ids = int(self.sets()[0].uv.shape[1])
        return HeatmapNet(self.config.n_ids, tuple(self.config.widths))

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, uv, vis = batch
        return heatmap_loss(net(x), uv, vis, self.config.sigma, self.config.vis_weight)

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        c = self.config
        total, errs, vis_ok = 0.0, [], []
        ones, dev = torch.ones(1), module_device(model)
        for s in range(0, len(val), 128):
            sl = slice(s, s + 128)
            x = normalise(resample(val.images[sl], c.size, 1.0))
            b = x.shape[0]
            uv = move_keypoints(val.uv[sl], c.store_size, c.size, ones.expand(b), torch.zeros(b, 2))
            out = to_cpu(model(x.to(dev)))
            total += float(heatmap_loss(out, torch.nan_to_num(uv), val.visible[sl], c.sigma, c.vis_weight)) * b
            pred, _ = decode(out["heatmap"])
            e = torch.linalg.norm(pred - uv, dim=-1)
            errs.append(e[val.visible[sl]].numpy())
            present = torch.isfinite(val.uv[sl][..., 0])
            vis_ok.append(((out["visible"] > 0) == val.visible[sl])[present].numpy())
        e = np.concatenate(errs)
        return {
            "val_loss": total / max(len(val), 1),
            "pck_img_0.1": float((e <= 0.1 * c.size).mean()) if len(e) else float("nan"),
            "median_error_px": float(np.median(e)) if len(e) else float("nan"),
            "visibility_accuracy": float(np.concatenate(vis_ok).mean()),
        }
