"""Baselines the pipeline is measured against that still go through 3D: a fixed mean-template shape.

CSM-like (Kulkarni et al., canonical surface mapping): one template shape per category, the
category's mean annotated keypoints placed on it, posed by the same viewpoint estimate and
silhouette refinement as the pipeline. It separates what the pipeline gains from finding the
right *shape* (retrieval) from what it gains from the *pose*.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kpengine.data.shape import Shape
from kpengine.errors import DataError


def mean_keypoints(shapes: list[Shape], min_share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per semantic id, the mean position over the shapes that have it, for ids at least ``min_share`` of
    the shapes have (rarer ids are parts few shapes own). Returns ``(xyz (K, 3), ids (K,))``, ids sorted.

    Shapes are in the category's canonical frame (KeypointNet's clouds and ShapeNet's
    ``model_normalized`` are aligned per category), so positions are averaged as they are."""
    if not shapes:
        raise DataError("no shapes to average keypoints over")
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for s in shapes:
        seen = set()
        for sid, xyz in zip(s.semantic_ids.tolist(), np.asarray(s.keypoints, np.float64)):
            if sid in seen:  # an id twice on one shape: its first position
                continue
            seen.add(sid)
            sums[sid] = sums.get(sid, np.zeros(3)) + xyz
            counts[sid] = counts.get(sid, 0) + 1
    ids = sorted(sid for sid, n in counts.items() if n >= min_share * len(shapes))
    if not ids:
        raise DataError(f"no semantic id is on {min_share:.0%} of the {len(shapes)} shapes")
    return np.stack([sums[i] / counts[i] for i in ids]), np.asarray(ids, np.int64)


def mean_template(shapes: list[Shape], min_share: float = 0.5) -> Shape:
    """The template: the shape whose own keypoints lie nearest the mean keypoints (mean distance over the
    ids it has, among the frequent ids), carrying the mean keypoints instead of its own."""
    xyz, ids = mean_keypoints(shapes, min_share)
    where = {int(i): k for k, i in enumerate(ids)}
    best, best_d = None, np.inf
    for s in shapes:
        d = [np.linalg.norm(p - xyz[where[i]]) for i, p in zip(s.semantic_ids.tolist(), s.keypoints) if i in where]
        # a shape lacking most frequent ids is a poor template however close its few keypoints are
        score = float(np.mean(d)) * len(ids) / max(len(d), 1) if d else np.inf
        if score < best_d:
            best, best_d = s, score
    assert best is not None
    nearest = np.argmin(((best.points[None].astype(np.float64) - xyz[:, None]) ** 2).sum(-1), axis=1)
    return dataclasses.replace(
        best,
        keypoints=xyz.astype(np.float32),
        semantic_ids=ids,
        point_indices=nearest.astype(np.int64),
        snap_distance=np.zeros(len(ids)),
    )
