"""A contact sheet of a render set: views in a grid with their keypoints drawn, to check by eye."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpengine.image.renderset import view_sample
from kpengine.io.renderset import RenderSet
from kpengine.render.overlay import draw_keypoints, outline, save_png, tile


def contact_sheet(render_set: RenderSet, out: str | Path, n: int = 48, columns: int = 8, scale: int = 2) -> Path:
    """PNG of the first ``n`` views spread over the set (every category), each upscaled ``scale`` times with
    its mask outline (white) and keypoints (filled: visible, hollow: occluded; labelled by semantic id)."""
    from PIL import Image

    total = len(render_set)
    if total == 0:
        raise ValueError("empty render set")
    picks = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
    tiles = []
    for i in picks:
        s = view_sample(render_set, int(i), maps=("mask",))
        img = np.asarray(Image.fromarray(s.image).resize((s.width * scale, s.height * scale), Image.Resampling.NEAREST))
        if s.mask is not None:
            edge = np.kron(outline(s.mask), np.ones((scale, scale), bool)).astype(bool)
            img = img.copy()
            img[edge] = 255
        k = s.keypoints
        uv = (k.uv + 0.5) * scale - 0.5
        tiles.append(draw_keypoints(img, uv, k.semantic_ids, k.visible, radius=3))
    out = Path(out)
    save_png(out, tile(tiles, columns))
    return out
