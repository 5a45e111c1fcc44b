"""self-supervised pretraining, no labels: PointInfoNCE between two augmented copies (PointContrast)

Xie et al., "PointContrast: Unsupervised Pre-training for 3D Point Cloud Understanding", ECCV
2020, on one category's clouds (docs/pointcontrast.md). Each training item is two copies of a
shape's cloud, each a random subset of its points, turned about the up axis and slightly
tilted, scaled, jittered and moved (:class:`ContrastView`), together with ``n_pairs`` known
correspondences (the same source point in both copies). The backbone's per-point features,
projected to ``embedding_dim`` and unit-normalised, are trained with
:func:`kpengine.learn.losses.point_info_nce`: a point's positive is its match in the other copy,
its negatives the other matched points of the same shape. Keypoint labels are never read; the
validation loss is the same InfoNCE on the val split's shapes (fixed draws). The run is a
starting point: ``kpengine train --task correspondence --init RUN --shots K`` fine-tunes its
backbone (same ``--backbone`` and ``--backbone-args``) on K labelled shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.geometry.transforms import bbox_centre, rotation_about
from kpengine.learn.augment import Augment
from kpengine.learn.config import TrainConfig
from kpengine.learn.heads import KeypointModel
from kpengine.learn.losses import point_info_nce
from kpengine.learn.pointtask import PointTask, check_batch
from kpengine.learn.predictor import Predictor
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data


@dataclass(kw_only=True)
class PointContrastConfig(TrainConfig):
    """A point task config plus the contrastive settings. Defaults: PointContrast's temperature
    (0.07) and 32-d unit features; the shape-level augmentation is kpengine's (see the docs)."""

    #: InfoNCE temperature (PointContrast's ``nceT``)
    temperature: float = 0.07
    #: matched points per shape and step: the positives, and each other's negatives
    n_pairs: int = 1024
    #: fraction of the cloud's points each copy keeps (point dropout / resampling)
    keep: float = 0.8
    #: each copy turned about the vertical line through the bounding-box centre by U(-a, a) degrees
    rotate_up: float = 15.0
    #: and about the horizontal x and z axes by U(-t, t) degrees each
    tilt: float = 5.0
    embedding_dim: int = 32
    scale_augment: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shots:
            raise ValueError("point_contrast pretraining reads no labels: it trains on every shape (leave --shots out)")
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        kept = round(self.keep * self.n_points)
        if not 2 <= self.n_pairs <= kept:
            raise ValueError(f"n_pairs must be in 2..{kept} (the points a copy keeps), got {self.n_pairs}")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")


