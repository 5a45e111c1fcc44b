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
  the clicks; plus an anti-collapse term so the embedding cannot shrink to a point: by
  default ``lambda * mean_c relu(1 - std_c(g))`` (VICReg's variance hinge over the points of
  the batch); with ``anti_collapse="entropy"`` ``-lambda * H(g)``, the paper's H(g). The
  paper's text for H was not available to us; we read it as the entropy of the distribution
  of the unit embeddings ĝ of the batch's points, estimated by Rényi's quadratic entropy
  ``H_2 = -log mean_{i != j} exp(-t |ĝ_i - ĝ_j|^2)`` (t = 2): 0 when every point has one
  embedding, growing as they spread over the sphere (the "uniformity" loss of Wang & Isola,
  2020, is its negative). docs/aggregation.md has the measurement that chose the default.
- **Network.** ``kpengine.learn.backbones.build_backbone`` (PointNet by default, without
  the input/feature transforms: models are canonically oriented), ``out_channels=128``;
  a linear classifier on top. Adam, lr 1e-3.
- **Output.** g = the backbone's 128-d features, L2-normalised (distances in [0, 2]).
- **Training** is an in-memory run of :mod:`kpengine.learn.runs` (no run directory): one epoch
  whose items are the ``steps`` batches, drawn in order from ``default_rng(seed)`` (models,
  then each model's clicked points plus random others) as the original step loop drew them.

Later rounds reuse :func:`train_embedding` with the recovered semantic ids as one
"annotator" whose numbering is the cluster ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kpengine.aggregate.saliency import SIGMA
from kpengine.geometry.transforms import bbox_centre
from kpengine.learn.backbones import build_backbone
from kpengine.learn.config import RunConfig
from kpengine.learn.runs import Data, Run, Task

ANTI_COLLAPSE = ("variance", "entropy")


@dataclass(frozen=True)
class EmbeddingConfig:
    backbone: str = "pointnet"
    width: int = 256
    dim: int = 128
    steps: int = 200
    batch: int = 4
    train_points: int = 256
    lr: float = 1e-3
    collapse_weight: float = 0.1
    #: "variance": VICReg's hinge on each channel's std; "entropy": the paper's H(g) (§3.4.5),
    #: read here as the entropy of the unit embeddings of the batch's points (module docstring)
    anti_collapse: str = "variance"
    entropy_scale: float = 2.0  # t of the Rényi-2 estimator exp(-t |g_i - g_j|^2)
    sigma: float = SIGMA
    seed: int = 0

    def __post_init__(self) -> None:
        if self.anti_collapse not in ANTI_COLLAPSE:
            raise ValueError(f"anti_collapse must be one of {ANTI_COLLAPSE}, got {self.anti_collapse!r}")

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
    return points - bbox_centre(points)


class ClickEmbeddingTask(Task):
    """The embedding's training as a run-mechanism task: items are whole steps (batches of models)."""

    shuffle = False  # the steps in the order they were drawn

    def __init__(
        self,
        points: Sequence[np.ndarray],
        clicks: Sequence[TrainingClicks],
        n_annotators: int,
        label_annotator: np.ndarray,
        cfg: EmbeddingConfig,
    ):
        # threads 0: leave torch's thread setting to the caller, as the pipeline always did
        super().__init__(RunConfig(task="click-embedding", epochs=1, batch_size=1, lr=cfg.lr, seed=cfg.seed, threads=0))
        self.cfg = cfg
        self.points, self.clicks = points, clicks
        self.n_labels, self.n_annotators = len(label_annotator), n_annotators
        slices = [np.flatnonzero(label_annotator == a) for a in range(n_annotators)]
        # position of each label inside its annotator's slice
        self.local = np.zeros(self.n_labels, np.int64)
        for sl in slices:
            self.local[sl] = np.arange(len(sl))
        # per annotator: the logit columns of its softmax (its labels, padding, its background last)
        self.width = max((len(sl) for sl in slices), default=0) + 1
        self.columns = np.zeros((n_annotators, self.width), np.int64)
        self.valid = np.zeros((n_annotators, self.width), bool)
        for a, sl in enumerate(slices):
            self.columns[a, : len(sl)] = sl
            self.columns[a, -1] = self.n_labels + a
            self.valid[a, : len(sl)] = self.valid[a, -1] = True
        self.usable = [m for m, c in enumerate(clicks) if len(c.label)]
        if not self.usable:
            raise ValueError("no clicks to learn an embedding from")
        self.centred = [_centre(np.asarray(p, np.float32)) for p in points]
        self.losses: list[float] = []

    def data(self) -> Data:
        """The ``steps`` batches: models and point selections drawn now (small), targets per item."""
        cfg, rng = self.cfg, np.random.default_rng(self.cfg.seed)
        steps = []
        for _ in range(cfg.steps):
            batch = rng.choice(self.usable, size=min(cfg.batch, len(self.usable)), replace=False)
            n = min(cfg.train_points, min(len(self.points[m]) for m in batch))
            steps.append(
                (batch, [_sample(rng, len(self.points[m]), np.unique(self.clicks[m].point_index), n) for m in batch])
            )
        return Data(_Steps(self, steps), None, _single)

    def model(self) -> EmbeddingNet:
        return EmbeddingNet(self.cfg, self.n_labels + self.n_annotators)

    def loss(self, net: nn.Module, step: dict[str, Any]) -> torch.Tensor:
        g, logits = net(step["points"])
        n = step["points"].shape[1]
        # one masked log-softmax over every (model, annotator) pair of the batch at once:
        # each annotator's softmax sees only its own labels and its background class
        pair_model, pair_ann = step["pair_model"], step["pair_annotator"]
        lg = logits[pair_model].gather(2, torch.from_numpy(self.columns[pair_ann])[:, None, :].expand(-1, n, -1))
        lg = lg.masked_fill(~torch.from_numpy(self.valid[pair_ann])[:, None, :], -1e9)  # (P, n, width)
        ce = -(step["targets"] * torch.log_softmax(lg, dim=2)).sum(dim=2)  # (P, n)
        w = step["weights"]
        loss_cls = ((w * ce).sum(dim=1) / w.sum(dim=1)).mean()
        flat = g.reshape(-1, g.shape[-1])
        if self.cfg.anti_collapse == "entropy":
            collapse = -embedding_entropy(flat, self.cfg.entropy_scale)
        else:
            collapse = torch.relu(1.0 - flat.std(dim=0)).mean()
        loss = loss_cls + self.cfg.collapse_weight * collapse + net.backbone.regularizer()
        self.losses.append(loss.item())
        return loss

    def size(self, step: dict[str, Any]) -> int:
        return 1  # the epoch's loss is the mean over steps


def embedding_entropy(g: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Rényi's quadratic entropy of the unit embeddings of points g (P, D), a scalar.

    ``-log mean_{i != j} exp(-t |ĝ_i - ĝ_j|^2)`` with ĝ = g / |g|: 0 when all points share
    one embedding, at most 2t for embeddings spread apart (|ĝ_i - ĝ_j|^2 <= 4). Pairs, not
    a histogram: it has a gradient everywhere and costs P^2 (1,024 points per batch here).
    """
    u = torch.nn.functional.normalize(g, dim=-1)
    d2 = torch.cdist(u, u).square()
    p = d2.shape[0]
    off = ~torch.eye(p, dtype=torch.bool, device=g.device)
    return -torch.logsumexp(-t * d2[off], dim=0) + torch.log(torch.tensor(float(p * (p - 1))))


class _Steps(torch.utils.data.Dataset):
    """Item i: step i's points (B, n, 3) and soft targets of its (model, annotator) pairs."""

    def __init__(self, task: ClickEmbeddingTask, steps: list[tuple[np.ndarray, list[np.ndarray]]]):
        self.task, self.steps = task, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = self.task
        batch, sel = self.steps[i]
        xb = np.stack([t.centred[m][s] for m, s in zip(batch, sel)])  # (B, n, 3)
        pair_model, pair_ann, targets, weights = _soft_targets(
            xb, [t.centred[m] for m in batch], [t.clicks[m] for m in batch], t.local, t.width, t.cfg.sigma
        )
        return {
            "points": torch.from_numpy(xb),
            "pair_model": torch.from_numpy(pair_model),
            "pair_annotator": pair_ann,
            "targets": torch.from_numpy(targets),
            "weights": torch.from_numpy(weights),
        }


def _single(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate of batch size 1: an item is already a whole step."""
    return items[0]


def train_embedding(
    points: Sequence[np.ndarray],
    clicks: Sequence[TrainingClicks],
    n_annotators: int,
    label_annotator: np.ndarray,
    cfg: EmbeddingConfig = EmbeddingConfig(),
    progress: bool = True,
) -> tuple[EmbeddingNet, list[float]]:
    """Fit the embedding. ``points``: M clouds (N, 3); ``label_annotator`` (L,) owner of each label.

    Returns the network (eval mode) and the loss per step.
    """
    task = ClickEmbeddingTask(points, clicks, n_annotators, label_annotator, cfg)
    run = Run(task, None, progress=progress)
    run.run()
    net = run.model
    net.eval()
    return net, task.losses


def _sample(rng: np.random.Generator, n_points: int, clicked: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct cloud indices: the clicked points (at most n) plus random others."""
    clicked = clicked[:n]
    if len(clicked) >= n:
        return clicked
    mask = np.ones(n_points, bool)
    mask[clicked] = False
    return np.concatenate([clicked, rng.choice(np.flatnonzero(mask), n - len(clicked), replace=False)])


def _soft_targets(
    xb: np.ndarray,
    clouds: Sequence[np.ndarray],
    clicks: Sequence[TrainingClicks],
    local: np.ndarray,
    width: int,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Soft targets of every (model, annotator) pair of a batch, in numpy (they need no gradient).

    ``xb`` (B, n, 3) sampled points of the batch's centred ``clouds``. Returns the pair's
    model (P,) and annotator (P,), targets (P, n, width) over the annotator's labels (by
    position in its slice) and its background (last column), normalised, and point weights
    (P, n) = ``0.1 + 0.9 max_l t_l`` so the many background points do not drown the clicks.
    """
    pm, pa, tg, wt = [], [], [], []
    inv2s2 = 1.0 / (2 * sigma**2)
    for i, c in enumerate(clicks):
        pts = xb[i]
        d2 = np.square(pts[:, None, :] - clouds[i][c.point_index][None, :, :]).sum(-1)  # (n, C)
        t_click = np.exp(-d2 * inv2s2).astype(np.float32)
        for a in np.unique(c.annotator):
            mine = np.flatnonzero(c.annotator == a)
            t = np.zeros((width, len(pts)), np.float32)
            np.add.at(t, local[c.label[mine]], t_click[:, mine].T)
            t = np.minimum(t.T, 1.0)  # (n, width); the last column is still 0
            peak = t.max(axis=1)
            t[:, -1] = np.maximum(0.0, 1.0 - t.sum(axis=1))
            t /= np.maximum(t.sum(axis=1, keepdims=True), 1e-8)
            pm.append(i)
            pa.append(int(a))
            tg.append(t)
            wt.append(0.1 + 0.9 * peak)
    return np.array(pm, np.int64), np.array(pa, np.int64), np.stack(tg), np.stack(wt)


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
