"""Symmetric low-rank keypoints, after Fernandez-Labrador et al. (ECCV 2020), "Unsupervised
learning of category-specific symmetric 3D keypoints from point sets".

What it adds to Skeleton Merger: a **category shape model**. Every shape's K keypoints are one
deformation of a learned mean arrangement, ``mean + sum_m c_m basis_m`` (rank M, the
coefficients c predicted from the cloud's global feature), so keypoint k is the same row of
the same model on every shape: the order is consistent by construction rather than by what a
reconstruction happens to prefer. And a **symmetry prior**: keypoints come in mirror pairs
across the category's reflection plane (plus one keypoint on the plane when K is odd), as
KeypointNet's own reflection annotations do. No decoder: training is a handful of distances
per keypoint (no K(K-1)/2 segments), so it is much cheaper on a CPU.

The losses, all in the unit frame (bounding-box centre at 0, largest half-extent 1):

* **surface** (:func:`surface_term`): each keypoint's distance to its nearest input point;
* **coverage** (:func:`coverage_term`): the keypoints' extent along each axis against the
  cloud's (keypoints that reach the shape's extremes, where people put them: corners, tips);
* **separation** (:func:`separation_term`): hinge on keypoints closer than ``min_gap``.

Departures from the paper, each for this setting: ShapeNet clouds are aligned, so the plane is
one of the frame's axis planes through the bounding-box centre, chosen without labels by
:func:`reflection_axis` (the paper estimates pose and plane); the basis is learned directly
(the paper's NRSfM-style factorisation also learns a rotation per shape).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpengine.learn.backbones import build_backbone

#: axis names as the config spells them; "none" = no symmetry prior
AXES: tuple[str, ...] = ("x", "y", "z")


def reflection_axis(clouds: Sequence[np.ndarray]) -> tuple[str, list[float]]:
    """The frame axis whose mirror (``p[axis] -> -p[axis]`` about the bounding-box centre) best
    matches the clouds themselves: median over clouds of the mean distance from each mirrored
    point to its nearest original point, per axis; the axis with the smallest wins.

    ``clouds``: (N_i, 3) arrays. Label-free: only the geometry is read. On KeypointNet this picks
    x for bed and airplane and z for bathtub, the axes of their annotated reflection pairs
    (docs/unsupervised.md)."""
    from scipy.spatial import cKDTree

    scores = np.zeros((len(clouds), 3))
    for i, cloud in enumerate(clouds):
        p = np.asarray(cloud, np.float64)
        lo, hi = p.min(axis=0), p.max(axis=0)
        p = (p - (lo + hi) / 2) / max(float((hi - lo).max()) / 2, 1e-12)
        tree = cKDTree(p)
        for axis in range(3):
            m = p.copy()
            m[:, axis] *= -1
            scores[i, axis] = tree.query(m)[0].mean()
    med = np.median(scores, axis=0)
    return AXES[int(np.argmin(med))], [float(v) for v in med]


class SymmetricKeypoints(nn.Module):
    """``forward(points (B, N, 3))`` in the unit frame returns ``{"keypoints": (B, K, 3),
    "coefficients": (B, M)}``.

    Keypoint order: the first P = K // 2 keypoints are free, the next P are their mirrors
    (keypoint P + i mirrors keypoint i), and with K odd the last lies on the plane. With
    ``axis`` None all K are free (the prior switched off, for the ablation)."""

    def __init__(
        self,
        n_keypoints: int = 10,
        backbone: str = "pointnet",
        rank: int = 8,
        axis: str | None = "x",
        **backbone_kwargs,
    ):
        super().__init__()
        if n_keypoints < 2:
            raise ValueError(f"symmetric keypoints need at least 2 keypoints, got {n_keypoints}")
        if rank < 1:
            raise ValueError(f"the shape basis needs rank at least 1, got {rank}")
        if axis is not None and axis not in AXES:
            raise ValueError(f"symmetry axis must be one of {', '.join(AXES)} or none, got {axis!r}")
        self.n_keypoints, self.rank = n_keypoints, rank
        self.axis = None if axis is None else AXES.index(axis)
        self.n_pairs = 0 if axis is None else n_keypoints // 2
        n_free = n_keypoints if axis is None else self.n_pairs + n_keypoints % 2
        self.backbone = build_backbone(backbone, **backbone_kwargs)
        c = self.backbone.out_channels
        self.coefficients = nn.Sequential(nn.Linear(c, 256), nn.ReLU(inplace=True), nn.Linear(256, rank))
        gen = torch.Generator().manual_seed(0)
        mean = torch.rand(n_free, 3, generator=gen) * 1.2 - 0.6
        if self.axis is not None:  # a pair starts apart from its mirror (at 0 both coincide and cannot separate)
            side = mean[: self.n_pairs, self.axis]
            mean[: self.n_pairs, self.axis] = torch.sign(side + 1e-6) * (0.2 + side.abs())
        self.mean = nn.Parameter(mean)
        self.basis = nn.Parameter(torch.randn(rank, n_free, 3, generator=gen) * 0.01)

    @property
    def min_points(self) -> int:
        return max(self.backbone.min_points, self.n_keypoints)

    def arrange(self, free: torch.Tensor) -> torch.Tensor:
        """(B, F, 3) free keypoints -> (B, K, 3): pairs, their mirrors, the on-plane one."""
        if self.axis is None:
            return free
        flip = torch.ones(3, dtype=free.dtype, device=free.device)
        flip[self.axis] = -1.0
        pairs = free[:, : self.n_pairs]
        parts = [pairs, pairs * flip]
        if self.n_keypoints % 2:
            on_plane = torch.ones(3, dtype=free.dtype, device=free.device)
            on_plane[self.axis] = 0.0
            parts.append(free[:, self.n_pairs :] * on_plane)
        return torch.cat(parts, dim=1)

    def forward(self, points: torch.Tensor) -> dict[str, torch.Tensor]:
        if points.shape[1] < self.n_keypoints:
            raise ValueError(f"a cloud of {points.shape[1]} points cannot hold {self.n_keypoints} keypoints")
        feats = self.backbone(points)  # (B, N, C)
        coeff = self.coefficients(feats.max(dim=1).values)  # (B, M)
        free = self.mean + torch.einsum("bm,mfc->bfc", coeff, self.basis)
        return {"keypoints": self.arrange(free), "coefficients": coeff}

    @torch.no_grad()
    def locate(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, 3) keypoints and (B, K) scores in (0, 1]: ``exp(-d / 0.05)`` of each keypoint's
        distance d to the cloud (a keypoint off the surface is less certain)."""
        kp = self(points)["keypoints"]
        d = torch.cdist(kp, points).min(dim=2).values
        return kp, torch.exp(-d / 0.05)

    def regularizer(self) -> torch.Tensor:
        return self.backbone.regularizer()


