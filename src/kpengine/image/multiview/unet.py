"""The 2D network of MvDeCor: a small U-Net giving a per-pixel embedding, and its inputs.

Inputs (``INPUTS``), built from a cached view by :func:`view_inputs`:

* ``rgb``: shaded colour in [-1, 1] (3 channels);
* ``rgbnd``: colour, world normals, and depth as ``(z - z_centre) / radius`` (7 channels);
* ``geometry``: normals and depth only (4 channels).

Off the object every channel is 0. The network (plain torch; torchvision does not load here) is
a U-Net of ``len(widths)`` levels (two 3x3 convolutions, batch norm and ReLU per level, max-pool
down, bilinear up with skip connections) ending in a 1x1 convolution to ``dim`` channels. The
paper uses a ResNet-50 DeepLab-style encoder at 512 px on a GPU; at 96 px on two shared CPU
cores a 3-level U-Net of 16/32/64 channels is what trains in the time (docs/mvdecor.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpengine.io.multiview import ShapeViews

INPUTS: dict[str, int] = {"rgb": 3, "rgbnd": 7, "geometry": 4}


def view_inputs(views: ShapeViews, inputs: str, which: np.ndarray | list[int] | None = None) -> np.ndarray:
    """(V', C, H, W) float32 network input of the views ``which`` (default all)."""
    if inputs not in INPUTS:
        raise ValueError(f"unknown inputs {inputs!r}; choose one of {', '.join(INPUTS)}")
    idx = np.arange(views.n_views) if which is None else np.asarray(which)
    mask = views.mask[idx][:, None].astype(np.float32)
    parts = []
    if inputs in ("rgb", "rgbnd"):
        parts.append(views.color[idx].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)
    if inputs in ("rgbnd", "geometry"):
        parts.append(views.normals[idx].transpose(0, 3, 1, 2).astype(np.float32))
        depth = views.depth[idx].astype(np.float32)
        fg = views.mask[idx]
        z = np.zeros_like(depth)
        for k in range(len(idx)):
            d = depth[k][fg[k]]
            if len(d):
                z[k][fg[k]] = (d - 0.5 * (d.min() + d.max())) / max(float(d.max() - d.min()), 1e-6)
        parts.append(z[:, None])
    return np.concatenate(parts, axis=1) * mask


def position_inputs(views: ShapeViews, which: np.ndarray | list[int] | None = None) -> np.ndarray:
    """(V', 3, H, W) float32 world point seen at each pixel (0 off the object), the channels the
    few-shot stage appends to :func:`view_inputs` (``FewShotConfig.position``): a 2D network
    cannot tell the left from the right corner of a bed from colour, normals and relative depth,
    and these channels give it the where that the point networks get as their input."""
    idx = np.arange(views.n_views) if which is None else np.asarray(which)
    return np.stack([views.location(int(v)).transpose(2, 0, 1) for v in idx]).astype(np.float32)


def widen_input(unet: UNet, extra: int) -> None:
    """Give ``unet``'s first convolution ``extra`` more input channels, appended after the
    existing ones with zero weights, in place: the network's output on the old channels is
    unchanged whatever the new ones hold, so a pretrained network starts fine-tuning as it was."""
    conv = unet.down[0][0]
    wider = nn.Conv2d(conv.in_channels + extra, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=False)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, : conv.in_channels] = conv.weight
    unet.down[0][0] = wider


class _Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """(B, in_channels, H, W) -> (B, dim, H, W); H and W divisible by 2^(levels-1)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (16, 32, 64), dim: int = 32):
        super().__init__()
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.down.append(_Block(c, w))
            c = w
        self.up = nn.ModuleList(_Block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.out = nn.Conv2d(widths[0], dim, 1)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)


class SegmentationNet(nn.Module):
    """A U-Net with a 1x1 head: (B, C_in, H, W) -> (B, n_labels, H, W) logits."""

    def __init__(self, unet: UNet, n_labels: int):
        super().__init__()
        self.unet = unet
        self.head = nn.Conv2d(unet.dim, n_labels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.unet(x)))
