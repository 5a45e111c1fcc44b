"""A dense per-point embedding g (128-d) learned from raw clicks (KeypointNet §3.4).

The paper trains a point network as a classifier over annotator-index classes and takes
its last-but-one layer. Here:

- **Classes.** Each (annotator, kp_index) pair is a class; each annotator also gets a
  background class. For a model annotated by annotator *a*, every point gets a soft target
  over *a*'s classes: ``t_l(p) = exp(-|p - x_l|^2 / 2 sigma^2)`` for *a*'s click ``x_l`` with
  label *l* (Euclidean, sigma 0.03), background ``max(0, 1 - sum_l t_l)``, normalised.
  Because an annotator numbers consistently, class *l* ties the same semantic point across
  all of *a*'s models; different indices of one annotator are pushed apart by the softmax.
- **Loss.** Per (model, annotator) the soft cross-entropy over *a*'s slice of the logits
  (a per-annotator softmax: other annotators' numbers are unrelated, never competitors),
  each point weighted ``0.1 + 0.9 max_l t_l`` so the many background points do not drown
  the clicks; plus the anti-collapse term ``lambda * mean_c relu(1 - std_c(g))`` (VICReg's
  variance hinge over the points of the batch) so the embedding cannot shrink to a point.
- **Network.** ``kpengine.learn.backbones.build_backbone`` (PointNet by default, without
  the input/feature transforms: models are canonically oriented), ``out_channels=128``;
  a linear classifier on top. Adam, lr 1e-3.
- **Output.** g = the backbone's 128-d features, L2-normalised (distances in [0, 2]).

Later rounds reuse :func:`train_embedding` with the recovered semantic ids as one
"annotator" whose numbering is the cluster ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kpengine.aggregate.saliency import SIGMA


@dataclass(frozen=True)
class EmbeddingConfig:
    backbone: str = "pointnet"
    width: int = 256
    dim: int = 128
    steps: int = 300
    batch: int = 4
    train_points: int = 512
    lr: float = 1e-3
    collapse_weight: float = 0.1
    sigma: float = SIGMA
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TrainingClicks:
    """Supervision for one model: cloud indices (C,), global labels (C,), annotator (C,)."""

    point_index: np.ndarray
    label: np.ndarray
    annotator: np.ndarray


class EmbeddingNet(nn.Module):
    """Backbone (B, N, 3) -> g (B, N, dim), plus a linear classifier over all classes."""

    def __init__(self, cfg: EmbeddingConfig, n_logits: int):
        super().__init__()
        from kpengine.learn.backbones import build_backbone

        kw = {"out_channels": cfg.dim}
        if cfg.backbone == "pointnet":
            kw.update(width=cfg.width, feature_transform=False, input_transform=False)
        self.backbone = build_backbone(cfg.backbone, **kw)
        self.classifier = nn.Linear(cfg.dim, n_logits)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.backbone(points)
        return g, self.classifier(g)


def _centre(points: np.ndarray) -> np.ndarray:
    """Translate a cloud (N, 3) to its bounding-box centre (ShapeNet v2 clouds are not centred)."""
    return points - (points.min(axis=0) + points.max(axis=0)) / 2


def train_embedding(
    points: Sequence[np.ndarray],
    clicks: Sequence[TrainingClicks],
    n_annotators: int,
    label_annotator: np.ndarray,
    cfg: EmbeddingConfig = EmbeddingConfig(),
    progress: bool = True,
) -> tuple[EmbeddingNet, list[float]]:
    """Fit the embedding. ``points``: M clouds (N, 3); ``label_annotator`` (L,) owner of each label.

    Returns the network and the loss per step.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_labels = len(label_annotator)
    net = EmbeddingNet(cfg, n_labels + n_annotators)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    slices = [np.flatnonzero(label_annotator == a) for a in range(n_annotators)]
    # position of each label inside its annotator's slice
    local = np.zeros(n_labels, np.int64)
    for s in slices:
        local[s] = np.arange(len(s))
    usable = [m for m, c in enumerate(clicks) if len(c.label)]
    if not usable:
        raise ValueError("no clicks to learn an embedding from")
    centred = [torch.from_numpy(_centre(np.asarray(p, np.float32))) for p in points]
    losses: list[float] = []
    net.train()
    bar = tqdm(range(cfg.steps), desc="embedding", disable=not progress, leave=False)
    inv2s2 = 1.0 / (2 * cfg.sigma**2)
    for _ in bar:
        batch = rng.choice(usable, size=min(cfg.batch, len(usable)), replace=False)
        n = min(cfg.train_points, min(len(points[m]) for m in batch))
        sel = [rng.choice(len(points[m]), n, replace=False) for m in batch]
        # always include the clicked points themselves
        for i, m in enumerate(batch):
            pi = np.unique(clicks[m].point_index)[:n]
            sel[i][: len(pi)] = pi
            sel[i] = np.unique(sel[i])
            if len(sel[i]) < n:
                rest = np.setdiff1d(np.arange(len(points[m])), sel[i])
                sel[i] = np.concatenate([sel[i], rng.choice(rest, n - len(sel[i]), replace=False)])
        x = torch.stack([centred[m][s] for m, s in zip(batch, sel)])  # (B, n, 3)
        g, logits = net(x)
        loss_cls = x.new_zeros(())
        pairs = 0
        for i, m in enumerate(batch):
            c = clicks[m]
            xyz_clicks = centred[m][c.point_index]  # (C, 3)
            d2 = torch.cdist(x[i], xyz_clicks).square()  # (n, C)
            t_all = torch.exp(-d2 * inv2s2)
            for a in np.unique(c.annotator):
                mine = np.flatnonzero(c.annotator == a)
                own = slices[a]
                t = x.new_zeros((n, len(own)))
                t.index_add_(1, torch.from_numpy(local[c.label[mine]]), t_all[:, mine])
                t = t.clamp(max=1.0)
                bg = (1.0 - t.sum(dim=1, keepdim=True)).clamp(min=0.0)
                target = torch.cat([t, bg], dim=1)
                target = target / target.sum(dim=1, keepdim=True).clamp(min=1e-8)
                lg = torch.cat([logits[i][:, torch.from_numpy(own)], logits[i][:, n_labels + a : n_labels + a + 1]], 1)
                ce = -(target * torch.log_softmax(lg, dim=1)).sum(dim=1)
                w = 0.1 + 0.9 * t.amax(dim=1) if len(own) else torch.full((n,), 0.1)
                loss_cls = loss_cls + (w * ce).sum() / w.sum()
                pairs += 1
        flat = g.reshape(-1, g.shape[-1])
        collapse = torch.relu(1.0 - flat.std(dim=0)).mean()
        loss = loss_cls / max(pairs, 1) + cfg.collapse_weight * collapse + net.backbone.regularizer()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    net.eval()
    return net, losses


@torch.no_grad()
def embed(net: EmbeddingNet, points: Sequence[np.ndarray], batch: int = 16) -> list[np.ndarray]:
    """g for every point of every cloud: a list of (N, dim) float32 arrays, rows of unit length."""
    out: list[np.ndarray] = []
    net.eval()
    order = list(range(len(points)))
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        sizes = {len(points[m]) for m in chunk}
        groups = [[m for m in chunk if len(points[m]) == s] for s in sizes]
        res: dict[int, np.ndarray] = {}
        for grp in groups:
            x = torch.stack([torch.from_numpy(_centre(np.asarray(points[m], np.float32))) for m in grp])
            g = torch.nn.functional.normalize(net(x)[0], dim=-1)
            for m, gm in zip(grp, g):
                res[m] = gm.numpy()
        out.extend(res[m] for m in chunk)
    return out
