"""One annotated shape as kpengine hands it to metrics, networks and pictures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from kpengine.categories import Category
from kpengine.io.annotations import ModelAnnotation, Symmetries


@dataclass
class Shape:
    """A model's point cloud with its ground-truth keypoints.

    Arrays: ``points`` (N, 3) float32 in the model's frame; ``colors`` (N, 3) uint8 or
    None; ``keypoints`` (K, 3) float32 positions; ``semantic_ids`` (K,) int64;
    ``point_indices`` (K,) int64 into ``points``. ``snap_distance`` (K,) is the distance
    from each keypoint to the cloud point it was snapped to, set when the cloud was
    sampled from the mesh (no PCD) and zero-filled otherwise.
    """

    model_id: str
    category: Category
    points: np.ndarray
    colors: np.ndarray | None
    keypoints: np.ndarray
    semantic_ids: np.ndarray
    point_indices: np.ndarray
    symmetries: Symmetries
    annotation: ModelAnnotation
    source: Literal["pcd", "mesh"]
    snap_distance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mesh_path: Path | None = None

    @property
    def n_points(self) -> int:
        return len(self.points)

    def index_by_semantic_id(self, n_classes: int) -> np.ndarray:
        """(n_classes,) point index of each semantic id, -1 where the model lacks the id.

        When an id appears twice on a model (it happens in KeypointNet), the last one wins,
        as in the official benchmark loader.
        """
        out = np.full(n_classes, -1, dtype=np.int64)
        keep = self.semantic_ids < n_classes
        out[self.semantic_ids[keep]] = self.point_indices[keep]
        return out