@dataclass(frozen=True)
class ContrastView:
    """One augmented copy of a cloud: which points it keeps, and where they end up.

    The copy keeps ``m`` of the cloud's N points (in a random order); they are turned about the
    vertical line through the bounding-box centre by U(-rotate_up, rotate_up) degrees, tilted
    about x and z by U(-tilt, tilt) degrees each, then ``augment`` (per-axis scale, clipped
    jitter, translation: the fine-tuning recipe's augmentation) is applied."""

    rotate_up: float
    tilt: float
    augment: Augment

    def rotation(self, rng: np.random.Generator) -> np.ndarray:
        """A random rotation (3, 3): tilt about z, then about x, then the turn about y."""
        up, tx, tz = np.radians(rng.uniform(-1, 1, 3) * (self.rotate_up, self.tilt, self.tilt))
        return rotation_about("y", up) @ rotation_about("x", tx) @ rotation_about("z", tz)

    def __call__(self, points: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The copy (len(keep), 3) float32 of ``points[keep]``."""
        centre = bbox_centre(points).astype(np.float64)
        turned = (points[keep].astype(np.float64) - centre) @ self.rotation(rng).T + centre
        return self.augment(turned, rng)


def draw_pairs(n: int, m: int, p: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of ``n`` points two copies keep (``m`` each) so that ``p`` of them are certainly in
    both: (keep_a (m,), keep_b (m,), pairs (p, 2)), pairs[r] = (position in a, position in b) of
    the same source point. The p shared points are drawn among a's; b's other m - p come from
    the remaining points, so b may share more points with a, which are simply not used."""
    keep_a = rng.choice(n, size=m, replace=False)
    shared = rng.choice(keep_a, size=p, replace=False)
    rest = np.setdiff1d(np.arange(n), shared, assume_unique=True)
    keep_b = rng.permutation(np.concatenate([shared, rng.choice(rest, size=m - p, replace=False)]))
    pos_a = np.empty(n, np.int64)
    pos_a[keep_a] = np.arange(m)
    pos_b = np.empty(n, np.int64)
    pos_b[keep_b] = np.arange(m)
    return keep_a, keep_b, np.stack([pos_a[shared], pos_b[shared]], axis=1)


class ContrastPairs(Dataset):
    """Items ``{"a": (M, 3), "b": (M, 3) float32, "pairs": (P, 2) int64, "source": (P,) int64,
    "model_id"}``: two views of shape i and their P correspondences (``source``: the cloud index
    of each matched point), drawn from (seed, epoch, i) so that a resumed run is exact; with
    ``train`` False the draw is fixed (validation)."""

    def __init__(self, shapes: Sequence[Shape], view: ContrastView, keep: int, n_pairs: int, seed: int, train: bool):
        self.shapes = list(shapes)
        self.view, self.keep, self.n_pairs = view, keep, n_pairs
        self.seed, self.train = seed, train
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        shape = self.shapes[i]
        rng = np.random.default_rng((self.seed, self.epoch + 1 if self.train else 0, i))
        keep_a, keep_b, pairs = draw_pairs(len(shape.points), self.keep, self.n_pairs, rng)
        return {
            "a": torch.from_numpy(self.view(shape.points, keep_a, rng)),
            "b": torch.from_numpy(self.view(shape.points, keep_b, rng)),
            "pairs": torch.from_numpy(pairs),
            "source": torch.from_numpy(keep_a[pairs[:, 0]]),
            "model_id": shape.model_id,
        }


class PretrainingOnly(Predictor):
    """A pretraining run predicts nothing: it is fine-tuned first (the message says how)."""

    evaluates_as = "correspondence"

    def __init__(self, run: str | Path):
        self.run = run

    def predict(self, shapes: Sequence[Shape]) -> dict[str, Any]:
        raise DataError(
            f"{self.run} is a point_contrast pretraining run and predicts no keypoints; fine-tune it first: "
            f"kpengine train --task correspondence --init {self.run} --shots K (same --backbone/--backbone-args)"
        )


@TASKS.register("point_contrast")
class PointContrastTask(PointTask):
    config_class = PointContrastConfig
    config: PointContrastConfig
    evaluates_as: ClassVar[str] = "correspondence"
    unit_outputs: ClassVar[bool] = True

    @staticmethod
    def head_channels(n_classes: int, embedding_dim: int) -> int:
        return embedding_dim

    def data(self) -> Data:
        cfg = self.config
        sets = []
        for split in (cfg.train_split, cfg.val_split):
            ds = KeypointNetDataset(cfg.data, cfg.category, split, n_points=cfg.n_points)
            if len(ds) == 0:
                raise DataError(
                    f"{ds.category.name}/{split} has no usable shapes under {ds.root}: {ds.problem_summary()}"
                )
            short = [s.model_id for s in ds if s.n_points != cfg.n_points]
            if short:
                raise DataError(f"models {short[:5]} have clouds of other sizes than {cfg.n_points} points")
            sets.append(ds)
        train, val = sets
        self.n_classes = train.n_classes
        self.category_name = train.category.name
        self.skipped = [{**row, "split": ds.split} for ds in sets for row in ds.skipped()]
        view = ContrastView(
            cfg.rotate_up,
            cfg.tilt,
            Augment(cfg.jitter_sigma, cfg.jitter_clip, cfg.translate, cfg.surface_noise, cfg.scale_augment),
        )
        keep = round(cfg.keep * cfg.n_points)
        return Data(
            ContrastPairs(train, view, keep, cfg.n_pairs, cfg.seed, train=True),
            ContrastPairs(val, view, keep, cfg.n_pairs, cfg.seed, train=False),
            default_collate,
        )

    def loss(self, net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Both copies through the network in one pass (one set of batch statistics), then
        PointInfoNCE over each shape's matched points."""
        a, b = batch["a"], batch["b"]
        feats = net(torch.cat([a, b]))
        return point_info_nce(feats[: len(a)], feats[len(a) :], batch["pairs"], self.config.temperature)

    def metrics(self, net: nn.Module, batch: dict[str, Any]) -> dict[str, float]:
        """``match_accuracy`` (summed over shapes): the fraction of a shape's matched points of
        copy a whose nearest feature among the matched points of copy b is their own match
        (chance 1 / n_pairs); the feature-match ratio PointContrast reports for validation."""
        a, b, pairs = batch["a"], batch["b"], batch["pairs"]
        feats = net(torch.cat([a, b]))
        d = feats.shape[-1]
        fa = torch.gather(feats[: len(a)], 1, pairs[..., :1].expand(-1, -1, d))
        fb = torch.gather(feats[len(a) :], 1, pairs[..., 1:].expand(-1, -1, d))
        hit = (fa @ fb.transpose(1, 2)).argmax(-1) == torch.arange(pairs.shape[1], device=pairs.device)
        return {"match_accuracy": float(hit.float().mean(1).sum())}

    def check(self, batch: dict[str, Any]) -> None:
        for key in ("a", "b"):
            check_batch({"points": batch[key], "model_id": batch["model_id"]})

    def trainable(self, batch: dict[str, Any]) -> bool:
        return True  # two copies per shape: batch norm sees at least two clouds

    def size(self, batch: dict[str, Any]) -> int:
        return len(batch["a"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "n_pairs": self.config.n_pairs, "temperature": self.config.temperature}

    def title(self) -> str:
        return f"PointContrast / {self.config.backbone}"

    @classmethod
    def predictor(
        cls, run: str | Path, model: KeypointModel, state: dict[str, Any], data: str | Path, **options: Any
    ) -> PretrainingOnly:
        return PretrainingOnly(run)
