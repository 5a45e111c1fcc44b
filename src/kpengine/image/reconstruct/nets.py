"""The reconstruction networks and their losses (paper §4.2; MarrNet / ShapeHD), in plain torch.

* :class:`SketchNet`: RGB (B, 3, S, S) -> 2.5D sketches: mask logits (B, S, S), depth (B, S, S),
  camera-frame normals (B, 3, S, S). The silhouette network's encoder-decoder
  (``image.silhouette``) with five output channels instead of one.
* :class:`VoxelNet`: sketches (B, 5, S, S) -> occupancy logits (B, R, R, R) in the canonical frame
  (``geometry.voxelize``): a 2D ResNet encoder, a fully connected bottleneck to (C, 4, 4, 4),
  then 3D transposed convolutions doubling the side up to R (32 by default; 64 and 128, the
  paper's size, add stages), the last one straight to the occupancy logits.
* :class:`NaturalnessNet`: a 3D critic (B, R, R, R) -> (B,) scores; trained as a WGAN-GP critic
  on real shapes' voxels against the voxel network's outputs (ShapeHD), its negated score is the
  naturalness loss of a reconstruction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kpengine.image.silhouette import SilhouetteNet, silhouette_loss
from kpengine.image.viewpoint import ResNetEncoder


class SketchNet(SilhouetteNet):
    """Image (B, 3, S, S), normalised -> ``{"mask": (B, S, S) logits, "depth": (B, S, S),
    "normals": (B, 3, S, S) unit}``."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__(widths)
        self.out = nn.Conv2d(widths[0], 5, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x, return_all=True)
        y = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], 1))
        y = self.out(y)
        return {"mask": y[:, 0], "depth": y[:, 1] / 4.0, "normals": F.normalize(y[:, 2:5], dim=1, eps=1e-6)}


def sketch_loss(
    pred: dict[str, torch.Tensor], mask: torch.Tensor, depth: torch.Tensor, normals: torch.Tensor
) -> torch.Tensor:
    """Silhouette BCE + Dice, and mean squared errors of depth (scaled by 4, as the voxel input) and
    normals on the object's pixels (MarrNet's losses)."""
    on = (mask > 0.5).float()
    n_on = on.sum().clamp(min=1.0)
    d = ((pred["depth"] - depth) * 4.0) ** 2
    n = ((pred["normals"] - normals) ** 2).sum(1)
    return silhouette_loss(pred["mask"], mask) + (d * on).sum() / n_on + (n * on).sum() / n_on


@torch.no_grad()
def sketch_errors(
    pred: dict[str, torch.Tensor], mask: torch.Tensor, depth: torch.Tensor, normals: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-item errors (B,): mask IoU, mean absolute depth error (model units) and mean normal angle
    (degrees) over the pixels both masks cover."""
    pm, tm = pred["mask"] > 0, mask > 0.5
    inter = (pm & tm).sum((1, 2)).float()
    union = (pm | tm).sum((1, 2)).float()
    both = (pm & tm).float()
    cnt = both.sum((1, 2)).clamp(min=1.0)
    derr = ((pred["depth"] - depth).abs() * both).sum((1, 2)) / cnt
    cos = (pred["normals"] * normals).sum(1).clamp(-1.0, 1.0)
    ang = (torch.rad2deg(torch.acos(cos)) * both).sum((1, 2)) / cnt
    return {"mask_iou": torch.where(union > 0, inter / union.clamp(min=1), 1.0), "depth_mae": derr, "normal_deg": ang}


class VoxelNet(nn.Module):
    """Sketches (B, 5, S, S) -> occupancy logits (B, R, R, R); R = 4 * 2 ** k (32, 64, 128)."""

    def __init__(
        self,
        resolution: int = 32,
        size: int = 64,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        latent: int = 256,
        channels: int = 64,
    ):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"voxel resolution must be a power of two >= 8, got {resolution}")
        self.resolution = resolution
        self.encoder = ResNetEncoder(5, widths)
        side = size // 2 ** len(widths)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(widths[-1] * side * side, latent), nn.ReLU(), nn.Linear(latent, channels * 64)
        )
        self.channels = channels
        ups, c, r = [], channels, 4
        while r < resolution // 2:
            out = max(c // 2, 8)
            ups += [nn.ConvTranspose3d(c, out, 4, 2, 1, bias=False), nn.BatchNorm3d(out), nn.ReLU()]
            c, r = out, r * 2
        self.ups = nn.Sequential(*ups)
        # the last doubling goes straight to one channel: a feature map at full resolution (8 channels
        # and a 3x3x3 convolution) cost 4x the time of the whole rest on 2 CPU cores (157 s an epoch)
        self.out = nn.ConvTranspose3d(c, 1, 4, 2, 1)

    def forward(self, sketches: torch.Tensor) -> torch.Tensor:
        z = self.fc(self.encoder(sketches)).view(-1, self.channels, 4, 4, 4)
        return self.out(self.ups(z))[:, 0]


def voxel_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 2.0) -> torch.Tensor:
    """Binary cross-entropy of occupancy (B, R, R, R); occupied voxels weigh ``pos_weight`` (they are
    5-15 % of a grid; unweighted, thin parts vanish first)."""
    w = torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=w)


class NaturalnessNet(nn.Module):
    """3D critic: occupancy in [0, 1] (B, R, R, R) -> scores (B,) (higher = more like real shapes).
    No batch normalisation (the gradient penalty is per item)."""

    def __init__(self, resolution: int = 32, channels: int = 16):
        super().__init__()
        layers, c, r = [], 1, resolution
        while r > 4:
            out = channels if c == 1 else min(c * 2, 128)
            layers += [nn.Conv3d(c, out, 4, 2, 1), nn.LeakyReLU(0.2)]
            c, r = out, r // 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * 64, 1)

    def forward(self, occ: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(occ[:, None]).flatten(1))[:, 0]


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: mean (|grad critic(x)| - 1)^2 at random points x between real and fake (B, R, R, R)."""
    a = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
