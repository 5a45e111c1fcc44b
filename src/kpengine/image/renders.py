"""Training and test images from rendered sets (the 2D benchmark layout of ``kpengine render-benchmark``).

Each image comes with its mask, viewpoint and camera, so one set trains the viewpoint network
(object crops from the mask's box), the silhouette network (whole images) and measures the
pipeline (2D keypoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kpengine.errors import DataError
from kpengine.image.crops import crop_square, to_tensor
from kpengine.image.datasets import CROP_MARGIN, MaskSet, ViewSet
from kpengine.io.benchmark2d import load_benchmark


@dataclass
class RenderedImage:
    """One rendered image: ``image`` (H, W, 3) uint8, ``mask`` (H, W) bool, and its annotation dict."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    annotation: dict


def _png(path: Path, mode: str) -> np.ndarray:
    if not path.is_file():
        raise DataError("image file missing", path=path)
    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


def load_rendered(root: str | Path, limit: int | None = None) -> list[RenderedImage]:
    """Every image of a rendered set (benchmark layout), in index order."""
    root = Path(root)
    _, anns = load_benchmark(root)
    out = []
    for name, ann in list(anns.items())[:limit]:
        img = _png(root / ann["filename"], "RGB")
        mask = _png(root / ann["mask"], "L") > 127
        out.append(RenderedImage(name, img, mask, ann))
    return out


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of a (H, W) bool mask's pixels (pixel edges, so a single pixel is 1 x 1)."""
    ii, jj = np.nonzero(mask)
    if len(ii) == 0:
        raise DataError("empty mask: no object box")
    return float(jj.min()) - 0.5, float(ii.min()) - 0.5, float(jj.max() - jj.min() + 1), float(ii.max() - ii.min() + 1)


def view_set(items: list[RenderedImage], size: int = 96) -> ViewSet:
    """Object crops by the mask's box, with the rendered azimuth and elevation."""
    crops = np.stack([crop_square(it.image, mask_box(it.mask), CROP_MARGIN, size) for it in items])
    az = torch.tensor([it.annotation["viewpoint"]["azimuth"] for it in items], dtype=torch.float32)
    el = torch.tensor([it.annotation["viewpoint"]["elevation"] for it in items], dtype=torch.float32)
    return ViewSet(to_tensor(crops), az, el, [it.name for it in items])


def squash(image: np.ndarray, size: int, resample=Image.BILINEAR) -> np.ndarray:
    """Resize (H, W[, 3]) uint8 to (size, size[, 3]) ignoring the aspect ratio (the photo's whole frame)."""
    return np.asarray(Image.fromarray(image).resize((size, size), resample))


def mask_set(items: list[RenderedImage], size: int = 96) -> MaskSet:
    imgs = np.stack([squash(it.image, size) for it in items])
    masks = np.stack([squash(it.mask.astype(np.uint8) * 255, size) for it in items])
    return MaskSet(to_tensor(imgs), torch.from_numpy(masks), [it.name for it in items])
