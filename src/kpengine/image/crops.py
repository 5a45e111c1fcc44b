"""Object-centred square crops of photos, and the batch augmentations the image networks train with.

A crop is a square around the object box, ``margin`` times its longer side, resampled to a
fixed size; pixels outside the photo repeat its border (black bars would tell the network where
the photo ended, which the test photos do not share). Training then re-samples each crop with
a random scale, shift and horizontal flip in one ``grid_sample`` call for the whole batch, and
jitters brightness, contrast and saturation: with ten training cars the colour of a car must not
be what identifies its side.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MEAN, STD = 0.5, 0.25  # inputs are mapped to roughly zero mean, unit spread


def square_box(bbox: tuple[float, float, float, float], margin: float) -> tuple[float, float, float]:
    """Box ``(x, y, w, h)`` -> square ``(cx, cy, side)`` centred on it, ``margin`` times its longer side."""
    x, y, w, h = bbox
    return x + w / 2.0, y + h / 2.0, margin * max(w, h)


def crop_square(image: np.ndarray, bbox: tuple[float, float, float, float], margin: float, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (size, size, C) uint8: the square around ``bbox``, border pixels repeated outside."""
    cx, cy, side = square_box(bbox, margin)
    pad = int(np.ceil(side)) + 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    x0, y0 = cx - side / 2 + pad, cy - side / 2 + pad
    pil = Image.fromarray(padded)
    out = pil.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side), reducing_gap=2.0)
    return np.asarray(out)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) uint8 tensor (what datasets keep in memory)."""
    return torch.from_numpy(np.array(crops, np.uint8, copy=True)).permute(0, 3, 1, 2).contiguous()


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, S, S) -> network input."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return (x - MEAN) / STD


def whole_image_input(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 photo -> normalised network input (1, 3, size, size): the whole frame squashed (the
    silhouette and keypoint-heatmap networks see all of it; antialiased when shrinking)."""
    x = to_tensor(image[None]).float() / 255
    return normalise(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False))


def resample(
    crops: torch.Tensor,
    out_size: int,
    zoom: float | torch.Tensor,
    shift: torch.Tensor | None = None,
    flip: torch.Tensor | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Crops (B, C, S, S) -> (B, C, out, out) float in [0, 1] (uint8 input) or as given.

    ``zoom`` < 1 shows the central ``zoom`` fraction of the crop; ``shift`` (B, 2) moves the
    window in crop-width units; ``flip`` (B,) bool mirrors left-right.
    """
    b = crops.shape[0]
    x = crops.float() / 255.0 if crops.dtype == torch.uint8 else crops.float()
    z = torch.as_tensor(zoom, dtype=torch.float32).expand(b) if not torch.is_tensor(zoom) else zoom.float()
    theta = torch.zeros(b, 2, 3)
    sx = z.clone()
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    theta[:, 0, 0], theta[:, 1, 1] = sx, z
    if shift is not None:
        theta[:, :, 2] = 2.0 * shift
    grid = F.affine_grid(theta, [b, x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)


def colour_jitter(x: torch.Tensor, gen: torch.Generator, strength: float = 0.3) -> torch.Tensor:
    """Random brightness, contrast and saturation per image of (B, 3, S, S) in [0, 1]; output clipped to [0, 1]."""
    b = x.shape[0]

    def u() -> torch.Tensor:
        return (1.0 + strength * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)).to(x)

    x = x * u()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u() + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * u() + grey
    return x.clamp(0.0, 1.0)


def appearance_shuffle(
    x: torch.Tensor, gen: torch.Generator, swap: float = 0.0, grey: float = 0.0, erase: float = 0.0
) -> torch.Tensor:
    """Per image of (B, 3, S, S) in [0, 1]: permute the colour channels with probability ``swap`` (a
    coarse hue change: a car's paint must not tell its side), turn grey with probability ``grey``, and
    blank one random rectangle (up to a third of each side) with probability ``erase`` (no single
    part may decide the view)."""
    b, _, h, w = x.shape
    x = x.clone()
    for i in range(b):
        if torch.rand((), generator=gen) < swap:
            x[i] = x[i, torch.randperm(3, generator=gen)]
        if torch.rand((), generator=gen) < grey:
            x[i] = x[i].mean(0, keepdim=True).expand(3, h, w)
        if torch.rand((), generator=gen) < erase:
            eh, ew = (
                int(torch.randint(h // 8, h // 3 + 1, (), generator=gen)),
                int(torch.randint(w // 8, w // 3 + 1, (), generator=gen)),
            )
            y0, x0 = (
                int(torch.randint(0, h - eh + 1, (), generator=gen)),
                int(torch.randint(0, w - ew + 1, (), generator=gen)),
            )
            x[i, :, y0 : y0 + eh, x0 : x0 + ew] = torch.rand(3, 1, 1, generator=gen)
    return x
