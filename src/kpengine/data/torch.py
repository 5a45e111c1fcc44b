"""PyTorch adaptors: shapes as tensors, batched by a collate function.

Targets follow the official benchmark: ``saliency`` (N,) is 1 on keypoint points;
``keypoint_index`` (C,) is each semantic id's point index or -1 where absent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class ShapeTensorDataset(torch.utils.data.Dataset):
    """Wraps a :class:`KeypointNetDataset`; an optional ``transform(points, rng)`` augments points."""

    def __init__(
        self,
        dataset: KeypointNetDataset | Sequence[Shape],
        n_classes: int | None = None,
        transform: Transform | None = None,
        seed: int = 0,
    ):
        self.shapes = list(dataset)
        self.n_classes = n_classes if n_classes is not None else getattr(dataset, "n_classes", None)
        if self.n_classes is None:
            self.n_classes = 1 + max(
                (int(s.semantic_ids.max()) for s in self.shapes if len(s.semantic_ids)), default=-1
            )
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        shape = self.shapes[i]
        points = shape.points
        if self.transform is not None:
            rng = np.random.default_rng((self.seed, self.epoch, i))  # reproducible per epoch and item
            points = self.transform(points, rng)
        saliency = np.zeros(len(shape.points), np.int64)
        saliency[shape.point_indices] = 1
        return {
            "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            "saliency": torch.from_numpy(saliency),
            "keypoint_index": torch.from_numpy(shape.index_by_semantic_id(self.n_classes)),
            "model_id": shape.model_id,
            "index": i,
        }


def collate_shapes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep model ids as a list. Clouds must share N (2,048 by default)."""
    sizes = {len(it["points"]) for it in items}
    if len(sizes) > 1:
        raise ValueError(f"cannot batch clouds of different sizes {sorted(sizes)}; resample to one size first")
    out: dict[str, Any] = {k: torch.stack([it[k] for it in items]) for k in ("points", "saliency", "keypoint_index")}
    out["model_id"] = [it["model_id"] for it in items]
    out["index"] = torch.tensor([it["index"] for it in items])
    return out
