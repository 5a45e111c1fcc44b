"""Viewpoint from one image (You et al. §4.3): azimuth and elevation classified into bins with soft labels.

Labels and decoding follow the official code (SemanticTransfer ``datasets/shapenet.py``):

* **Azimuth**: 24 bins of 15 degrees whose centres sit at ``(k + 0.5) * 15``. A label is split
  linearly between the two bin centres around it; the interpolation runs over 25 centres (the
  extra, 25th centre is 360 + 7.5, the first one again) and the wrap bin is folded back onto
  bin 0, so labels near 0/360 share their mass across the seam.
* **Elevation**: 12 bins whose centres are spread *end to end* over [-90, 90]
  (``-90 + k * 180 / 11``), linear interpolation between the two around the label; no wrap.
* **Loss**: cross-entropy against those soft labels (the official KL divergence differs by the
  label entropy, a constant).
* **Decoding**: azimuth is the circular mean of the bin centres under the predicted
  distribution; elevation the expectation. The **confidence** is the azimuth distribution's
  mean resultant length ``|sum_k p_k exp(i theta_k)|`` in [0, 1]: near 1 for one peak (at most
  cos 7.5° = 0.991 for a label between two bins), low when the mass is split between
  opposite views, which is the typical front/back confusion.

**Half head** (optional, ``half_head=True``; not in the paper): one more logit, which half of
the azimuth circle the view is in (``cos(azimuth) > 0``), trained with a binary cross-entropy
weighted by ``|cos(azimuth)|`` (side views carry no front/back label). Decoding multiplies each
azimuth bin by the half head's probability of its half (a product of experts), which moves the
mass from a wrong front/back mode to the right one. It was added for EPFL cars, whose misses are
front/back flips; docs/benchmarks.md gives its measured effect.

Angles follow :mod:`kpengine.render.cameras` (azimuth 0 looks from +z, degrees). The network
is a small ResNet in plain torch (torchvision does not load here): 64-128 px crops of the object.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpengine.render.cameras import Viewpoint, viewpoint_to_rt

AZIMUTH_BINS = 24
ELEVATION_BINS = 12
_AZ_STEP = 360.0 / AZIMUTH_BINS
_EL_STEP = 180.0 / (ELEVATION_BINS - 1)


def azimuth_centres() -> torch.Tensor:
    """(24,) bin centres in degrees: 7.5, 22.5, ..., 352.5."""
    return (torch.arange(AZIMUTH_BINS, dtype=torch.float32) + 0.5) * _AZ_STEP


def elevation_centres() -> torch.Tensor:
    """(12,) bin centres in degrees, end to end over [-90, 90]."""
    return -90.0 + torch.arange(ELEVATION_BINS, dtype=torch.float32) * _EL_STEP


def azimuth_soft_label(azimuth: torch.Tensor) -> torch.Tensor:
    """Azimuths (B,) in degrees (any range) -> soft labels (B, 24) summing to 1."""
    a = torch.remainder(azimuth.double(), 360.0)
    a = torch.where(a < _AZ_STEP / 2, a + 360.0, a) - _AZ_STEP / 2  # position on the 25 centres
    x = a / _AZ_STEP
    low = torch.clamp(torch.floor(x).long(), 0, AZIMUTH_BINS - 1)
    w_high = (x - low).clamp(0, 1)
    out = torch.zeros(azimuth.shape[0], AZIMUTH_BINS + 1, dtype=torch.float64, device=azimuth.device)
    out.scatter_(1, low[:, None], (1 - w_high)[:, None])
    out.scatter_add_(1, (low + 1)[:, None], w_high[:, None])
    out[:, 0] += out[:, -1]  # the wrap bin is bin 0
    return out[:, :-1].float()


def elevation_soft_label(elevation: torch.Tensor) -> torch.Tensor:
    """Elevations (B,) in degrees, clipped to [-90, 90] -> soft labels (B, 12) summing to 1."""
    x = (elevation.double().clamp(-90.0, 90.0) + 90.0) / _EL_STEP
    low = torch.clamp(torch.floor(x).long(), 0, ELEVATION_BINS - 2)
    w_high = (x - low).clamp(0, 1)
    out = torch.zeros(elevation.shape[0], ELEVATION_BINS, dtype=torch.float64, device=elevation.device)
    out.scatter_(1, low[:, None], (1 - w_high)[:, None])
    out.scatter_add_(1, (low + 1)[:, None], w_high[:, None])
    return out.float()


def decode_azimuth(prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities (B, 24) -> azimuth (B,) in [0, 360) and confidence (B,) (mean resultant length)."""
    rad = torch.deg2rad(azimuth_centres()).to(prob)
    c, s = (prob * torch.cos(rad)).sum(-1), (prob * torch.sin(rad)).sum(-1)
    az = torch.remainder(torch.rad2deg(torch.atan2(s, c)), 360.0)
    return torch.where(az >= 360.0, az - 360.0, az), torch.sqrt(c * c + s * s)


