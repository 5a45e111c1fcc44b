"""The image side of the joint embedding: a CNN regressing an object crop into the shape space, its
training crops (renders on real photo backgrounds) and the crops of photos at inference.

"Purification" (Li, Su et al. §5): the network sees synthetic images with clutter (real photo
backgrounds, random light, colour, blur and noise from ``kpengine render-views``, then kornia's
colour jitter, blur, grey and erasing here) and must land on the clean shape's point in the space,
so it learns to look through what is not the shape.

Crops: training views are cut around the object's mask box with a random margin in ``margins``
(the box's longer side times 1.1-1.8: render sets frame the object at 0.55-0.9 of the image), so a
photo needs no mask: it is taken as the crop the paper assumes (object centred, whole frame), and
a mask, when given, only tightens the crop to ``PHOTO_MARGIN`` around its box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kpengine.image.crops import crop_square, normalise, resample, to_tensor
from kpengine.image.renders import mask_box
from kpengine.image.viewpoint import ResNetEncoder

STORE_MARGIN = 1.8  # stored training crops: 1.8 x the box's longer side; batches zoom into them
PHOTO_MARGIN = 1.3  # a photo with a mask: its crop, 1.3 x the box's longer side


class ImageEmbeddingNet(nn.Module):
    """Crop (B, 3, S, S), normalised -> point in the shape space (B, dim): a small ResNet, global
    average pooling (the target is the shape, not where it sits), two fully connected layers, and
    the map from standardised units back to the space: ``centre + scale * head`` (``centre`` (dim,)
    and ``scale`` () are buffers saved with the weights).

    Why the standardisation: the Sammon points of a category lie on a thin shell (bed: every
    shape 0.63-0.82 from the centre, nearest neighbours 0.76 apart against 1.01 for a median pair),
    so an unscaled head that starts at the centre (as the first runs did, output spread 0.035 of
    the targets' 0.50 after 15 epochs) stays there; with ``scale`` the per-coordinate spread of
    the targets is one unit of the head's output.
    """

    def __init__(
        self,
        dim: int = 128,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        size: int = 64,
        centre: torch.Tensor | None = None,
        scale: float = 1.0,
    ):
        super().__init__()
        self.size = size
        self.encoder = ResNetEncoder(3, tuple(widths))
        # batch norm before the ReLU: without it every hidden unit died within the first epoch (the
        # output froze at the targets' mean, training loss 0.5114 for 7 epochs on bathtubs)
        self.head = nn.Sequential(
            nn.Linear(widths[-1], 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, dim)
        )
        self.register_buffer("centre", torch.zeros(dim) if centre is None else torch.as_tensor(centre).float())
        self.register_buffer("scale", torch.tensor(float(scale)))
        with torch.no_grad():  # start near the space's centre, not far off
            self.head[-1].weight.mul_(0.05)
            self.head[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x).mean(dim=(2, 3))
        return self.centre + self.scale * self.head(f)


def standardisation(coords: np.ndarray) -> tuple[torch.Tensor, float]:
    """Shape points (N, dim) -> their centre (dim,) and the root mean square of the centred
    coordinates (one scale for all of them: a per-coordinate scale would change the distances
    that retrieval ranks by)."""
    c = np.asarray(coords, np.float64)
    centre = c.mean(0)
    return torch.from_numpy(centre).float(), float(np.sqrt(((c - centre) ** 2).mean()))


def embedding_loss(
    pred: torch.Tensor,
    rows: torch.Tensor,
    points: torch.Tensor,
    *,
    spread2: float = 1.0,
    rank_weight: float = 0.0,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Loss of predicted points (B, dim) for shapes ``rows`` (B,) long, indexes into ``points`` (G, dim)
    (the gallery the rank term competes over).

    ``L2 / spread2 + rank_weight * CE``, both means over the batch, with ``spread2`` the shape points'
    mean squared distance from their centre (so that predicting the centre costs about 1):

    * L2 = |pred - points[row]|^2, the paper's regression into the space;
    * CE = -log softmax_j(-|pred - points_j|^2 / (temperature * spread2))[row]: the true shape must be
      nearer than every other gallery shape, which is what retrieval ranks by (an NCA-style loss
      against fixed class points; a measured departure from the paper's plain L2, see
      docs/understanding.md "Shape retrieval").
    """
    loss = (pred - points[rows]).pow(2).sum(1).mean() / spread2
    if rank_weight:
        d2 = (pred[:, None, :] - points[None]).pow(2).sum(-1)
        loss = loss + rank_weight * nn.functional.cross_entropy(-d2 / (temperature * spread2), rows)
    return loss


def store_crops(images: np.ndarray, masks: np.ndarray, size: int) -> torch.Tensor:
    """Render views (N, H, W, 3) uint8 with masks (N, H, W) -> stored crops (N, 3, size, size) uint8."""
    out = np.stack([crop_square(im, mask_box(m), STORE_MARGIN, size) for im, m in zip(images, masks)])
    return to_tensor(out)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Kornia photometric augmentation of (B, 3, S, S) in [0, 1] (torch's global RNG: the run reseeds it)."""
    import kornia.augmentation as K

    aug = nn.Sequential(
        K.ColorJiggle(0.3, 0.3, 0.3, 0.05, p=0.8),
        K.RandomGrayscale(p=0.1),
        K.RandomGaussianBlur((5, 5), (0.1, 1.5), p=0.3),
        K.RandomErasing(scale=(0.02, 0.1), p=0.2),
    )
    return aug(x).clamp(0.0, 1.0)


def training_batch(
    crops: torch.Tensor,
    rows: torch.Tensor,
    idx: list[int],
    size: int,
    margins: tuple[float, float],
    shift: float,
    flip: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented inputs (B, 3, size, size) and their shapes' rows (B,) long. ``flip``: mirror half the
    crops left-right (a mirrored view of a left-right symmetric shape is a view of the same shape)."""
    i = torch.as_tensor(idx)
    b = len(i)
    margin = margins[0] + (margins[1] - margins[0]) * torch.rand(b)
    zoom = margin / STORE_MARGIN
    offset = shift * (2 * torch.rand(b, 2) - 1)
    mirror = torch.rand(b) < 0.5 if flip else None
    x = augment(resample(crops[i], size, zoom, offset, mirror))
    return normalise(x), rows[i]


def eval_inputs(crops: torch.Tensor, size: int, margin: float = 1.4) -> torch.Tensor:
    """Stored crops -> network inputs at one fixed margin, no randomness."""
    return normalise(resample(crops, size, margin / STORE_MARGIN))


def photo_input(image: np.ndarray, size: int, mask: np.ndarray | None = None) -> torch.Tensor:
    """A photo (H, W, 3) uint8 -> (1, 3, size, size): the whole frame squared (the centred crop the paper
    assumes; the longer side kept, the shorter padded by repeating its border), or the square of
    ``PHOTO_MARGIN`` around the mask's box."""
    h, w = image.shape[:2]
    box = mask_box(mask) if mask is not None and mask.any() else (0.0, 0.0, float(w), float(h))
    margin = PHOTO_MARGIN if mask is not None and mask.any() else 1.0
    crop = crop_square(image, box, margin, size)
    return normalise(to_tensor(crop[None]))


@torch.no_grad()
def embed(model: nn.Module, inputs: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Network inputs (N, 3, S, S) -> points (N, dim) float64 (run on the model's device)."""
    model.eval()
    dev = next(model.parameters()).device
    out = [model(inputs[i : i + batch].to(dev)).cpu() for i in range(0, len(inputs), batch)]
    return torch.cat(out).double().numpy()


def distances_to(points: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """(Q, dim) queries, (N, dim) shapes -> (Q, N) Euclidean distances."""
    q = np.asarray(points, np.float64)
    c = np.asarray(coords, np.float64)
    return np.sqrt(np.clip((q * q).sum(1)[:, None] + (c * c).sum(1)[None] - 2 * q @ c.T, 0, None))


def ranks_of(dist: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(Q, N) distances, (Q,) true column per row -> 1-based rank of the truth (ties counted against it)."""
    d = np.asarray(dist)
    t = d[np.arange(len(d)), truth]
    return (d < t[:, None]).sum(1) + 1


@dataclass
class RankSummary:
    """Median rank and the fractions at rank 1 and within 5 (the paper's measures)."""

    median_rank: float
    top1: float
    top5: float
    n: int

    @classmethod
    def of(cls, ranks: np.ndarray) -> RankSummary:
        r = np.asarray(ranks)
        return cls(float(np.median(r)), float((r <= 1).mean()), float((r <= 5).mean()), int(len(r)))

    def to_json(self) -> dict:
        return {"median_rank": self.median_rank, "top1": round(self.top1, 4), "top5": round(self.top5, 4), "n": self.n}
