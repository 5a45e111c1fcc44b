"""A direct 2D keypoint detector: one heatmap per semantic id, with visibility (the 2D competitor).

The pipeline goes image -> 3D shape and pose -> projected keypoints. The obvious alternative
skips 3D: a fully convolutional network that puts, for every semantic id of the category, a
heatmap over the image and says whether that keypoint is visible (as the stacked-hourglass /
U-Net keypoint detectors do). It learns from the same training renders, so the two are compared
on equal data.

* :class:`HeatmapNet`: the silhouette network's encoder-decoder (U-Net shape, plain torch) with
  ``K`` output channels, plus a visibility logit per id from the pooled bottleneck.
* Loss: per visible keypoint, cross-entropy of the spatial softmax of its channel against a
  Gaussian (``sigma`` px) around the true position; binary cross-entropy of every id's
  visibility (an id the shape lacks counts as not visible).
* :func:`decode`: each channel's arg-max, refined to sub-pixel by the vertex of the parabola
  through the arg-max and its two neighbours along x and along y (on the log-probabilities).

Coordinates: pixel centres are whole numbers (``(0, 0)`` is the centre of the top-left pixel), as
in :mod:`kpengine.image.types`; a heatmap of side ``s`` over an image ``W x H`` maps its pixel
``j`` to ``u = (j + 0.5) W / s - 0.5``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpengine.image.silhouette import SilhouetteNet


class HeatmapNet(SilhouetteNet):
    """Image (B, 3, S, S), normalised -> ``{"heatmap": (B, K, S, S) logits, "visible": (B, K) logits}``."""

    def __init__(self, n_ids: int, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__(widths)
        self.n_ids = n_ids
        self.out = nn.Conv2d(widths[0], n_ids, 1)
        self.visible = nn.Linear(widths[-1], n_ids)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x, return_all=True)
        y = feats[-1]
        vis = self.visible(y.mean((2, 3)))
        for up, skip in zip(self.ups, reversed(feats[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], 1))
        return {"heatmap": self.out(y), "visible": vis}


def gaussian_targets(uv: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Keypoints ``uv`` (B, K, 2) in heatmap pixels -> target distributions (B, K, size, size) summing to 1."""
    grid = torch.arange(size, dtype=torch.float32, device=uv.device)
    gx = torch.exp(-((grid - uv[..., :1]) ** 2) / (2 * sigma**2))  # (B, K, size)
    gy = torch.exp(-((grid - uv[..., 1:]) ** 2) / (2 * sigma**2))
    t = gy[..., :, None] * gx[..., None, :]
    return t / t.sum((-2, -1), keepdim=True).clamp_min(1e-12)


def heatmap_loss(
    out: dict[str, torch.Tensor], uv: torch.Tensor, visible: torch.Tensor, sigma: float = 1.5, vis_weight: float = 0.1
) -> torch.Tensor:
    """``uv`` (B, K, 2) in heatmap pixels (anything where not visible), ``visible`` (B, K) bool.

    Mean over visible keypoints of the spatial cross-entropy, plus ``vis_weight`` x the mean
    visibility BCE over every id."""
    logits = out["heatmap"]
    b, k, h, w = logits.shape
    logp = F.log_softmax(logits.reshape(b, k, h * w), -1)
    target = gaussian_targets(torch.where(visible[..., None], uv, torch.zeros_like(uv)), h, sigma).reshape(b, k, -1)
    ce = -(target * logp).sum(-1)  # (B, K)
    n = visible.sum().clamp_min(1)
    loc = (ce * visible).sum() / n
    vis = F.binary_cross_entropy_with_logits(out["visible"], visible.float())
    return loc + vis_weight * vis


def decode(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap logits (B, K, H, W) -> ``uv`` (B, K, 2) sub-pixel heatmap coordinates and the peak's probability (B, K).

    Sub-pixel step: along each axis, the vertex of the parabola through the log-probabilities at the
    arg-max ``c`` and its neighbours ``l``, ``r``: offset ``(l - r) / (2 (l - 2c + r))``, clamped to
    half a pixel; no step at the border or where the three are not concave."""
    b, k, h, w = logits.shape
    logp = F.log_softmax(logits.reshape(b, k, h * w), -1).reshape(b, k, h, w)
    flat = logp.reshape(b, k, -1)
    peak, idx = flat.max(-1)
    y, x = idx // w, idx % w

    def offset(l_val: torch.Tensor, c: torch.Tensor, r_val: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        den = l_val - 2 * c + r_val
        ok = inside & (den < 0)
        off = torch.where(ok, 0.5 * (l_val - r_val) / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
        return off.clamp(-0.5, 0.5)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        yy, xx = yy.clamp(0, h - 1), xx.clamp(0, w - 1)
        return flat.gather(-1, (yy * w + xx)[..., None])[..., 0]

    dx = offset(at(y, x - 1), peak, at(y, x + 1), (x > 0) & (x < w - 1))
    dy = offset(at(y - 1, x), peak, at(y + 1, x), (y > 0) & (y < h - 1))
    uv = torch.stack([x.float() + dx, y.float() + dy], -1)
    return uv, peak.exp()


def heatmap_to_image(uv: np.ndarray, heatmap_size: int, width: int, height: int) -> np.ndarray:
    """Heatmap pixel coordinates (..., 2) -> image pixel coordinates of a ``width x height`` image squashed to the
    heatmap's square (pixel centres whole numbers on both sides)."""
    uv = np.asarray(uv, np.float64)
    scale = np.array([width / heatmap_size, height / heatmap_size])
    return (uv + 0.5) * scale - 0.5


def image_to_heatmap(uv: np.ndarray, heatmap_size: int, width: int, height: int) -> np.ndarray:
    """The inverse of :func:`heatmap_to_image`."""
    uv = np.asarray(uv, np.float64)
    scale = np.array([heatmap_size / width, heatmap_size / height])
    return (uv + 0.5) * scale - 0.5


@torch.no_grad()
def predict_keypoints(net: HeatmapNet, image: np.ndarray, size: int, ids: list[int] | None = None) -> dict:
    """(H, W, 3) uint8 photo -> ``{"<sid>": {"uv": [u, v], "visible": bool, "confidence": p}}`` for every id
    (``ids``: the semantic id of each channel, default ``0..K-1``); ``confidence`` is the visibility
    probability, ``peak`` the heatmap's probability at its arg-max."""
    from kpengine.image.crops import whole_image_input

    net.eval()
    h, w = image.shape[:2]
    out = net(whole_image_input(image, size))
    uv, peak = decode(out["heatmap"])
    pvis = torch.sigmoid(out["visible"])[0].numpy()
    uv_img = heatmap_to_image(uv[0].numpy(), out["heatmap"].shape[-1], w, h)
    ids = list(range(net.n_ids)) if ids is None else ids
    return {
        str(sid): {
            "uv": [round(float(uv_img[c, 0]), 2), round(float(uv_img[c, 1]), 2)],
            "visible": bool(pvis[c] > 0.5),
            "confidence": round(float(pvis[c]), 4),
            "peak": round(float(peak[0, c]), 4),
        }
        for c, sid in enumerate(ids)
    }
