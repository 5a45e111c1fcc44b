"""PointConv segmentation backbone (Wu, Qi & Fuxin, CVPR 2019), in plain torch.

PointConv is the network KeypointNet's aggregation uses for its embedding. A PointConv
layer is a continuous convolution over a point's k nearest neighbours: the kernel weight at
each neighbour is an MLP of its offset ``W(dp)``, and each neighbour's contribution is
scaled by its inverse density ``S`` (an MLP of a Gaussian kernel density estimate), so that
densely sampled regions do not dominate. We use the paper's memory-efficient form (§3.3):
``out = Linear(flatten((S * F)^T @ M(dp)))`` with ``M`` an MLP to ``weight_channels``
columns, F the neighbours' features with their offsets, instead of materialising a
``C_in x C_out`` kernel per neighbour.

The segmentation network is an encoder of three PointConv set abstractions (farthest point
sampling to N/4, N/16, N/64 centres; the fractions rather than fixed counts let the same
weights run on the 256 points the aggregation trains on and the 2,048 it embeds) and a
decoder of three PointDeconv layers (3-NN inverse-distance interpolation onto the finer
level, concatenation with its skip features, then a PointConv over that level's own
points). Neighbour offsets are divided by the mean neighbour distance of their
neighbourhood, so the weight MLP sees the same range at every sampling density; the
density bandwidth is likewise the neighbourhood's mean distance. Choices that depart from
the official code (TensorFlow, fixed 0.1 bandwidth, fixed sample counts) are these two
relative scales, made for the change of density between training and embedding.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from kpengine.learn.backbones import PointBackbone, register_backbone
from kpengine.learn.backbones.pointnet2 import (
    DebiasedBatchNorm1d,
    farthest_point_sample,
    gather_points,
    square_distance,
)


def knn(xyz: torch.Tensor, centres: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances and indices (B, S, k) of the k nearest points of xyz (B, N, 3) to centres (B, S, 3).

    On CPU a k-d tree per cloud (2,048 points: ~100x faster than the all-pairs matrix that
    dominated the network's time); elsewhere the all-pairs distances and ``topk``. Indices
    carry no gradient; distances are recomputed from the gathered points.
    """
    k = min(k, xyz.shape[1])
    if xyz.device.type == "cpu":
        pts, cen = xyz.detach().numpy(), centres.detach().numpy()
        idx = np.stack([cKDTree(p).query(c, k=k)[1].reshape(len(c), k) for p, c in zip(pts, cen)])
        nb = torch.from_numpy(idx.astype(np.int64))
        d2 = (gather_points(xyz, nb) - centres.unsqueeze(2)).square().sum(-1)
        return d2, nb
    return square_distance(centres, xyz).topk(k, dim=-1, largest=False)


class PointConv(nn.Module):
    """One PointConv layer: (B, N, 3), (B, N, C) -> (B, S, 3), (B, S, C_out) over k neighbours per centre.

    ``fraction`` of the points become centres by farthest point sampling (``None``: every
    point is a centre, as in the decoder).
    """

    def __init__(self, in_channels: int, out_channels: int, k: int = 16, fraction: float | None = None,
                 weight_channels: int = 16):  # fmt: skip
        super().__init__()
        self.k, self.fraction = k, fraction
        self.weight_net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, weight_channels), nn.ReLU())
        self.density_net = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid())
        self.linear = nn.Linear((in_channels + 3) * weight_channels, out_channels)
        self.norm = DebiasedBatchNorm1d(out_channels)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, _ = xyz.shape
        if self.fraction is None:
            centres = xyz
        else:
            centres = gather_points(xyz, farthest_point_sample(xyz, max(1, int(round(n * self.fraction)))))
        d2, nb = knn(xyz, centres, self.k)  # (B, S, k)
        scale = (d2.clamp_min(0) + 1e-12).sqrt().mean(dim=-1, keepdim=True).clamp_min(1e-6)  # (B, S, 1)
        rel = (gather_points(xyz, nb) - centres.unsqueeze(2)) / scale.unsqueeze(-1)  # (B, S, k, 3)
        # inverse density: Gaussian KDE of each point over its own k neighbours, bandwidth their mean distance
        pd2, _ = knn(xyz, xyz, self.k)
        h = (pd2.clamp_min(0) + 1e-12).sqrt().mean(dim=-1, keepdim=True).clamp_min(1e-6)
        density = torch.exp(-pd2 / (2 * h.square())).mean(dim=-1)  # (B, N)
        inv = 1.0 / density
        inv = gather_points(inv.unsqueeze(-1), nb)  # (B, S, k, 1)
        inv = inv / inv.amax(dim=2, keepdim=True)
        s = self.density_net(inv)  # (B, S, k, 1)
        f = rel if feats is None else torch.cat([rel, gather_points(feats, nb)], dim=-1)  # (B, S, k, C+3)
        w = self.weight_net(rel)  # (B, S, k, M)
        out = (f * s).transpose(2, 3) @ w  # (B, S, C+3, M)
        out = self.linear(out.flatten(2))  # (B, S, C_out)
        out = torch.relu(self.norm(out.transpose(1, 2))).transpose(1, 2)
        return centres, out


def interpolate(xyz: torch.Tensor, coarse_xyz: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """Features (B, S, C) at coarse_xyz (B, S, 3) -> (B, N, C) at xyz, inverse-distance over 3 neighbours."""
    d, nb = knn(coarse_xyz, xyz, 3)
    w = 1.0 / (d + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    return (gather_points(coarse, nb) * w.unsqueeze(-1)).sum(2)


@register_backbone("pointconv")
class PointConvNet(PointBackbone):
    """PointConv encoder (N/4, N/16, N/64 centres) and PointDeconv decoder; (B, N, 3) -> (B, N, out_channels)."""

    min_points = 64

    def __init__(self, out_channels: int = 128, k: int = 16, widths: tuple[int, int, int] = (64, 128, 256)):
        super().__init__()
        self.out_channels = out_channels
        c1, c2, c3 = widths
        self.enc1 = PointConv(0, c1, k, 0.25)
        self.enc2 = PointConv(c1, c2, k, 0.25)
        self.enc3 = PointConv(c2, c3, k, 0.25)
        self.dec3 = PointConv(c2 + c3, c2, k)
        self.dec2 = PointConv(c1 + c2, c1, k)
        self.dec1 = PointConv(c1, c1, k)
        self.head = nn.Linear(c1, out_channels)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        self.check_input(points)
        x1, f1 = self.enc1(points, None)
        x2, f2 = self.enc2(x1, f1)
        x3, f3 = self.enc3(x2, f2)
        _, g2 = self.dec3(x2, torch.cat([f2, interpolate(x2, x3, f3)], dim=-1))
        _, g1 = self.dec2(x1, torch.cat([f1, interpolate(x1, x2, g2)], dim=-1))
        _, g0 = self.dec1(points, interpolate(points, x1, g1))
        return self.head(g0)
