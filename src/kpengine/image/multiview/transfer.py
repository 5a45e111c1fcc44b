"""The MvDeCor figure: pixels of one shape's view mapped to another shape's view by nearest
embedding, the source's colours carried over, and low-similarity pixels marked.

The source's "texture" is a colour coding of the surface position (the world point seen, scaled
to the shape's bounding box, as RGB): both shapes are in the same canonical frame, so a transfer
that respects semantics keeps colours where the target has the matching part, and the target's
own coding (shown beside it) is what a perfect geometric transfer would give.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kpengine.io.multiview import ShapeViews

#: pixels whose best (centred) cosine similarity is below this are marked: the best of ~3,000
#: source pixels in 32 dimensions is above 0.9 for 90 % of pixels even with random weights
LOW_SIMILARITY = 0.95
MARK = np.array([0, 0, 0], np.uint8)


def position_colours(views: ShapeViews, view: int) -> np.ndarray:
    """(H, W, 3) uint8: the world point seen, scaled per axis to the range the shape's views see
    (so the colours of two views of one shape agree); white off the shape."""
    loc, mask = views.location(view), views.mask[view]
    seen = np.concatenate([views.location(v)[views.mask[v]] for v in range(views.n_views)])
    lo, hi = seen.min(0), seen.max(0)
    out = np.full((*mask.shape, 3), 255, np.uint8)
    out[mask] = np.round(255 * np.clip((loc[mask] - lo) / np.maximum(hi - lo, 1e-6), 0, 1)).astype(np.uint8)
    return out


@torch.no_grad()
def nearest_embedding(
    emb_src: torch.Tensor, mask_src: np.ndarray, emb_tgt: torch.Tensor, mask_tgt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each target pixel, the flat index of the source foreground pixel of highest cosine
    similarity and that similarity, after removing the mean embedding of both views' pixels (a
    component every pixel shares: without it every cosine is above 0.8, even for random weights):
    (H, W) int64 (-1 off the target), (H, W) float (0 off it).
    ``emb_*`` (D, H, W), ``mask_*`` (H, W) bool."""
    d = emb_src.shape[0]
    src_idx = np.flatnonzero(mask_src.reshape(-1))
    tgt_idx = np.flatnonzero(mask_tgt.reshape(-1))
    s = emb_src.reshape(d, -1)[:, src_idx]
    t = emb_tgt.reshape(d, -1)[:, tgt_idx]
    mean = torch.cat([s, t], dim=1).mean(dim=1, keepdim=True)  # the part every pixel shares
    s, t = F.normalize(s - mean, dim=0), F.normalize(t - mean, dim=0)
    sim = t.T @ s  # (T, S)
    best, arg = sim.max(dim=1)
    h, w = mask_tgt.shape
    index = np.full(h * w, -1, np.int64)
    simil = np.zeros(h * w, np.float32)
    index[tgt_idx] = src_idx[arg.numpy()]
    simil[tgt_idx] = best.numpy()
    return index.reshape(h, w), simil.reshape(h, w)


def transferred_colours(
    src_colours: np.ndarray, index: np.ndarray, similarity: np.ndarray, low: float = LOW_SIMILARITY
) -> np.ndarray:
    """(H, W, 3) uint8 target image: each target pixel the colour of its source pixel, ``MARK``
    where the similarity is below ``low``, white off the target."""
    out = np.full((*index.shape, 3), 255, np.uint8)
    on = index >= 0
    out[on] = src_colours.reshape(-1, 3)[index[on]]
    out[on & (similarity < low)] = MARK
    return out


def transfer_figure(
    path: str | Path,
    rows: list[tuple[str, ShapeViews, int, ShapeViews, int, torch.Tensor, torch.Tensor]],
    low: float = LOW_SIMILARITY,
) -> None:
    """One row per (title, source views, source view, target views, target view, source embedding
    (D, H, W), target embedding (D, H, W)): source render, source coding, target render, transfer,
    target's own coding. Written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 5, figsize=(12.5, 2.7 * len(rows)), squeeze=False)
    heads = ["source view", "source: position colours", "target view (other shape)", "transferred", "target's own"]
    for r, (title, vs, a, vt, b, es, et) in enumerate(rows):
        src_col = position_colours(vs, a)
        index, sim = nearest_embedding(es, vs.mask[a], et, vt.mask[b])
        low_frac = float((sim[vt.mask[b]] < low).mean())
        q = np.quantile(sim[vt.mask[b]], [0.1, 0.5, 0.9])
        print(f"{title!r}: similarity quantiles 10/50/90 % = {q.round(3).tolist()}")
        panels = [
            vs.color[a],
            src_col,
            vt.color[b],
            transferred_colours(src_col, index, sim, low),
            position_colours(vt, b),
        ]
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(heads[c], fontsize=9)
        axes[r, 0].set_ylabel(title, fontsize=9)
        axes[r, 3].set_xlabel(f"black: similarity < {low} ({100 * low_frac:.0f} %)", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def point_embeddings(net: torch.nn.Module, views: ShapeViews, inputs: str, points: np.ndarray) -> np.ndarray:
    """(N, D) unit per-point descriptors of a cloud (N, 3): each view's unit per-pixel embeddings
    voted onto the point the pixel sees (mean over pixels and views; a point no view sees takes
    its nearest seen point's)."""
    from kpengine.image.multiview.backproject import point_probabilities, vote
    from kpengine.image.multiview.unet import view_inputs

    emb = F.normalize(net.eval()(torch.from_numpy(view_inputs(views, inputs))), dim=1).numpy()
    votes, counts = vote(views.index, emb, len(points))
    mean = point_probabilities(points, votes, counts, views.model_id)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-9)


def nearest_labels(query: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray, k: int = 5) -> np.ndarray:
    """(N,) label of each query descriptor (N, D): the most similar-weighted label among its ``k``
    nearest bank descriptors (M, D) by cosine, bank labels (M,)."""
    sim = query @ bank.T
    nearest = np.argpartition(-sim, k, axis=1)[:, :k]
    rows = np.arange(len(query))[:, None]
    score = np.zeros((len(query), int(bank_labels.max()) + 1))
    np.add.at(score, (np.broadcast_to(rows, nearest.shape), bank_labels[nearest]), sim[rows, nearest])
    return score.argmax(axis=1)


def prototype_keypoints(query: np.ndarray, prototypes: dict[int, np.ndarray]) -> dict[int, int]:
    """{id: index of the query point (N, D) most similar to the id's prototype (D,)}."""
    return {s: int(np.argmax(query @ p)) for s, p in prototypes.items()}
