"""DGCNN segmentation backbone (Wang et al. 2019): EdgeConv on a k-NN graph rebuilt per layer.

Each EdgeConv forms edge features [x_j - x_i, x_i] over the k nearest neighbours (in the
current feature space), applies a shared MLP and max-pools over neighbours. The k-NN search
is a dense (B, N, N) distance matrix: fine for 2,048 points, quadratic beyond.
"""

from __future__ import annotations

import torch
from torch import nn

from kpengine.learn.backbones import PointBackbone, register_backbone


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, N, k) of each point's k nearest neighbours (itself included) in x (B, C, N)."""
    inner = -2 * x.transpose(1, 2) @ x
    sq = x.pow(2).sum(dim=1, keepdim=True)
    neg_d = -sq.transpose(1, 2) - inner - sq  # (B, N, N)
    return neg_d.topk(k=k, dim=-1).indices


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, N) -> (B, 2C, N, k): [x_j - x_i, x_i] for each of the k neighbours j of i."""
    b, c, n = x.shape
    idx = knn(x, k)  # (B, N, k)
    xt = x.transpose(1, 2)  # (B, N, C)
    nb = torch.gather(xt, 1, idx.reshape(b, -1, 1).expand(-1, -1, c)).view(b, n, k, c)
    centre = xt.unsqueeze(2).expand(-1, -1, k, -1)
    return torch.cat([nb - centre, centre], dim=-1).permute(0, 3, 1, 2).contiguous()


class EdgeConv(nn.Module):
    """MLP on [x_j - x_i, x_i], max over the k neighbours j.

    The 1x1 convolution is linear, so W [x_j - x_i, x_i] = W1 x_j + (W2 - W1) x_i: both terms are
    computed once per point and only their sum is formed per edge, k times fewer multiply-adds than
    convolving the (B, 2C, N, k) edge tensor (same parameters and outputs; see ``reference``).
    """

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.k = k
        self.mlp = nn.Sequential(nn.Conv2d(2 * c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n = x.shape
        w = self.mlp[0].weight[:, :, 0, 0]  # (C_out, 2C)
        w_nb, w_centre = w[:, :c], w[:, c:]
        nb_term = torch.einsum("oc,bcn->bno", w_nb, x)  # (B, N, C_out)
        centre_term = torch.einsum("oc,bcn->bon", w_centre - w_nb, x)  # (B, C_out, N)
        idx = knn(x, self.k)  # (B, N, k)
        gathered = torch.gather(nb_term, 1, idx.reshape(b, -1, 1).expand(-1, -1, nb_term.shape[2]))
        edges = gathered.view(b, n, self.k, -1).permute(0, 3, 1, 2) + centre_term.unsqueeze(-1)  # (B, C_out, N, k)
        return self.mlp[2](self.mlp[1](edges)).amax(dim=-1)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The textbook computation on the full edge tensor (for tests)."""
        return self.mlp(edge_features(x, self.k)).amax(dim=-1)


@register_backbone("dgcnn")
class DGCNN(PointBackbone):
    """Three EdgeConvs, a global feature, and a per-point MLP: (B, N, 3) -> (B, N, out_channels)."""

    def __init__(self, out_channels: int = 128, k: int = 20, width: int = 1024):
        super().__init__()
        self.out_channels = out_channels
        self.min_points = k
        self.ec1 = EdgeConv(3, 64, k)
        self.ec2 = EdgeConv(64, 64, k)
        self.ec3 = EdgeConv(64, 64, k)
        self.glob = nn.Sequential(nn.Conv1d(192, width, 1, bias=False), nn.BatchNorm1d(width), nn.LeakyReLU(0.2))
        self.seg = nn.Sequential(
            nn.Conv1d(192 + width, 256, 1, bias=False),
            nn.BatchNorm1d(256),
            nn.LeakyReLU(0.2),
            nn.Conv1d(256, out_channels, 1, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.LeakyReLU(0.2),
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        self.check_input(points)
        x = points.transpose(1, 2)
        x1 = self.ec1(x)
        x2 = self.ec2(x1)
        x3 = self.ec3(x2)
        local = torch.cat([x1, x2, x3], dim=1)  # (B, 192, N)
        g = self.glob(local).amax(dim=2, keepdim=True)
        return self.seg(torch.cat([local, g.expand(-1, -1, x.shape[2])], dim=1)).transpose(1, 2).contiguous()
