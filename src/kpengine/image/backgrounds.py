"""Backgrounds for training renders: crops of real photos away from their objects, or generated ones.

A crop is a random square window of a photo (side between ``min_side`` pixels and 70 % of the
photo's shorter side, mirrored half the time) that overlaps none of the photo's object boxes (each
widened by 5 %) and no pixel of its mask, resampled to the wanted size. Overlap is tested in O(1)
per window with a summed-area table of the forbidden pixels.

Without photos (the generated sample data, a machine without ``../shared/data``) the backgrounds
are generated: a two-colour gradient, fractal value noise over four octaves and a few soft-edged
rectangles and ellipses, blurred a little: clutter with edges and texture, not a flat colour that
would make the silhouette trivial.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kpengine.errors import DataError
from kpengine.io.backgrounds import HELD_OUT, BackgroundPhoto, find_background_photos
from kpengine.io.image import load_image, load_mask


def generated_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8 procedural clutter (module docstring)."""
    from PIL import Image, ImageDraw, ImageFilter

    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    a, b = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    angle = rng.uniform(0, 2 * np.pi)
    s = np.clip(0.5 + np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5), 0, 1)[..., None]
    img = a * (1 - s) + b * s
    for octave in range(4):
        cells = 2 ** (octave + 2)
        grid = rng.normal(0, 0.12 / (octave + 1), (cells, cells, 3)).astype(np.float32)
        up = np.asarray(Image.fromarray(grid[..., 0]).resize((size, size), Image.Resampling.BICUBIC))
        tint = rng.uniform(0.6, 1.0, 3)
        img = img + up[..., None] * tint
    im = Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 7))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.1, 0.7, 2) * size
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [x0, y0, x0 + w, y0 + h]
        (draw.rectangle if rng.random() < 0.6 else draw.ellipse)(box, fill=colour)
    return np.asarray(im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.5)))))


class BackgroundBank:
    """Draws background crops from photos (``BackgroundPhoto`` list), keeping up to ``cache`` photos decoded."""

    def __init__(self, photos: Sequence[BackgroundPhoto], *, min_side: int = 48, cache: int = 128):
        self.photos = list(photos)
        self.min_side = min_side
        self._cache: OrderedDict[Path, tuple[np.ndarray, np.ndarray] | None] = OrderedDict()
        self._cache_size = cache
        self.refused: dict[str, str] = {}

    @classmethod
    def from_root(cls, root: str | Path, held_out: tuple[str, ...] = HELD_OUT, **kwargs) -> BackgroundBank:
        index = find_background_photos(root, held_out)
        if not index.photos:
            raise DataError("no photo with a located object (mask, boxes) to cut backgrounds from", path=root)
        return cls(index.photos, **kwargs)

    def __len__(self) -> int:
        return len(self.photos)

    def _load(self, photo: BackgroundPhoto) -> tuple[np.ndarray, np.ndarray] | None:
        """(image, summed-area table of forbidden pixels (H + 1, W + 1)), or None when unusable."""
        if photo.path in self._cache:
            self._cache.move_to_end(photo.path)
            return self._cache[photo.path]
        try:
            img = load_image(photo.path)
            h, w = img.shape[:2]
            forbidden = np.zeros((h, w), bool)
            if photo.mask_path is not None:
                forbidden |= load_mask(photo.mask_path, expected_shape=(h, w))
            for x0, y0, x1, y1 in photo.boxes:
                mx, my = 0.05 * (x1 - x0), 0.05 * (y1 - y0)
                forbidden[
                    max(int(np.floor(y0 - my)), 0) : max(int(np.ceil(y1 + my)), 0),
                    max(int(np.floor(x0 - mx)), 0) : max(int(np.ceil(x1 + mx)), 0),
                ] = True
            sat = np.zeros((h + 1, w + 1), np.int64)
            sat[1:, 1:] = forbidden.cumsum(0).cumsum(1)
            entry: tuple[np.ndarray, np.ndarray] | None = (img, sat)
        except DataError as exc:
            self.refused[str(photo.path)] = exc.reason
            entry = None
        self._cache[photo.path] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry

    def sample(self, rng: np.random.Generator, size: int, tries: int = 40) -> tuple[np.ndarray, str]:
        """A (size, size, 3) uint8 crop off any object, and its source ``"<file>@x,y,side"``; a generated
        background (source ``"generated"``) when no photo has room."""
        from PIL import Image

        for _ in range(tries):
            if not self.photos:
                break
            photo = self.photos[int(rng.integers(len(self.photos)))]
            entry = self._load(photo)
            if entry is None:
                continue
            img, sat = entry
            h, w = img.shape[:2]
            top = int(0.7 * min(h, w))
            if top < self.min_side:
                continue
            for _ in range(8):
                side = int(rng.integers(self.min_side, top + 1))
                x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                if sat[y + side, x + side] - sat[y, x + side] - sat[y + side, x] + sat[y, x] == 0:
                    crop = Image.fromarray(img[y : y + side, x : x + side])
                    crop = crop.resize((size, size), Image.Resampling.BILINEAR)
                    out = np.asarray(crop)
                    if rng.random() < 0.5:
                        out = out[:, ::-1]
                    return np.ascontiguousarray(out), f"{photo.path.name}@{x},{y},{side}"
        return generated_background(rng, size), "generated"
