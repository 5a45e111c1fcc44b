"""The image networks' data in memory, their augmented batches, and inference on crops and photos.

Viewpoint data: object crops with azimuth (and elevation, NaN where unknown). Crops are kept as
uint8 (N, 3, S, S) at a size above the network input, with the object box spanning
``1 / CROP_MARGIN`` of the crop; each batch re-samples them to the network's input with a random
zoom and shift, a left-right flip (which mirrors the azimuth: ``az -> -az``, true for left-right
symmetric objects such as cars and chairs) and colour jitter. Silhouette data: whole images and
masks squashed to S x S, re-sampled together by the same random zoom, shift and flip.

Batches are drawn with torch's global generator, which the run mechanism reseeds from (seed,
epoch): a resumed run draws the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kpengine.image.crops import appearance_shuffle, colour_jitter, normalise, resample, square_box
from kpengine.image.viewpoint import ViewpointNet, decode, mirror_average
from kpengine.learn.runs import module_device, to_cpu

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
def predict_viewpoints(
    model: ViewpointNet, crops: torch.Tensor, batch: int = 128, flip_average: bool = True, use_half: bool = True
) -> dict:
    """Azimuth, elevation, confidence (N,) each, as numpy. ``flip_average`` also looks at the mirrored crop
    (:func:`~kpengine.image.viewpoint.mirror_average`); ``use_half``: weight by the half head where the net has one.
    """
    model.eval()
    dev = module_device(model)
    outs: dict[str, list] = {"azimuth": [], "elevation": [], "confidence": []}
    for i in range(0, crops.shape[0], batch):
        c = crops[i : i + batch]
        logits = to_cpu(model(viewpoint_inputs(c, model.size).to(dev)))
        if flip_average:
            mirrored = viewpoint_inputs(c, model.size, flip=torch.ones(c.shape[0], dtype=torch.bool))
            flipped = to_cpu(model(mirrored.to(dev)))
            logits = mirror_average(logits, flipped)
        d = decode(logits, use_half)
        for k in outs:
            outs[k].append(d[k])
    return {k: torch.cat(v).numpy() for k, v in outs.items()}


def crops_from_frames(paths: list, boxes: list, size: int = 96) -> torch.Tensor:
    """Photos and their object boxes ``(x, y, w, h)`` -> stored crops (N, 3, size, size) uint8."""
    from PIL import Image

    from kpengine.image.crops import crop_square, to_tensor

    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, (p, b) in enumerate(zip(paths, boxes)):
        with Image.open(p) as im:
            out[i] = crop_square(np.asarray(im.convert("RGB")), b, CROP_MARGIN, size)
    return to_tensor(out)


@torch.no_grad()
def predict_mask(model, image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 photo -> (H, W) bool mask: the network at ``size`` px, logits upsampled, largest region."""
    from kpengine.image.crops import whole_image_input
    from kpengine.image.silhouette import largest_component

    model.eval()
    h, w = image.shape[:2]
    logits = model(whole_image_input(image, size).to(module_device(model))).cpu()[None]
    up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return largest_component((up > 0).numpy())


def box_square(box: np.ndarray, margin: float = 0.1) -> tuple[int, int, int]:
    """A box ``xmin, ymin, xmax, ymax`` (pixels) -> the square ``(x0, y0, side)`` centred on it, its longer side
    plus ``margin`` of it on each side: the framing of the training renders (object centred, filling
    1 / (1 + 2 x 0.06..0.14) of the crop). The square may reach past the photo."""
    b = np.asarray(box, np.float64)
    cx, cy, side = square_box((b[0], b[1], b[2] - b[0], b[3] - b[1]), 1.0 + 2.0 * margin)
    side = int(np.ceil(side))  # whole pixels: the predicted mask is pasted back pixel for pixel
    return int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2)), max(side, 1)


