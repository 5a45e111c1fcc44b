"""Training batches: kpengine's shape tensors plus each shape's symmetric relabellings.

Relabellings (metrics/relabel.rotational_relabellings) are computed once per shape when
the dataset is built, not per step: they depend on the clean cloud only, and jitter or
translation leaves point indices unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.data.torch import ShapeTensorDataset, Transform, collate_shapes
from kpengine.errors import DataError
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.metrics.relabel import rotational_relabellings


class KeypointBatches(ShapeTensorDataset):
    """Items add ``labellings`` (R, C): the identity labelling first, then rotational ones; with
    ``saliency_sigma`` > 0 also ``saliency_soft`` (N,): exp(-d^2 / 2 sigma^2) for d the geodesic
    distance to the nearest keypoint (computed once, like the relabellings)."""

    def __init__(
        self,
        dataset: KeypointNetDataset,
        n_classes: int,
        transform: Transform | None = None,
        seed: int = 0,
        saliency_sigma: float = 0.0,
    ):
        if len(dataset) == 0:
            raise DataError(
                f"{dataset.category.name}/{dataset.split} has no usable shapes under {dataset.root}: "
                f"{dataset.problem_summary()}"
            )
        super().__init__(dataset, n_classes=n_classes, transform=transform, seed=seed)
        self.labellings = [np.stack(rotational_relabellings(s, n_classes)) for s in self.shapes]
        self.saliency_soft = [soft_saliency(s, saliency_sigma) for s in self.shapes] if saliency_sigma > 0 else None

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = super().__getitem__(i)
        item["labellings"] = torch.from_numpy(self.labellings[i])
        if self.saliency_soft is not None:
            item["saliency_soft"] = torch.from_numpy(self.saliency_soft[i])
        return item


def soft_saliency(shape: Shape, sigma: float) -> np.ndarray:
    """(N,) float32 target: 1 on keypoints, Gaussian in the geodesic distance around them, 0 past 3 sigma."""
    out = np.zeros(len(shape.points), np.float32)
    sources = np.unique(shape.point_indices)
    if len(sources) == 0:
        return out
    d = GeodesicGraph(shape.points, protocol="strict").from_sources(sources, limit=3 * sigma).min(axis=0)
    near = np.isfinite(d) & (d <= 3 * sigma)
    out[near] = np.exp(-(d[near] ** 2) / (2 * sigma**2))
    out[sources] = 1.0
    return out


def collate_keypoint_batches(items: list[dict[str, Any]]) -> dict[str, Any]:
    """collate_shapes plus ``labellings`` (B, R_max, C), padded by repeating the identity
    (a repeated labelling cannot change a minimum over labellings)."""
    out = collate_shapes(items)
    r = max(len(it["labellings"]) for it in items)
    padded = []
    for it in items:
        lab = it["labellings"]
        if len(lab) < r:
            lab = torch.cat([lab, lab[:1].expand(r - len(lab), -1)])
        padded.append(lab)
    out["labellings"] = torch.stack(padded)
    if all("saliency_soft" in it for it in items):
        out["saliency_soft"] = torch.stack([it["saliency_soft"] for it in items])
    return out
