"""Figures of voxel grids (matplotlib ``voxels``, y-up turned to matplotlib's z-up)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_voxel_grids(path: str | Path, grids: list[np.ndarray], titles: list[str], columns: int = 4) -> None:
    """One 3D panel per (R, R, R) bool grid (index axes x, y up, z), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kpengine.viz.figures import save_figure

    rows = (len(grids) + columns - 1) // columns
    fig = plt.figure(figsize=(3.2 * columns, 3.2 * rows))
    for k, (g, title) in enumerate(zip(grids, titles)):
        ax = fig.add_subplot(rows, columns, k + 1, projection="3d")
        # model (x, y up, z) -> plot (x, -z, y): a proper rotation, y up becomes matplotlib's z up
        g = np.asarray(g, bool)
        shown = np.flip(g.transpose(0, 2, 1), axis=1)
        ax.voxels(shown, facecolors="#4c72b0", edgecolor="#22335588", linewidth=0.2)
        ax.set_title(title, fontsize=8)
        r = g.shape[0]
        ax.set_xlim(0, r), ax.set_ylim(0, r), ax.set_zlim(0, r)  # else each axis stretches to its voxels
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=25, azim=-60)
        ax.set_axis_off()
    save_figure(fig, path)


def voxel_projections(grid: np.ndarray, scale: int = 3) -> np.ndarray:
    """(R, R, R) bool grid (index axes x, y up, z) -> (R s, 3 R s + 4 s, 3) uint8: its silhouettes seen from
    the front (along -z: x right, y up), the side (z right, y up) and the top (x right, z down), dark on
    white. Seconds for a page of them, where matplotlib's ``voxels`` took minutes on the shared CPU."""
    g = np.asarray(grid, bool)
    r = g.shape[0]
    gap = np.zeros((r, 2), bool)
    views = np.concatenate([np.flipud(g.any(2).T), gap, np.flipud(g.any(0)), gap, g.any(1).T], 1)
    img = np.where(views, 55, 255).astype(np.uint8)
    img = np.repeat(np.repeat(img, scale, 0), scale, 1)
    return np.repeat(img[..., None], 3, -1)


#: height (px) of the title strip :func:`titled` puts above a panel (Pillow's default bitmap font is 11 px)
TITLE_HEIGHT = 14


def titled(panel: np.ndarray, title: str) -> np.ndarray:
    """(H, W, 3) uint8 -> (H + TITLE_HEIGHT, W, 3): a white strip above the panel with ``title`` in black
    (cut to the strip's width), so that a tiled page names every column and row it shows."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (panel.shape[1], TITLE_HEIGHT), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 1), title, fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), panel[..., :3]], 0)
