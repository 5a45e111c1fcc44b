"""Dual alignment score (DAS) for unsupervised keypoints, as used on KeypointNet.

An unsupervised detector outputs K ordered keypoints per shape. Semantic ids of the
ground truth judge whether index k means the same thing on every shape:

* forward: each predicted keypoint k takes the semantic id of its nearest ground-truth
  keypoint; the score is the agreement of those labels between every ordered pair of
  shapes (a, b), self-pairs included: ``mean_{a,b} mean_k [l_a(k) == l_b(k)]``;
* backward: each ground-truth keypoint takes the index of its nearest prediction; for
  each semantic id, the agreement of those indices over all pairs of its occurrences,
  then the mean over semantic ids.

DAS is the mean of the two (Skeleton Merger, Shi et al. 2021, reports both). Distances
are Euclidean in the model frame, as in that evaluation code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def _pairwise_agreement(labels: np.ndarray) -> float:
    """mean over all ordered pairs (i, j) of [labels[i] == labels[j]], via label counts."""
    _, counts = np.unique(labels, return_counts=True)
    return float(np.sum((counts / len(labels)) ** 2))


def dual_alignment_score(
    predicted: Sequence[np.ndarray], gt_xyz: Sequence[np.ndarray], gt_semantic: Sequence[np.ndarray]
) -> dict[str, float]:
    """``predicted[i]`` (K, 3) ordered keypoints of shape i; ``gt_xyz[i]`` (G_i, 3) with ids ``gt_semantic[i]``."""
    fwd_labels = []
    bwd: dict[int, list[int]] = defaultdict(list)
    for pred, xyz, sem in zip(predicted, gt_xyz, gt_semantic):
        if len(xyz) == 0:
            continue
        d = np.sum((np.asarray(pred)[:, None, :] - np.asarray(xyz)[None, :, :]) ** 2, axis=-1)  # (K, G)
        fwd_labels.append(np.asarray(sem)[np.argmin(d, axis=1)])
        for s, k in zip(np.asarray(sem).tolist(), np.argmin(d, axis=0).tolist()):
            bwd[s].append(k)
    if not fwd_labels:
        return {"forward": float("nan"), "backward": float("nan"), "das": float("nan")}
    fwd = np.stack(fwd_labels)  # (n_shapes, K)
    forward = float(np.mean([_pairwise_agreement(fwd[:, k]) for k in range(fwd.shape[1])]))
    backward = float(np.mean([_pairwise_agreement(np.asarray(v)) for v in bwd.values()]))
    return {"forward": forward, "backward": backward, "das": 0.5 * (forward + backward)}
