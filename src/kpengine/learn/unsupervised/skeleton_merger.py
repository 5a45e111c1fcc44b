"""Skeleton Merger (Shi et al., CVPR 2021): K keypoints learned from reconstruction alone.

A point backbone gives per-point features; a 1x1 convolution turns them into K heatmaps, each
softmax-normalised over the N points, and keypoint k is the heatmap-weighted average of the
input points (a convex combination, so it lies in the cloud's convex hull). Every pair (i < j)
of keypoints is a skeleton segment: S points evenly spaced from keypoint i to keypoint j plus a
learned offset per point (shared by all shapes), and an activation in (0, 1) predicted from the
global (max-pooled) feature says whether the segment is part of the shape. The composite
Chamfer distance of :func:`composite_chamfer` rebuilds the cloud from the active segments and
trains everything without labels.

Departures from the official code (github.com/eliphatfs/SkeletonMerger), each for CPU cost:
a fixed S points per segment (official: 15 to 200, growing with the segment's length), any
registered backbone (official: PointNet++ MSG), and training on a random subset of each cloud
(``train_points``) while prediction uses the whole cloud. docs/unsupervised.md gives the numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kpengine.learn.backbones import build_backbone

#: the largest K the decoder supports: K (K - 1) / 2 segments of S points each must fit in memory
MAX_DECODER_KEYPOINTS = 32
#: weight of the input points no active segment covers, as the official loss (in [-1, 1] units)
MISS_PENALTY = 20.0


def pair_indices(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,), (P,) first and second keypoint of each of the P = k (k - 1) / 2 segments (i < j)."""
    i, j = torch.triu_indices(k, k, offset=1)
    return i, j


class SkeletonMerger(nn.Module):
    """``forward(points (B, N, 3))`` in the unit frame (see :func:`normalize_clouds`) returns a dict:

    * ``weights`` (B, K, N): each keypoint's softmax heatmap over the points;
    * ``keypoints`` (B, K, 3): ``weights @ points``;
    * ``activations`` (B, P): each segment's activation, P = K (K - 1) / 2;
    * ``segments`` (B, P, S, 3): the rebuilt points of each segment.
    """

    def __init__(self, n_keypoints: int = 10, backbone: str = "pointnet", segment_points: int = 32, **backbone_kwargs):
        super().__init__()
        if not 2 <= n_keypoints <= MAX_DECODER_KEYPOINTS:
            raise ValueError(
                f"Skeleton Merger needs 2 to {MAX_DECODER_KEYPOINTS} keypoints (its decoder has one segment per "
                f"pair: {MAX_DECODER_KEYPOINTS * (MAX_DECODER_KEYPOINTS - 1) // 2} at most), got {n_keypoints}"
            )
        if segment_points < 2:
            raise ValueError(f"a segment needs at least 2 points, got {segment_points}")
        self.n_keypoints = n_keypoints
        self.backbone = build_backbone(backbone, **backbone_kwargs)
        c = self.backbone.out_channels
        n_pairs = n_keypoints * (n_keypoints - 1) // 2
        self.heatmap = nn.Conv1d(c, n_keypoints, 1)
        self.activation = nn.Sequential(nn.Linear(c, 256), nn.ReLU(inplace=True), nn.Linear(256, n_pairs))
        self.offsets = nn.Parameter(torch.randn(n_pairs, segment_points, 3) * 0.002)
        i, j = pair_indices(n_keypoints)
        self.register_buffer("first", i, persistent=False)
        self.register_buffer("second", j, persistent=False)
        self.register_buffer("t", torch.linspace(0.0, 1.0, segment_points), persistent=False)

    @property
    def min_points(self) -> int:
        return max(self.backbone.min_points, self.n_keypoints)

    def keypoint_weights(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, N) heatmaps and (B, N, C) per-point features."""
        if points.shape[1] < self.n_keypoints:
            raise ValueError(f"a cloud of {points.shape[1]} points cannot hold {self.n_keypoints} keypoints")
        feats = self.backbone(points)
        return F.softmax(self.heatmap(feats.transpose(1, 2)), dim=-1), feats

    def forward(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        weights, feats = self.keypoint_weights(points)
        keypoints = weights @ points  # (B, K, 3)
        activations = torch.sigmoid(self.activation(feats.max(dim=1).values))  # (B, P)
        a, b = keypoints[:, self.first, None, :], keypoints[:, self.second, None, :]  # (B, P, 1, 3)
        t = self.t[:, None]  # (S, 1)
        segments = a * (1.0 - t) + b * t + self.offsets  # (B, P, S, 3)
        return {"weights": weights, "keypoints": keypoints, "activations": activations, "segments": segments}

    @torch.no_grad()
    def locate(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, 3) keypoints and (B, K) scores: each heatmap's peak weight."""
        weights, _ = self.keypoint_weights(points)
        return weights @ points, weights.max(dim=2).values

    def regularizer(self) -> torch.Tensor:
        return self.backbone.regularizer()


