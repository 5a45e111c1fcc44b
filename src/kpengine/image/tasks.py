"""The image training tasks: data in memory, batches with augmentation, loss and validation measures.

``viewpoint``: object crops with azimuth (and elevation, NaN where unknown) -> :class:`ViewpointNet`.
Crops are kept as uint8 (N, 3, S, S) at a size above the network input, with the object box
spanning ``1 / margin`` of the crop; each batch re-samples them to the network's input with a
random zoom and shift, a left-right flip (which mirrors the azimuth: ``az -> -az``, true for
left-right symmetric objects such as cars and chairs) and colour jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kpengine.image.crops import colour_jitter, normalise, resample
from kpengine.image.fit import ImageTask
from kpengine.image.viewpoint import ViewpointNet, decode, viewpoint_loss, viewpoint_metrics

CROP_MARGIN = 1.4  # stored crops: the square of 1.4 x the box's longer side
VIEW_MARGIN = 1.1  # network input: 1.1 x the box's longer side


@dataclass
class ViewSet:
    """Crops (N, 3, S, S) uint8 made with ``CROP_MARGIN``; azimuth (N,) and elevation (N,) degrees (NaN: unknown)."""

    crops: torch.Tensor
    azimuth: torch.Tensor
    elevation: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return int(self.crops.shape[0])


def _base_zoom() -> float:
    return VIEW_MARGIN / CROP_MARGIN


def viewpoint_inputs(crops: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Stored crops (B, 3, S, S) -> normalised network input (B, 3, size, size), no randomness."""
    return normalise(resample(crops, size, _base_zoom(), flip=flip))


@torch.no_grad()
def predict_viewpoints(model: ViewpointNet, crops: torch.Tensor, batch: int = 128, flip_average: bool = True) -> dict:
    """Azimuth, elevation, confidence (N,) each, as numpy. ``flip_average`` also looks at the mirrored crop.

    A mirrored crop's azimuth distribution is the original's reversed (bin k <-> bin 23 - k), so
    the two are averaged at no cost to the convention.
    """
    model.eval()
    outs: dict[str, list] = {"azimuth": [], "elevation": [], "confidence": []}
    for i in range(0, crops.shape[0], batch):
        c = crops[i : i + batch]
        logits = model(viewpoint_inputs(c, model.size))
        if flip_average:
            flipped = model(viewpoint_inputs(c, model.size, flip=torch.ones(c.shape[0], dtype=torch.bool)))
            pa = 0.5 * (F.softmax(logits["azimuth"], -1) + F.softmax(flipped["azimuth"], -1).flip(-1))
            pe = 0.5 * (F.softmax(logits["elevation"], -1) + F.softmax(flipped["elevation"], -1))
            logits = {"azimuth": torch.log(pa.clamp_min(1e-12)), "elevation": torch.log(pe.clamp_min(1e-12))}
        d = decode(logits)
        for k in outs:
            outs[k].append(d[k])
    return {k: torch.cat(v).numpy() for k, v in outs.items()}


def viewpoint_task(
    train: ViewSet,
    val: ViewSet,
    category: str,
    *,
    size: int = 64,
    batch_size: int = 64,
    widths: tuple[int, ...] = (16, 32, 64, 128),
    zoom_jitter: float = 0.1,
    shift_jitter: float = 0.06,
    flip: bool = True,
) -> ImageTask:
    model = ViewpointNet(size, widths)
    base = _base_zoom()

    def batches(gen: torch.Generator):
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            b = len(idx)
            zoom = base * (1 + zoom_jitter * (2 * torch.rand(b, generator=gen) - 1))
            shift = shift_jitter * (2 * torch.rand(b, 2, generator=gen) - 1)
            flips = (torch.rand(b, generator=gen) < 0.5) if flip else torch.zeros(b, dtype=torch.bool)
            x = colour_jitter(resample(train.crops[idx], size, zoom, shift, flips), gen)
            az = torch.where(flips, -train.azimuth[idx], train.azimuth[idx])
            yield normalise(x), az, train.elevation[idx]

    def loss(m: torch.nn.Module, b) -> torch.Tensor:
        x, az, el = b
        return viewpoint_loss(m(x), az, el)

    def validate(m: torch.nn.Module) -> dict[str, float]:
        total = 0.0
        for i in range(0, len(val), 256):
            logits = m(viewpoint_inputs(val.crops[i : i + 256], size))
            total += float(viewpoint_loss(logits, val.azimuth[i : i + 256], val.elevation[i : i + 256])) * min(
                256, len(val) - i
            )
        p = predict_viewpoints(m, val.crops, flip_average=False)
        el_known = bool(torch.isfinite(val.elevation).all())
        met = viewpoint_metrics(
            p["azimuth"],
            val.azimuth.numpy(),
            p["elevation"] if el_known else None,
            val.elevation.numpy() if el_known else None,
        )
        return {"val_loss": total / max(len(val), 1), **{k: v for k, v in met.items() if k != "n"}}

    config = {
        "size": size,
        "widths": list(widths),
        "batch_size": batch_size,
        "crop_margin": CROP_MARGIN,
        "view_margin": VIEW_MARGIN,
        "n_train": len(train),
        "n_val": len(val),
    }
    return ImageTask("viewpoint", category, config, model, batches, loss, validate)


def crops_from_frames(paths: list, boxes: list, size: int = 96) -> torch.Tensor:
    """Photos and their object boxes ``(x, y, w, h)`` -> stored crops (N, 3, size, size) uint8."""
    from PIL import Image

    from kpengine.image.crops import crop_square, to_tensor

    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, (p, b) in enumerate(zip(paths, boxes)):
        with Image.open(p) as im:
            out[i] = crop_square(np.asarray(im.convert("RGB")), b, CROP_MARGIN, size)
    return to_tensor(out)