def predict_mask_in_box(model, image: np.ndarray, size: int, box: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """(H, W, 3) uint8 photo and the object's box -> (H, W) bool mask, predicted on the box's square crop.

    The silhouette networks learn on centred crops (:func:`box_square`); a whole photo with the object to
    one side or cut by the border is not what they saw. Where the square leaves the photo it is filled
    with the photo's mean colour; the mask is then pasted back, kept inside the box, largest region."""
    from kpengine.image.crops import whole_image_input
    from kpengine.image.silhouette import largest_component

    h, w = image.shape[:2]
    x0, y0, side = box_square(box, margin)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = image.reshape(-1, 3).mean(0).round().astype(np.uint8)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    canvas[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = image[iy0:iy1, ix0:ix1]
    model.eval()
    with torch.no_grad():
        logits = model(whole_image_input(canvas, size).to(module_device(model))).cpu()[None]
    up = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False)[0, 0].numpy() > 0
    mask = np.zeros((h, w), bool)
    mask[iy0:iy1, ix0:ix1] = up[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    b = np.asarray(box, np.float64)
    keep = np.zeros((h, w), bool)
    r0, c0 = max(int(np.floor(b[1])), 0), max(int(np.floor(b[0])), 0)
    keep[r0 : int(np.ceil(b[3])) + 1, c0 : int(np.ceil(b[2])) + 1] = True
    return largest_component(mask & keep)


@dataclass
class MaskSet:
    """Whole images (N, 3, S, S) uint8 and their masks (N, S, S) uint8 (0/255), squashed to S x S."""

    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


class Indices(torch.utils.data.Dataset):
    """0..n-1: the run mechanism shuffles and shards indices; the collate function builds the batch."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def viewpoint_batch(
    data: ViewSet,
    idx: list[int],
    size: int,
    zoom_jitter: float,
    shift_jitter: float,
    flip: bool,
    swap: float = 0.0,
    grey: float = 0.0,
    erase: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augmented network inputs (B, 3, size, size), azimuths (B,) (mirrored where flipped), elevations (B,).

    ``swap``, ``grey``, ``erase``: probabilities of :func:`~kpengine.image.crops.appearance_shuffle`."""
    i = torch.as_tensor(idx)
    b = len(i)
    zoom = VIEW_MARGIN / CROP_MARGIN * (1 + zoom_jitter * (2 * torch.rand(b) - 1))
    shift = shift_jitter * (2 * torch.rand(b, 2) - 1)
    flips = (torch.rand(b) < 0.5) if flip else torch.zeros(b, dtype=torch.bool)
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    x = colour_jitter(resample(data.crops[i], size, zoom, shift, flips), gen)
    if swap or grey or erase:
        x = appearance_shuffle(x, gen, swap, grey, erase)
    az = torch.where(flips, -data.azimuth[i], data.azimuth[i])
    return normalise(x), az, data.elevation[i]


def silhouette_batch(
    data: MaskSet,
    idx: list[int],
    size: int,
    zoom_jitter: float,
    shift_jitter: float,
    swap: float = 0.0,
    grey: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented inputs (B, 3, size, size) and target masks (B, size, size) in [0, 1], moved alike.

    ``swap``, ``grey``: probabilities of a colour-channel permutation and of a grey image
    (:func:`~kpengine.image.crops.appearance_shuffle`; no erasing: the mask would keep the blanked part)."""
    i = torch.as_tensor(idx)
    b = len(i)
    zoom = 1 + zoom_jitter * (2 * torch.rand(b) - 1)
    shift = shift_jitter * (2 * torch.rand(b, 2) - 1)
    flips = torch.rand(b) < 0.5
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    x = colour_jitter(resample(data.images[i], size, zoom, shift, flips), gen)
    if swap or grey:
        x = appearance_shuffle(x, gen, swap, grey, 0.0)
    m = resample(data.masks[i][:, None], size, zoom, shift, flips)[:, 0]
    return normalise(x), m
