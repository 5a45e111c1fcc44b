"""Draw on rendered images (Pillow): keypoints as coloured dots with names, silhouette outlines, tiles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kpengine.io.atomic import atomic_open
from kpengine.viz.palette import semantic_rgb


def draw_keypoints(
    image: np.ndarray,
    uv: np.ndarray,
    semantic_ids: np.ndarray,
    visible: np.ndarray | None = None,
    names: dict[int, str] | None = None,
    radius: int = 4,
) -> np.ndarray:
    """Image (H, W, 3) uint8 with dots at ``uv`` (K, 2): filled when visible, hollow when occluded."""
    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    vis = np.ones(len(uv), bool) if visible is None else np.asarray(visible)
    for (u, v), sid, c, ok in zip(uv, np.asarray(semantic_ids).tolist(), semantic_rgb(semantic_ids), vis):
        if not np.isfinite([u, v]).all():
            continue
        box = [u - radius, v - radius, u + radius, v + radius]
        draw.ellipse(box, fill=tuple(c.tolist()) if ok else None, outline=(0, 0, 0) if ok else tuple(c.tolist()))
        draw.text((u + radius + 1, v - radius - 2), names.get(sid, str(sid)) if names else str(sid), fill=(0, 0, 0))
    return np.asarray(im)


def outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels of ``mask`` with a 4-neighbour outside it."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def overlay_mask(image: np.ndarray, mask: np.ndarray, color: Sequence[int], alpha: float = 0.4) -> np.ndarray:
    """Blend ``color`` into ``image`` (H, W, 3) uint8 over ``mask`` and draw its outline opaque."""
    out = image.astype(np.float64)
    c = np.asarray(color, np.float64)
    out[mask] = (1 - alpha) * out[mask] + alpha * c
    out[outline(mask)] = c
    return out.astype(np.uint8)


def tile(images: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Equal-size (H, W, 3) uint8 images into a grid, row-major."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    out = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = im[..., :3]
    return out


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write (H, W) or (H, W, 3) uint8 as PNG, atomically."""
    with atomic_open(path, "wb") as fh:
        Image.fromarray(np.ascontiguousarray(image)).save(fh, format="PNG")