def azimuth_mode(prob: np.ndarray, k: int) -> float:
    """Azimuth (degrees, [0, 360)) of the mode at bin ``k`` of one distribution ``prob`` (24,): the circular
    mean of bin ``k`` and its two neighbours (a sub-bin position, and no pull from a far mode)."""
    idx = np.array([k - 1, k, k + 1]) % AZIMUTH_BINS
    ang = np.deg2rad((idx + 0.5) * _AZ_STEP)
    w = np.asarray(prob, np.float64)[idx]
    return float(np.rad2deg(np.arctan2((w * np.sin(ang)).sum(), (w * np.cos(ang)).sum())) % 360.0)


def mode_mass(prob: np.ndarray, azimuth: float) -> float:
    """Probability of the three bins around ``azimuth`` (degrees): a mode's share of one distribution (24,)."""
    k = int(np.floor(np.mod(azimuth, 360.0) / _AZ_STEP)) % AZIMUTH_BINS
    return float(np.asarray(prob, np.float64)[np.array([k - 1, k, k + 1]) % AZIMUTH_BINS].sum())


def azimuth_hypotheses(prob: np.ndarray, n: int, separation: float = 45.0) -> list[tuple[float, float, str]]:
    """Up to ``n`` starting azimuths from one azimuth distribution ``prob`` (24,), as ``(azimuth, mass, kind)``.

    Near-symmetric objects (bathtubs, beds, cars) put their mass on two opposite modes, and the
    circular mean of such a distribution lies between them, near neither. So the hypotheses are
    the distribution's modes, largest first, each followed by its half turn (``kind`` ``"mode"``,
    ``"half turn"``): the arg-max bin (:func:`azimuth_mode`), then the arg-max outside
    ``separation`` degrees of every azimuth already taken, and so on. A half turn within
    ``separation`` of a taken azimuth is skipped. ``mass``: :func:`mode_mass` at the azimuth.
    Raises ValueError for ``n < 1`` or a distribution that is not 24 finite non-negative numbers."""
    p = np.asarray(prob, np.float64)
    if n < 1:
        raise ValueError(f"need at least one azimuth hypothesis, got {n}")
    if p.shape != (AZIMUTH_BINS,) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"an azimuth distribution is {AZIMUTH_BINS} finite non-negative numbers, got shape {p.shape}")
    p = p / p.sum()
    centres = (np.arange(AZIMUTH_BINS) + 0.5) * _AZ_STEP
    out: list[tuple[float, float, str]] = []

    def free(az: float) -> bool:
        return all(angle_difference(az, a) >= separation for a, _, _ in out)

    left = p.copy()
    while len(out) < n and left.max() > 0:
        k = int(left.argmax())
        az = azimuth_mode(p, k)
        left[angle_difference(centres, az) < separation] = 0  # this mode's neighbourhood is taken
        if not free(az):
            continue
        out.append((az, mode_mass(p, az), "mode"))
        turn = (az + 180.0) % 360.0
        if len(out) < n and free(turn):
            out.append((turn, mode_mass(p, turn), "half turn"))
            left[angle_difference(centres, turn) < separation] = 0
    return out


def decode_elevation(prob: torch.Tensor) -> torch.Tensor:
    """Probabilities (B, 12) -> expected elevation (B,) in degrees."""
    return (prob * elevation_centres().to(prob)).sum(-1)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a (projected) identity shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