def composite_chamfer(
    cloud: torch.Tensor,
    segments: torch.Tensor,
    activations: torch.Tensor,
    *,
    miss_penalty: float = MISS_PENALTY,
    eps: float = 1e-4,
) -> torch.Tensor:
    """The composite Chamfer distance of Skeleton Merger (the official ``composed_sqrt_chamfer``).

    ``cloud`` (B, N, 3), ``segments`` (B, P, S, 3), ``activations`` (B, P); distances are
    ``sqrt(eps + |x - y|^2)``. Two parts:

    * forward: for each segment, the mean distance of its points to their nearest input
      point, times its activation; mean over shapes, sum over segments divided by P;
    * backward: each input point visits the segments nearest first (by the distance to the
      segment's nearest point) and takes from each a weight ``min(activation, weight left)``
      until its weight 1 is used up: the sum of distance x weight, plus ``miss_penalty`` x the
      weight left over, averaged over points and shapes.

    So an inactive segment costs nothing forward but covers nothing backward.
    """
    b, p, s, _ = segments.shape
    flat = segments.reshape(b, p * s, 3)
    d = torch.sqrt(eps + torch.sum((cloud[:, :, None, :] - flat[:, None, :, :]) ** 2, dim=-1))  # (B, N, P*S)
    d = d.reshape(b, -1, p, s)
    forward = (d.min(dim=1).values.mean(dim=-1) * activations).mean(dim=0).sum() / p
    nearest, order = d.min(dim=3).values.sort(dim=2)  # (B, N, P), nearest segment first
    taken = activations[:, None, :].expand_as(nearest).gather(2, order)
    # weight w_i = min(a_i, 1 - sum_{j<i} w_j) is the increment of the capped cumulative sum
    used = torch.cumsum(taken, dim=2).clamp(max=1.0)
    w = torch.diff(used, dim=2, prepend=torch.zeros_like(used[..., :1]))
    backward = (nearest * w).sum(dim=2).mean()
    missed = ((1.0 - used[..., -1]) * miss_penalty).mean()
    return forward + backward + missed


def keypoint_activity(activations: torch.Tensor, n_keypoints: int) -> torch.Tensor:
    """(B, K): each keypoint's strongest segment activation, from ``activations`` (B, P).

    A keypoint whose segments are all inactive (activity ~ 0) receives no gradient from
    :func:`composite_chamfer` (both parts weigh its segments by their activations), so its
    heatmap stays where it is; on bed this left 3 of 10 keypoints with near-uniform heatmaps
    at the cloud's centroid (docs/unsupervised.md, "The collapse")."""
    i, j = pair_indices(n_keypoints)
    b = activations.shape[0]
    per_kp = activations.new_zeros(b, n_keypoints, n_keypoints)
    per_kp[:, i, j] = activations
    per_kp[:, j, i] = activations
    return per_kp.max(dim=2).values


def liveness_penalty(activations: torch.Tensor, n_keypoints: int, floor: float = 0.5) -> torch.Tensor:
    """mean over shapes and keypoints of ``relu(floor - activity)``: raises the strongest
    segment of a keypoint that has gone dead, so the reconstruction loss reaches it again.
    Zero for a skeleton where every keypoint has one segment at ``floor`` or above."""
    return F.relu(floor - keypoint_activity(activations, n_keypoints)).mean()


def surface_penalty(keypoints: torch.Tensor, cloud: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean over shapes and keypoints of ``sqrt(eps + d^2)``, d the distance from keypoint
    (B, K, 3) to its nearest point of ``cloud`` (B, N, 3): a weighted average of the points
    sits inside the shape unless its heatmap is peaked; this pulls it onto the surface."""
    d = torch.cdist(keypoints, cloud).min(dim=2).values
    return torch.sqrt(eps + d**2).mean()