def surface_term(keypoints: torch.Tensor, cloud: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """mean of ``sqrt(eps + d^2)``, d = distance of each keypoint (B, K, 3) to ``cloud`` (B, N, 3)."""
    d = torch.cdist(keypoints, cloud).min(dim=2).values
    return torch.sqrt(eps + d**2).mean()


def coverage_term(keypoints: torch.Tensor, cloud: torch.Tensor) -> torch.Tensor:
    """mean over shapes and axes of ``|extent(keypoints) - extent(cloud)|``, extent = max - min
    along the axis: zero when the keypoints reach the cloud's extremes on every axis."""
    kp_ext = keypoints.max(dim=1).values - keypoints.min(dim=1).values
    pc_ext = cloud.max(dim=1).values - cloud.min(dim=1).values
    return (kp_ext - pc_ext).abs().mean()


def separation_term(keypoints: torch.Tensor, min_gap: float) -> torch.Tensor:
    """mean over shapes and keypoint pairs i < j of ``relu(min_gap - |k_i - k_j|)``."""
    k = keypoints.shape[1]
    i, j = torch.triu_indices(k, k, offset=1)
    d = torch.sqrt(1e-8 + ((keypoints[:, i] - keypoints[:, j]) ** 2).sum(-1))
    return F.relu(min_gap - d).mean()
