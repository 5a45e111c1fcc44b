"""Taking away what tells *which object* a training crop shows, so that a viewpoint network must learn the *view*.

With few instances (EPFL cars: ten training cars, each turned on its own turntable in front of
its own fixed background) a network can reach perfect training accuracy by recognising the car and
recalling where on its turn each appearance sits; that does not transfer to new cars, and the
errors it makes are confident front/back flips (docs/benchmarks.md). Two ways to break the shortcut:

* :func:`blank_outside_box`: grey every crop pixel outside the object's box. A sequence's
  background never changes while its car turns, so it can only tell the instance.
* **Same-view mixing** (:func:`same_view_partners`, :func:`cutmix`, :func:`blend`): a crop gets a
  rectangle from (cutmix) or a blend with (mixup) a crop of *another instance seen from the same
  azimuth* (within a tolerance, mirrored partners included: a mirror image of a view at ``-a`` is a
  view at ``a``). The label stays right, since both show the same view, while any cue that is
  private to one instance (a livery, a number plate, a dent) now also appears at views where it
  does not belong on that instance. Unlike ordinary mixup (Zhang et al. 2018) or CutMix (Yun et al.
  2019), which mix two labels, nothing about the target changes.

Instances are read off the crops' names (:func:`instance_ids`).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from kpengine.errors import DataError

_EPFL_NAME = re.compile(r"tripod_seq_(\d+)_\d+\.\w+$")


def instance_ids(names: list[str]) -> np.ndarray:
    """Crop names -> (N,) int instance ids. EPFL cars' ``tripod_seq_SS_NNN.jpg`` give the sequence SS.

    Other sets have no instance in their names yet: a clear error rather than a silent mix of a
    shape with itself."""
    out = np.empty(len(names), np.int64)
    for i, n in enumerate(names):
        m = _EPFL_NAME.search(n)
        if m is None:
            raise DataError(
                f"cannot tell the instance of crop {n!r}: same-view mixing needs EPFL-style names "
                "'tripod_seq_SS_NNN.jpg'"
            )
        out[i] = int(m.group(1))
    return out


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(np.mod(a - b, 360.0))
    return np.minimum(d, 360.0 - d)


def same_view_partners(
    target_azimuth: np.ndarray,
    target_instance: np.ndarray,
    azimuth: np.ndarray,
    instance: np.ndarray,
    tolerance: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One random partner per target view: an item of another instance whose azimuth, or whose
    mirror image's azimuth (``-azimuth``), is within ``tolerance`` degrees of the target's.

    target_azimuth, target_instance: (B,) the views to match (azimuths after any mirroring);
    azimuth, instance: (N,) the pool. Returns (B,) partner indices into the pool (-1: none within
    the tolerance) and (B,) bool, whether that partner is to be mirrored.
    """
    t = np.asarray(target_azimuth, np.float64)[:, None]
    a = np.asarray(azimuth, np.float64)[None, :]
    other = np.asarray(target_instance)[:, None] != np.asarray(instance)[None, :]
    ok = np.concatenate([(_angle_diff(a, t) <= tolerance) & other, (_angle_diff(-a, t) <= tolerance) & other], 1)
    n = a.shape[1]
    index = np.full(len(t), -1, np.int64)
    mirror = np.zeros(len(t), bool)
    for b in range(len(t)):
        cand = np.flatnonzero(ok[b])
        if len(cand):
            c = int(rng.choice(cand))
            index[b], mirror[b] = c % n, c >= n
    return index, mirror


def cutmix(x: torch.Tensor, y: torch.Tensor, fraction: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Paste a rectangle of ``y`` into ``x`` at the same place: x, y (B, C, S, S); fraction (B,) of the area.

    Each rectangle has a random aspect ratio in [1/2, 2] (clipped to the image) and a random position;
    its area is ``fraction`` of the image, rounded to whole pixels. Returns a new tensor."""
    b, _, h, w = x.shape
    out = x.clone()
    for i in range(b):
        f = float(fraction[i])
        if f <= 0:
            continue
        aspect = float(torch.exp((2 * torch.rand((), generator=gen) - 1) * np.log(2.0)))
        rh = min(h, max(1, round(np.sqrt(f * h * w * aspect))))
        rw = min(w, max(1, round(f * h * w / rh)))
        y0 = int(torch.randint(0, h - rh + 1, (), generator=gen))
        x0 = int(torch.randint(0, w - rw + 1, (), generator=gen))
        out[i, :, y0 : y0 + rh, x0 : x0 + rw] = y[i, :, y0 : y0 + rh, x0 : x0 + rw]
    return out


def blend(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight * x + (1 - weight) * y`` per image: x, y (B, C, S, S), weight (B,) of ``x``."""
    w = weight.to(x)[:, None, None, None]
    return w * x + (1.0 - w) * y


def box_in_crop(bbox: tuple[float, float, float, float], side: int, margin: float) -> tuple[int, int, int, int]:
    """Where a box ``(x, y, w, h)`` lies in its stored crop: the square of ``margin`` x the box's longer
    side, centred on the box, resampled to ``side`` px. Returns ``(x0, y0, width, height)`` in crop pixels."""
    _, _, w, h = bbox
    full = margin * max(w, h)
    bw, bh = round(side * w / full), round(side * h / full)
    return (side - bw) // 2, (side - bh) // 2, bw, bh


def blank_outside_box(crops: torch.Tensor, boxes: list[tuple[float, float, float, float]], margin: float) -> None:
    """Grey (128) every pixel of crops (N, 3, S, S) uint8 outside each one's box, in place."""
    s = crops.shape[-1]
    for i, b in enumerate(boxes):
        x0, y0, bw, bh = box_in_crop(b, s, margin)
        keep = crops[i, :, y0 : y0 + bh, x0 : x0 + bw].clone()
        crops[i] = 128
        crops[i, :, y0 : y0 + bh, x0 : x0 + bw] = keep
