"""K keypoints per shape learned without labels (--method skeleton-merger | symmetric); predicts saliency-style

Trained on a category's clouds alone (keypoint labels are never read in training); validation
is the same reconstruction loss on the val split. ``kpengine predict`` writes the K keypoints of
each shape in the saliency predictions format, **in keypoint order** (entry k is keypoint k,
snapped to its nearest cloud point; the score is the peak of its heatmap), so that the dual
alignment score (``kpengine evaluate --task das``) can tell whether keypoint k means the same
part on every shape. Clouds enter the network in a unit frame (bounding-box centre at the
origin, largest half-extent 1, as the official code's [-1, 1] normalisation); keypoints come
back in the model's frame as the same convex combinations of the original points.
"""

from __future__ import annotations

import logging
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
from kpengine.geometry.detectors import check_cloud
from kpengine.learn.config import TrainConfig
from kpengine.learn.pointtask import PointTask
from kpengine.learn.predictor import Predictor
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data
from kpengine.learn.unsupervised.skeleton_merger import (
    SkeletonMerger,
    composite_chamfer,
    keypoint_activity,
    liveness_penalty,
    surface_penalty,
)
from kpengine.learn.unsupervised.symmetric import (
    AXES,
    SymmetricKeypoints,
    coverage_term,
    reflection_axis,
    separation_term,
    surface_term,
)

log = logging.getLogger(__name__)
#: the networks of the methods: same call shape (forward, locate, n_keypoints, min_points)
UnsupervisedNet = SkeletonMerger | SymmetricKeypoints
#: the methods ``--method`` takes (docs/unsupervised.md says why the second one)
METHODS: tuple[str, ...] = ("skeleton-merger", "symmetric")
#: ``symmetry`` settings of the symmetric method: an axis, none, or auto (chosen from the training clouds)
SYMMETRY_CHOICES: tuple[str, ...] = ("auto", *AXES, "none")


def unit_frame_params(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (3,) and scale of the unit frame of a cloud (N, 3): bounding-box centre, largest half-extent."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-12)


def unit_frame(points: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 3) float32: bounding-box centre at 0, largest half-extent 1."""
    centre, half = unit_frame_params(points)
    return ((points - centre) / half).astype(np.float32)


@dataclass(kw_only=True)
class UnsupervisedConfig(TrainConfig):
    """A point task config plus the method's settings."""

    method: str = "skeleton-merger"
    n_keypoints: int = 10
    #: points drawn at random from each cloud per training step (official: the whole 2,048)
    train_points: int = 512
    #: points per skeleton segment in the decoder (official: 15 to 200 by length)
    segment_points: int = 32
    #: weight of the sum of squared decoder offsets (official 0.01)
    offset_weight: float = 0.01
    #: weight of the keypoint liveness term (skeleton_merger.liveness_penalty; 0 = the official loss;
    #: 1 measured better on bed: DAS 58.7 vs 52.4, mIoU@0.10 37.1 vs 29.1, docs/unsupervised.md)
    alive_weight: float = 1.0
    #: weight of the keypoint-to-surface term (skeleton_merger.surface_penalty; 0 = the official loss)
    surface_weight: float = 0.0
    #: symmetric: rank of the shape basis
    rank: int = 8
    #: symmetric: the reflection plane's normal axis (auto: symmetric.reflection_axis of the training clouds)
    symmetry: str = "auto"
    #: symmetric: weights of the coverage and separation terms (the surface term has weight 1)
    coverage_weight: float = 1.0
    separation_weight: float = 1.0
    #: symmetric: keypoints closer than this (unit frame) are pushed apart
    min_gap: float = 0.1

    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "backbone", "category", "method", "n_keypoints")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.n_keypoints < 2:
            raise ValueError(f"need at least 2 keypoints, got {self.n_keypoints}")
        if self.symmetry not in SYMMETRY_CHOICES:
            raise ValueError(f"unknown symmetry {self.symmetry!r}; choose one of {', '.join(SYMMETRY_CHOICES)}")
        if self.train_points < self.n_keypoints:
            raise ValueError(f"train_points {self.train_points} is fewer than the {self.n_keypoints} keypoints")


