"""PointNet segmentation backbone (Qi et al. 2017) with input and feature transforms.

Shared per-point MLPs (1x1 convolutions), a learned 3x3 input alignment and a 64x64
feature alignment regularised towards orthogonality (the "feature transform" of the
KeypointNet benchmark's PointNet), and the global max-pooled feature concatenated back
onto every point.

Optional (``local_features=k``, off in the original network): nine per-point descriptors of
the k nearest neighbours join the aligned coordinates, because a point alone cannot tell a
corner from the face beside it, and keypoints sit on corners, rims and tips:
the offset from the neighbourhood centroid (scaled by 1/0.02), the absolute normal (the
covariance's least eigenvector; absolute, as its sign is arbitrary) and the covariance's
surface variation, linearity and planarity. They are computed from the input, without
gradient, so they need no training data and work on any new shape.
"""

from __future__ import annotations

import torch
from torch import nn

from kpengine.learn.backbones import PointBackbone, register_backbone


def _mlp(channels: list[int]) -> nn.Sequential:
    """1x1 conv + batch norm + ReLU layers over (B, C, N)."""
    layers: list[nn.Module] = []
    for a, b in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv1d(a, b, 1, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class TransformNet(nn.Module):
    """Predicts a (B, k, k) alignment from (B, k, N) inputs, initialised at the identity.
    Hidden sizes scale with ``width`` (1024: the original 1024-512-256)."""

    def __init__(self, k: int, width: int = 1024):
        super().__init__()
        self.k = k
        self.features = _mlp([k, 64, 128, width])
        self.head = nn.Sequential(
            nn.Linear(width, width // 2, bias=False),
            nn.BatchNorm1d(width // 2),
            nn.ReLU(inplace=True),
            nn.Linear(width // 2, width // 4, bias=False),
            nn.BatchNorm1d(width // 4),
            nn.ReLU(inplace=True),
            nn.Linear(width // 4, k * k),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.features(x).amax(dim=2)
        eye = torch.eye(self.k, device=x.device, dtype=x.dtype)
        return self.head(g).view(-1, self.k, self.k) + eye


LOCAL_FEATURES = 9
OFFSET_SCALE = 0.02  # about the neighbour spacing of a 2,048-point cloud of a unit-diagonal shape


@torch.no_grad()
def local_shape_features(points: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, 3) -> (B, 9, N) sign-invariant descriptors of each point's k neighbours."""
    d = torch.cdist(points, points)  # (B, N, N)
    idx = d.topk(k, dim=-1, largest=False).indices  # (B, N, k), the point itself included
    b, n, _ = points.shape
    nb = torch.gather(points, 1, idx.reshape(b, -1, 1).expand(-1, -1, 3)).view(b, n, k, 3)
    centroid = nb.mean(dim=2)
    centred = nb - centroid.unsqueeze(2)
    cov = centred.transpose(2, 3) @ centred / k  # (B, N, 3, 3)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals = evals.clamp_min(0)
    l0, l1, l2 = evals.unbind(-1)
    total = (l0 + l1 + l2).clamp_min(1e-12)
    top = l2.clamp_min(1e-12)
    shape_stats = torch.stack([l0 / total, (l2 - l1) / top, (l1 - l0) / top], dim=-1)
    feats = torch.cat([(points - centroid) / OFFSET_SCALE, evecs[..., 0].abs(), shape_stats], dim=-1)
    return feats.transpose(1, 2).contiguous()


@register_backbone("pointnet")
class PointNet(PointBackbone):
    """PointNet: (B, N, 3) -> (B, N, out_channels); ``regularizer()`` is the feature-transform penalty."""

    min_points = 2

    def __init__(
        self,
        out_channels: int = 128,
        width: int = 1024,
        feature_transform: bool = True,
        input_transform: bool = True,
        local_features: int = 0,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.local_k = local_features
        self.min_points = max(2, local_features)
        self.input_tnet = TransformNet(3, width) if input_transform else None
        self.conv1 = _mlp([3 + (LOCAL_FEATURES if local_features else 0), 64, 64])
        self.feature_tnet = TransformNet(64, width) if feature_transform else None
        self.conv2 = _mlp([64, 64, 128, width])
        # width 1024 gives the original 512-256 head; smaller widths shrink it for tests and quick runs
        self.seg = _mlp([64 + 128 + width, max(width // 2, out_channels), max(width // 4, out_channels), out_channels])

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        self.check_input(points)
        x = points.transpose(1, 2)  # (B, 3, N)
        if self.input_tnet is not None:
            x = torch.bmm(self.input_tnet(x).transpose(1, 2), x)
        if self.local_k:
            x = torch.cat([x, local_shape_features(points, self.local_k)], dim=1)
        x = self.conv1(x)  # (B, 64, N)
        if self.feature_tnet is not None:
            t = self.feature_tnet(x)  # (B, 64, 64)
            x = torch.bmm(t.transpose(1, 2), x)
            eye = torch.eye(t.shape[1], device=t.device, dtype=t.dtype)
            self._regularizer = ((torch.bmm(t, t.transpose(1, 2)) - eye) ** 2).sum(dim=(1, 2)).mean()
        local = x
        h = self.conv2[:3](x)  # (B, 64, N)
        h128 = self.conv2[3:6](h)  # (B, 128, N)
        g = self.conv2[6:](h128).amax(dim=2, keepdim=True)  # (B, width, 1)
        # The segmentation head's first layer sees [local, h128, g] at every point; g is the
        # same at all N points, so its share of that 1x1 convolution is applied once per shape
        # and added as a bias: the same layer and parameters, ~60 % fewer multiply-adds.
        first = self.seg[0]
        n_point = local.shape[1] + h128.shape[1]
        y = nn.functional.conv1d(torch.cat([local, h128], dim=1), first.weight[:, :n_point])
        y = y + torch.matmul(first.weight[:, n_point:, 0], g)  # (width/2, width) @ (B, width, 1)
        return self.seg[1:](y).transpose(1, 2).contiguous()
