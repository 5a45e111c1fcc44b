"""PNG figures with matplotlib (Agg backend, no display needed).

ShapeNet's frame is y-up; matplotlib's 3D axes are z-up, so points are shown rotated by
+90 degrees about x: (x, y, z) -> (x, -z, y), a proper rotation (no mirror image).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kpengine.geometry.transforms import bbox_centre  # noqa: E402
from kpengine.io.atomic import atomic_open  # noqa: E402
from kpengine.viz.palette import semantic_rgba  # noqa: E402

VIEWS: tuple[tuple[float, float], ...] = ((20, -60), (20, 30), (80, -90))


def to_plot_frame(xyz: np.ndarray) -> np.ndarray:
    """(K, 3) y-up model coordinates -> matplotlib's z-up axes, by a proper rotation."""
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    return np.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], axis=1)


def save_figure(fig, path: str | Path) -> None:
    """Write a figure as PNG atomically and close it."""
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_shape_keypoints(
    path: str | Path,
    points: np.ndarray,
    keypoints: np.ndarray,
    semantic_ids: np.ndarray,
    *,
    title: str = "",
    names: dict[int, str] | None = None,
    views: Sequence[tuple[float, float]] = VIEWS,
    predicted: np.ndarray | None = None,
    predicted_ids: np.ndarray | None = None,
) -> None:
    """A point cloud (grey, shaded by height) with keypoints coloured and labelled by semantic id;
    optional predicted keypoints as crosses (coloured by id when ``predicted_ids`` is given)."""
    pts, kps = to_plot_frame(points), to_plot_frame(keypoints)
    fig = plt.figure(figsize=(4.2 * len(views), 4.6))
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, half = bbox_centre(pts), (hi - lo).max() / 2
    for k, (elev, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), k + 1, projection="3d")
        ax.scatter(*pts.T, s=1.5, c=pts[:, 2], cmap="Greys", vmin=lo[2] - 0.5 * (hi[2] - lo[2]), vmax=hi[2], alpha=0.5)
        ax.scatter(*kps.T, s=60, c=semantic_rgba(semantic_ids), edgecolors="black", linewidths=0.6, depthshade=False)
        for p, sid in zip(kps, np.asarray(semantic_ids).tolist()):
            label = names.get(sid, str(sid)) if names else str(sid)
            ax.text(*p, f" {label}", fontsize=7)
        if predicted is not None and len(predicted):
            colour = semantic_rgba(predicted_ids) if predicted_ids is not None else "black"
            ax.scatter(*to_plot_frame(predicted).T, s=70, c=colour, marker="x", linewidths=2.0, depthshade=False)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_zlim(centre[2] - half, centre[2] + half)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_metric_curves(
    path: str | Path, curves: dict[str, tuple[Sequence[float], Sequence[float]]], title: str = ""
) -> None:
    """Metric-vs-geodesic-threshold curves, one line per named curve."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker="o", ms=3, label=name)
    ax.set_xlabel("geodesic threshold (model units)")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)
