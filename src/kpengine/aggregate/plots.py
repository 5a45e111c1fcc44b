"""Figures of an aggregation: fidelity maps on models and the t-SNE / DBSCAN cluster plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kpengine.viz.figures import plot_shape_keypoints
from kpengine.viz.palette import semantic_rgba


def plot_fidelity(path: str | Path, points: np.ndarray, error: np.ndarray, kp_points: np.ndarray, ids: np.ndarray,
                  title: str = "") -> None:  # fmt: skip
    """Cloud (N, 3) coloured by fidelity error (N,) (dark = low), recovered keypoints labelled by id."""
    import matplotlib.pyplot as plt

    from kpengine.viz.figures import save_figure, to_plot_frame

    pts, kps = to_plot_frame(points), to_plot_frame(points[kp_points])
    fig = plt.figure(figsize=(9, 4.6))
    for k, (elev, azim) in enumerate(((20, -60), (20, 120))):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        sc = ax.scatter(*pts.T, s=3, c=error, cmap="viridis_r", vmin=error.min(), vmax=error.max())
        ax.scatter(*kps.T, s=60, c=semantic_rgba(ids), edgecolors="black", depthshade=False)
        for p, sid in zip(kps, ids.tolist()):
            ax.text(*p, f" {sid}", fontsize=7)
        ax.view_init(elev=elev, azim=azim)
        ax.set_box_aspect(np.ptp(pts, axis=0) + 1e-9)
        ax.set_axis_off()
    fig.colorbar(sc, ax=fig.axes, shrink=0.6, label="fidelity error F (smoothed)")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_clusters(path: str | Path, xy: np.ndarray, labels: np.ndarray, title: str = "") -> None:
    """t-SNE coordinates (n, 2) coloured by semantic id (n,); candidates without one (-1) as grey crosses.

    With ``ids="tsne"`` the ids are DBSCAN's clusters of this very plane and -1 its noise; with
    ``ids="classes"`` they come from the annotators' numberings and -1 marks rejected candidates.
    """
    import matplotlib.pyplot as plt

    from kpengine.viz.figures import save_figure

    fig, ax = plt.subplots(figsize=(6, 5.5))
    noise = labels < 0
    ax.scatter(*xy[noise].T, s=12, c="0.6", marker="x", label=f"no id ({int(noise.sum())})")
    ax.scatter(*xy[~noise].T, s=10, c=semantic_rgba(labels[~noise]))
    for c in np.unique(labels[~noise]):
        ax.annotate(str(c), xy[labels == c].mean(axis=0), fontsize=9, weight="bold")
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or "candidate keypoints: t-SNE of embeddings, coloured by id", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    save_figure(fig, path)


__all__ = ["plot_clusters", "plot_fidelity", "plot_shape_keypoints"]
