"""One colour per semantic id, shared by every PNG (matplotlib figures, Pillow overlays) and the web pages.

The colours are matplotlib's ``tab20`` (written out here as 0-255 RGB so that Pillow and the
server need no matplotlib), cycling: semantic id ``s`` gets ``PALETTE[s % 20]``. The web pages
read the same table from ``web/src/generated/palette.ts``, which ``scripts/gen_web.py`` writes
from :data:`PALETTE`; tests/test_palette.py fails when the two disagree.
"""

from __future__ import annotations

import numpy as np

#: matplotlib's tab20, (20, 3) 0-255 RGB.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44), (152, 223, 138),
    (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213), (140, 86, 75), (196, 156, 148),
    (227, 119, 194), (247, 182, 210), (127, 127, 127), (199, 199, 199), (188, 189, 34), (219, 219, 141),
    (23, 190, 207), (158, 218, 229),
)  # fmt: skip

_RGB = np.array(PALETTE, np.uint8)


def semantic_rgb(ids: np.ndarray) -> np.ndarray:
    """(K,) semantic ids -> (K, 3) uint8 RGB (Pillow images, the web's colours)."""
    return _RGB[np.asarray(ids, np.int64) % len(PALETTE)]


def semantic_rgba(ids: np.ndarray) -> np.ndarray:
    """(K,) semantic ids -> (K, 4) float RGBA in [0, 1] (matplotlib's ``c=``); equal to ``tab20(ids % 20)``."""
    rgb = semantic_rgb(ids).astype(np.float64) / 255
    return np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1)


def palette_hex() -> list[str]:
    """The palette as ``#rrggbb`` strings, in id order."""
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in PALETTE]
