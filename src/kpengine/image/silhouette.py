"""Object mask from a photo: a small encoder-decoder (U-Net shape, plain torch) predicting the silhouette.

The pipeline needs a mask for the silhouette pose refinement (§4.5) when the user gives none;
the paper's ShapeHD front end predicts one among its 2.5D sketches. Here a ResNet encoder (the
viewpoint network's) feeds a decoder that upsamples by 2 per stage and concatenates the
encoder's feature map of the same resolution (skip connections keep the outline sharp at
64-128 px). Loss: binary cross-entropy plus soft Dice (Dice keeps thin parts such as chair
legs, which are few pixels, from being traded away for the background). Measure: IoU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpengine.image.viewpoint import ResNetEncoder


class SilhouetteNet(nn.Module):
    """Image (B, 3, S, S), normalised -> mask logits (B, S, S); S divisible by 2 ** len(widths)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.encoder = ResNetEncoder(3, widths)
        ups = []
        chans = [widths[0], *widths]  # feature widths at full, 1/2, 1/4, ... resolution
        for level in range(len(widths), 0, -1):
            cin = chans[level] + chans[level - 1]  # upsampled decoder features + the skip
            ups.append(
                nn.Sequential(
                    nn.Conv2d(cin, chans[level - 1], 3, 1, 1, bias=False),
                    nn.BatchNorm2d(chans[level - 1]),
                    nn.ReLU(),
                )
            )
        self.ups = nn.ModuleList(ups)
        self.out = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x, return_all=True)  # full, 1/2, 1/4, ...
        y = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], 1))
        return self.out(y)[:, 0]


def silhouette_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice; ``logits`` (B, S, S), ``target`` (B, S, S) in [0, 1]."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2)) + target.sum((1, 2)) + 1)
    return bce + dice.mean()


def mask_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image IoU of boolean masks (B, H, W) -> (B,); two empty masks count as 1."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    inter = (pred & target).sum((-2, -1))
    union = (pred | target).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 4-connected region of a (H, W) bool mask (a photo shows one object)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)