class ResNetEncoder(nn.Module):
    """(B, C, S, S) -> features (B, widths[-1], S / 2**len(widths), same): a stem and one block per stage."""

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, cin = [], widths[0]
        for w in widths:
            stages.append(BasicBlock(cin, w, 2))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.widths = widths

    def forward(self, x: torch.Tensor, return_all: bool = False):
        x = self.stem(x)
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats if return_all else x


class ViewpointNet(nn.Module):
    """Image crop (B, 3, S, S), normalised -> logits ``{"azimuth": (B, 24), "elevation": (B, 12)}``.

    The head keeps the spatial layout (a 1x1 reduction then a fully connected layer over the
    final S/16 grid) rather than global pooling: front and back views of a car differ mainly in
    *where* things are, and pooling throws that away.
    """

    def __init__(
        self,
        size: int = 64,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        dropout: float = 0.3,
        half_head: bool = False,
    ):
        super().__init__()
        self.size = size
        self.half_head = half_head
        self.encoder = ResNetEncoder(3, widths)
        grid = size // 2 ** len(widths)
        self.reduce = nn.Sequential(nn.Conv2d(widths[-1], 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * grid * grid, 256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, AZIMUTH_BINS + ELEVATION_BINS + int(half_head)),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits: ``azimuth`` (B, 24), ``elevation`` (B, 12) and, with the half head, ``half`` (B,)."""
        out = self.head(self.reduce(self.encoder(x)))
        a, e = AZIMUTH_BINS, AZIMUTH_BINS + ELEVATION_BINS
        logits = {"azimuth": out[:, :a], "elevation": out[:, a:e]}
        if self.half_head:
            logits["half"] = out[:, e]
        return logits


def half_label(azimuth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Azimuths (B,) degrees -> half-head target (B,) (1 where cos(azimuth) > 0) and its weight |cos| (B,)."""
    c = torch.cos(torch.deg2rad(azimuth.float()))
    return (c > 0).float(), c.abs()


def with_half(prob: torch.Tensor, half_logit: torch.Tensor) -> torch.Tensor:
    """Azimuth probabilities (B, 24) times the half head's probability of each bin's half, renormalised."""
    positive = torch.cos(torch.deg2rad(azimuth_centres())).to(prob) > 0  # (24,) bins with cos > 0
    p_pos = torch.sigmoid(half_logit.float())[:, None]
    q = prob * torch.where(positive, p_pos, 1.0 - p_pos)
    return q / q.sum(-1, keepdim=True).clamp_min(1e-12)


def mirror_average(logits: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Logits of crops and of their left-right mirror images -> logits of the averaged probabilities.

    A mirror image's azimuth is ``-azimuth``: its distribution is the original's reversed (bin k
    <-> bin 23 - k); elevation and the half (``cos(-a) = cos(a)``) are unchanged by mirroring."""
    pa = 0.5 * (F.softmax(logits["azimuth"], -1) + F.softmax(mirrored["azimuth"], -1).flip(-1))
    pe = 0.5 * (F.softmax(logits["elevation"], -1) + F.softmax(mirrored["elevation"], -1))
    out = {"azimuth": torch.log(pa.clamp_min(1e-12)), "elevation": torch.log(pe.clamp_min(1e-12))}
    if "half" in logits:
        ph = 0.5 * (torch.sigmoid(logits["half"]) + torch.sigmoid(mirrored["half"]))
        out["half"] = torch.logit(ph.clamp(1e-6, 1 - 1e-6))
    return out


def viewpoint_loss(
    logits: dict[str, torch.Tensor],
    azimuth: torch.Tensor,
    elevation: torch.Tensor | None = None,
    half_weight: float = 0.0,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Soft-label cross-entropy; ``elevation`` entries that are NaN (unknown, e.g. EPFL cars) add nothing;
    with a half head, ``half_weight`` times its |cos|-weighted binary cross-entropy. ``smoothing`` moves
    that share of each azimuth label's mass evenly onto all 24 bins (label smoothing, Szegedy et al.
    2016): a bound on how sure the network can learn to be of the views of a few training instances."""
    target = azimuth_soft_label(azimuth)
    if smoothing:
        target = (1.0 - smoothing) * target + smoothing / AZIMUTH_BINS
    loss = -(target * F.log_softmax(logits["azimuth"], -1)).sum(-1).mean()
    if half_weight and "half" in logits:
        target, weight = half_label(azimuth)
        bce = F.binary_cross_entropy_with_logits(logits["half"], target, weight=weight)
        loss = loss + half_weight * bce
    if elevation is not None:
        known = torch.isfinite(elevation)
        if known.any():
            el = elevation_soft_label(elevation[known])
            loss = loss - (el * F.log_softmax(logits["elevation"][known], -1)).sum(-1).mean()
    return loss


@torch.no_grad()
def decode(logits: dict[str, torch.Tensor], use_half: bool = True) -> dict[str, torch.Tensor]:
    """Logits -> ``azimuth`` (B,) [0, 360), ``elevation`` (B,), ``confidence`` (B,) in [0, 1].

    With a ``half`` logit (and ``use_half``) the azimuth distribution is first weighted by it (:func:`with_half`)."""
    prob = F.softmax(logits["azimuth"].float(), -1)
    if use_half and "half" in logits:
        prob = with_half(prob, logits["half"])
    az, conf = decode_azimuth(prob)
    el = decode_elevation(F.softmax(logits["elevation"].float(), -1))
    return {"azimuth": az, "elevation": el, "confidence": conf}


def angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute circular difference of angles in degrees, in [0, 180]."""
    d = np.abs(np.mod(np.asarray(a, np.float64) - np.asarray(b, np.float64), 360.0))
    return np.minimum(d, 360.0 - d)


def rotation_geodesic(pred: Viewpoint, gt: Viewpoint) -> float:
    """Geodesic distance (degrees) between the two camera rotations: arccos((tr(R1^T R2) - 1) / 2)."""
    r1, _ = viewpoint_to_rt(Viewpoint(pred.azimuth, pred.elevation, 1.0, pred.theta))
    r2, _ = viewpoint_to_rt(Viewpoint(gt.azimuth, gt.elevation, 1.0, gt.theta))
    c = (np.trace(r1.T @ r2) - 1.0) / 2.0
    return math.degrees(math.acos(float(np.clip(c, -1.0, 1.0))))


def viewpoint_metrics(
    pred_az: np.ndarray,
    gt_az: np.ndarray,
    pred_el: np.ndarray | None = None,
    gt_el: np.ndarray | None = None,
    pred_theta: np.ndarray | None = None,
    gt_theta: np.ndarray | None = None,
) -> dict[str, float]:
    """Median azimuth / elevation error and Acc@30° (rotation geodesic < 30°), as in Render for CNN / §4.3.

    Without elevations (or thetas) both sides use 0, so the geodesic reduces to the azimuth error.
    """
    pred_az, gt_az = np.asarray(pred_az, np.float64), np.asarray(gt_az, np.float64)
    n = len(gt_az)
    zeros = np.zeros(n)
    pe = zeros if pred_el is None or gt_el is None else np.asarray(pred_el, np.float64)
    ge = zeros if pred_el is None or gt_el is None else np.asarray(gt_el, np.float64)
    pt = zeros if pred_theta is None or gt_theta is None else np.asarray(pred_theta, np.float64)
    gt_t = zeros if pred_theta is None or gt_theta is None else np.asarray(gt_theta, np.float64)
    geo = np.array(
        [
            rotation_geodesic(Viewpoint(pred_az[i], pe[i], 1.0, pt[i]), Viewpoint(gt_az[i], ge[i], 1.0, gt_t[i]))
            for i in range(n)
        ]
    )
    az_err = angle_difference(pred_az, gt_az)
    out = {
        "n": float(n),
        "median_azimuth_error": float(np.median(az_err)) if n else float("nan"),
        "median_geodesic_error": float(np.median(geo)) if n else float("nan"),
        "acc_30": float(np.mean(geo < 30.0)) if n else float("nan"),
        "flips_150": float(np.mean(az_err > 150.0)) if n else float("nan"),
    }
    if pred_el is not None and gt_el is not None:
        out["median_elevation_error"] = float(np.median(np.abs(pe - ge))) if n else float("nan")
    return out