class CloudSubsets(Dataset):
    """Items ``{"points": (M, 3) unit-frame float32, "model_id": str}``: a random subset of M
    points, drawn from (seed, epoch, index) so that a resumed run is exact; ``epoch`` None: a
    fixed subset (validation)."""

    def __init__(self, shapes: Sequence[Shape], n_points: int, seed: int, train: bool):
        self.clouds = [unit_frame(s.points) for s in shapes]
        self.ids = [s.model_id for s in shapes]
        self.n_points, self.seed, self.train = n_points, seed, train
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.clouds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        cloud = self.clouds[i]
        rng = np.random.default_rng((self.seed, self.epoch + 1 if self.train else 0, i))
        pick = rng.choice(len(cloud), size=min(self.n_points, len(cloud)), replace=False)
        return {"points": torch.from_numpy(cloud[pick]), "model_id": self.ids[i]}


def usable_shapes(dataset: KeypointNetDataset, k: int) -> list[Shape]:
    """The split's shapes; DataError naming the first that cannot hold K keypoints."""
    shapes = list(dataset)
    if not shapes:
        raise DataError(
            f"{dataset.category.name}/{dataset.split} has no usable shapes under {dataset.root}: "
            f"{dataset.problem_summary()}"
        )
    for s in shapes:
        check_cloud(s.points, k, where=f"model {s.model_id}")
    return shapes


