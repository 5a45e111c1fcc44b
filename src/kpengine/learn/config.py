"""One place for every training setting; saved with each run so that a run can be repeated.

Defaults are the official KeypointNet benchmark protocol: Adam 1e-3, batch 8, 50 epochs,
2,048 points, Gaussian jitter sigma 0.004 clipped at 0.01, random translation up to 0.02,
best checkpoint by validation loss. Two departures are available and off by default, because
they decide whether a short CPU run converges: a cosine learning-rate decay, and soft
(geodesic Gaussian) saliency targets in place of the 16-in-2,048 hard labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from kpengine.categories import resolve_category
from kpengine.learn.registry import TASKS

LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


@dataclass(kw_only=True)
class RunConfig:
    """The settings every run has, whatever the network (point, image, voxel); a task's own
    config subclasses it. Saved as the run's ``config.json`` and in each checkpoint."""

    task: str
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    #: "constant" (official) or "cosine": lr * (min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi e / E)) / 2)
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.0
    seed: int = 0
    #: torch CPU threads; 1 by default: on a shared 2-core machine 2 threads ran 10x slower under load;
    #: 0 leaves torch's own setting
    threads: int = 1
    workers: int = 0
    #: "cpu" or "cuda" (under torchrun: the process's LOCAL_RANK GPU, NCCL)
    device: str = "cpu"

    #: settings a resumed run takes from the command, not from the saved run (not training settings)
    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device")
    #: settings a resumed run must share with the saved one, or it is refused
    IDENTITY: ClassVar[tuple[str, ...]] = ("task",)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch size must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate for a 0-based epoch: a function of the epoch alone, so resuming is exact."""
        if self.lr_schedule == "constant":
            return self.lr
        frac = 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * frac)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]):
        """The config of a saved run; keys it does not know (older or newer versions) are dropped."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})


@dataclass(kw_only=True)
class TrainConfig(RunConfig):
    """A point task's run (saliency, correspondence, embedding) on one KeypointNet category."""

    data: str
    category: str
    backbone: str = "pointnet"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    n_points: int = 2048
    jitter_sigma: float = 0.004
    jitter_clip: float = 0.01
    translate: float = 0.02
    #: random anisotropic scaling U(1 - s, 1 + s) per axis; 0 (official) = off
    scale_augment: float = 0.0
    train_split: str = "train"
    val_split: str = "val"
    #: few-shot: train on this many shapes of the train split, drawn with ``seed``
    #: (kpengine.data.shots, the same draw as the multiview tasks), without validation
    #: (best = lowest training loss: no labels beyond the K); 0 = all, validated on val_split
    shots: int = 0
    #: a pretraining run (e.g. ``--task point_contrast``) of the same category and backbone whose
    #: backbone weights this run starts from (the head is new); "" = random initialisation
    init: str = ""
    #: saliency: 0 = hard labels (official); > 0 = target exp(-d^2 / 2 sigma^2), d the geodesic
    #: distance to the nearest keypoint, so that near-misses are not punished like far ones
    saliency_sigma: float = 0.0
    #: correspondence: each rotational relabelling's loss is raised by this many nats before the
    #: minimum over relabellings, so that ties go to the identity (kpengine.learn.losses.
    #: correspondence_loss); 0 = the official loss
    relabel_margin: float = 0.0
    #: PointNet's feature-transform orthogonality weight (official 0.001)
    regularizer_weight: float = 0.001
    #: embedding task: dimension, contrastive margin (on unit-normalised embeddings), surface noise sigma
    embedding_dim: int = 32
    margin: float = 1.0
    surface_noise: float = 0.0

    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device", "data", "init")
    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "backbone", "category", "shots")

    def __post_init__(self) -> None:
        point_tasks = TASKS.names("kpengine.learn.tasks")
        if self.task not in point_tasks:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(point_tasks)}")
        if self.n_points < 1:
            raise ValueError("epochs, batch size and number of points must be positive")
        super().__post_init__()
        if self.saliency_sigma < 0:
            raise ValueError("saliency sigma must be >= 0")
        if self.relabel_margin < 0:
            raise ValueError("relabel margin must be >= 0")
        self.category = resolve_category(self.category).name  # a synset names the same run