@TASKS.register("unsupervised_keypoints")
class UnsupervisedKeypointsTask(PointTask):
    """A PointTask for its batch checks and summary; its own data, network, loss and predictor."""

    config_class = UnsupervisedConfig
    config: UnsupervisedConfig
    evaluates_as: ClassVar[str] = "saliency"

    def data(self) -> Data:
        cfg = self.config
        train = KeypointNetDataset(cfg.data, cfg.category, cfg.train_split, n_points=cfg.n_points)
        val = KeypointNetDataset(cfg.data, cfg.category, cfg.val_split, n_points=cfg.n_points)
        self.category_name = train.category.name
        m = cfg.train_points
        train_shapes = usable_shapes(train, cfg.n_keypoints)
        if cfg.method == "symmetric" and cfg.symmetry == "auto":
            # resolved once, from the training geometry alone; the saved config holds the axis
            cfg.symmetry, scores = reflection_axis([s.points for s in train_shapes])
            log.info("symmetry plane normal to %s (mirror distances x/y/z %s)", cfg.symmetry, scores)
        train_set = CloudSubsets(train_shapes, m, cfg.seed, train=True)
        val_set = CloudSubsets(usable_shapes(val, cfg.n_keypoints), m, cfg.seed, train=False)
        return Data(train_set, val_set, default_collate)

    @staticmethod
    def build(config: UnsupervisedConfig) -> UnsupervisedNet:
        try:
            if config.method == "symmetric":
                if config.symmetry == "auto":
                    raise ValueError("the symmetric method's axis is chosen from the training data (data() first)")
                axis = None if config.symmetry == "none" else config.symmetry
                return SymmetricKeypoints(
                    config.n_keypoints, config.backbone, config.rank, axis, **config.backbone_kwargs
                )
            return SkeletonMerger(config.n_keypoints, config.backbone, config.segment_points, **config.backbone_kwargs)
        except ValueError as exc:
            raise DataError(str(exc)) from None

    def model(self) -> UnsupervisedNet:
        return self.build(self.config)

    def loss(self, net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        model = getattr(net, "module", net)  # the DDP wrapper's model holds the offsets
        out = net(batch["points"])
        cfg = self.config
        if cfg.method == "symmetric":
            kp, cloud = out["keypoints"], batch["points"]
            return (
                surface_term(kp, cloud)
                + cfg.coverage_weight * coverage_term(kp, cloud)
                + cfg.separation_weight * separation_term(kp, cfg.min_gap)
            )
        loss = composite_chamfer(batch["points"], out["segments"], out["activations"])
        loss = loss + cfg.offset_weight * torch.sum(model.offsets**2)
        if cfg.alive_weight:
            loss = loss + cfg.alive_weight * liveness_penalty(out["activations"], model.n_keypoints)
        if cfg.surface_weight:
            loss = loss + cfg.surface_weight * surface_penalty(out["keypoints"], batch["points"])
        return loss

    def metrics(self, net: nn.Module, batch: dict[str, Any]) -> dict[str, float]:
        """Summed over the batch: ``dead_keypoints`` (keypoints whose strongest segment is below
        0.5, the collapse of docs/unsupervised.md) and ``surface_distance`` (mean keypoint to
        nearest point, unit frame)."""
        out = net(batch["points"])
        d = torch.cdist(out["keypoints"], batch["points"]).min(dim=2).values
        if "activations" not in out:
            return {"surface_distance": float(d.mean(1).sum())}
        activity = keypoint_activity(out["activations"], net.n_keypoints)
        return {"dead_keypoints": float((activity < 0.5).sum()), "surface_distance": float(d.mean(1).sum())}

    def checkpoint_extras(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        extra = {"symmetry": self.config.symmetry} if self.config.method == "symmetric" else {}
        return {**super().describe(), "method": self.config.method, "n_keypoints": self.config.n_keypoints, **extra}

    def title(self) -> str:
        return f"{self.config.method} K={self.config.n_keypoints} / {self.config.backbone}"

    @classmethod
    def load_model(cls, state: dict[str, Any]) -> UnsupervisedNet:
        """The trained network of a checkpoint (``kpengine.learn.inference.load_run`` calls this)."""
        model = cls.build(UnsupervisedConfig.from_json(state["config"]))
        model.load_state_dict(state["model"])
        return model.eval()

    @classmethod
    def predictor(
        cls, run: str | Path, model: UnsupervisedNet, state: dict[str, Any], data: str | Path, **options: Any
    ) -> UnsupervisedPredictor:
        return UnsupervisedPredictor(model)


@torch.no_grad()
def predict_keypoints(
    model: UnsupervisedNet, points: np.ndarray, where: str = "cloud"
) -> tuple[np.ndarray, np.ndarray]:
    """(K, 3) keypoints in the model's frame and (K,) scores of one cloud (N, 3).

    The network works in the cloud's unit frame; keypoints go back by the inverse of that
    similarity (for Skeleton Merger the same convex combination of the original points)."""
    check_cloud(points, model.n_keypoints, where=where)
    centre, half = unit_frame_params(np.asarray(points, np.float64))
    x = torch.from_numpy(unit_frame(points))[None]
    kp, scores = model.locate(x)
    return kp[0].double().numpy() * half + centre, scores[0].double().numpy()


class UnsupervisedPredictor(Predictor):
    """A trained unsupervised network: K ordered keypoints per shape, each snapped to its nearest
    cloud point (saliency format, list order = keypoint order)."""

    evaluates_as = "saliency"

    def __init__(self, model: UnsupervisedNet):
        self.model = model

    def keypoints(self, shapes: Sequence[Shape]) -> dict[str, np.ndarray]:
        """{model_id: (K, 3)} keypoints in the model's frame (not snapped)."""
        return {s.model_id: predict_keypoints(self.model, s.points, f"model {s.model_id}")[0] for s in shapes}

    def predict(self, shapes: Sequence[Shape]) -> dict[str, list[list[float]]]:
        out: dict[str, list[list[float]]] = {}
        for s in shapes:
            kp, peak = predict_keypoints(self.model, s.points, f"model {s.model_id}")
            idx = np.argmin(((kp[:, None, :] - s.points[None, :, :]) ** 2).sum(-1), axis=1)
            out[s.model_id] = [[int(i), float(p)] for i, p in zip(idx, peak)]
        return out
