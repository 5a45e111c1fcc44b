"""What the point tasks (saliency, correspondence, embedding) share as run-mechanism tasks.

A :class:`PointTask` trains a :class:`~kpengine.learn.heads.KeypointModel` on one KeypointNet
category's train split and validates on its val split (official protocol: augmentation by
:class:`~kpengine.learn.augment.Augment`, batches with rotational relabellings); a subclass in
``kpengine/learn/tasks/`` gives its head size, its loss and its predictor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shots import draw_shots
from kpengine.errors import DataError
from kpengine.learn.augment import Augment
from kpengine.learn.batches import KeypointBatches, collate_keypoint_batches
from kpengine.learn.checkpoint import data_version, load_checkpoint
from kpengine.learn.config import TrainConfig
from kpengine.learn.heads import KeypointModel
from kpengine.learn.predictor import Predictor
from kpengine.learn.runs import Data, Task


def check_batch(batch: dict[str, Any]) -> None:
    """NaNs or infinities in a batch: stop with the models at fault rather than train on garbage."""
    bad = ~torch.isfinite(batch["points"]).all(dim=(1, 2))
    if bad.any():
        names = [m for m, b in zip(batch["model_id"], bad.tolist()) if b]
        raise DataError(f"non-finite point coordinates in models {names}; fix or remove them from the data")


def pretrained_backbone(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The backbone weights of the run ``cfg.init`` (its best.pt), for a run of ``cfg`` to start
    from; DataError naming the run when it is not a point-network run, or was trained on another
    category or with another backbone (a backbone of another shape cannot be loaded, and one of
    another category has learnt other shapes)."""
    path = Path(cfg.init) / "best.pt"
    state = load_checkpoint(path)
    saved = state["config"]
    if "backbone" not in saved:
        raise DataError(f"run of task {saved.get('task')!r} has no point backbone to start from", path=path)
    if saved.get("category") != cfg.category:
        raise DataError(f"pretraining run of category {saved.get('category')!r}, not {cfg.category!r}", path=path)
    mine = (cfg.backbone, cfg.backbone_kwargs)
    theirs = (saved["backbone"], saved.get("backbone_kwargs", {}))
    if theirs != mine:
        raise DataError(
            f"pretraining run has backbone {theirs[0]} {theirs[1]}, this run {mine[0]} {mine[1]}", path=path
        )
    return {k.removeprefix("backbone."): v for k, v in state["model"].items() if k.startswith("backbone.")}


class PointTask(Task):
    """A per-point network on a category's clouds; ``config`` is a :class:`TrainConfig`."""

    config_class = TrainConfig
    config: TrainConfig
    #: the ``kpengine evaluate`` task its predictions are scored as
    evaluates_as: ClassVar[str] = "correspondence"
    #: per-point outputs L2-normalised (embeddings)
    unit_outputs: ClassVar[bool] = False
    #: train on soft geodesic saliency targets when ``saliency_sigma`` > 0
    soft_saliency: ClassVar[bool] = False
    #: set by :meth:`data`: the training and validation models left out, and why (run summary)
    skipped: list[dict[str, str | None]] | None = None

    @staticmethod
    def head_channels(n_classes: int, embedding_dim: int) -> int:
        """Per-point output channels of the head."""
        raise NotImplementedError

    @classmethod
    def predictor(
        cls, run: str | Path, model: KeypointModel, state: dict[str, Any], data: str | Path, **options: Any
    ) -> Predictor:
        """The predictor of a trained run (``model`` and checkpoint ``state`` from its best.pt),
        ready to predict; ``data``: the annotated shapes it may fit on; ``options``: the
        ``kpengine predict`` options (saliency_mode, threshold, nms_radius), used where they apply."""
        raise NotImplementedError

    def data(self) -> Data:
        cfg = self.config
        train = KeypointNetDataset(cfg.data, cfg.category, cfg.train_split, n_points=cfg.n_points)
        if cfg.shots > 0:
            where = f"{train.category.name}/{cfg.train_split}"
            ids = draw_shots(train.model_ids, cfg.shots, cfg.seed, where)
            train = KeypointNetDataset(cfg.data, cfg.category, cfg.train_split, n_points=cfg.n_points, model_ids=ids)
        val = (
            None if cfg.shots > 0 else KeypointNetDataset(cfg.data, cfg.category, cfg.val_split, n_points=cfg.n_points)
        )
        self.n_classes = train.n_classes
        self.category_name = train.category.name
        self.skipped = [{**row, "split": ds.split} for ds in (train, val) if ds is not None for row in ds.skipped()]
        aug = Augment(cfg.jitter_sigma, cfg.jitter_clip, cfg.translate, cfg.surface_noise, cfg.scale_augment)
        soft = cfg.saliency_sigma if self.soft_saliency else 0.0
        train_set = KeypointBatches(train, self.n_classes, aug, seed=cfg.seed, saliency_sigma=soft)
        val_set = (
            None if val is None else KeypointBatches(val, self.n_classes, None, seed=cfg.seed, saliency_sigma=soft)
        )
        for ds in (train_set, val_set):
            if ds is None:
                continue
            short = [s.model_id for s in ds.shapes if s.n_points != cfg.n_points]
            if short:
                raise DataError(f"models {short[:5]} have clouds of other sizes than {cfg.n_points} points")
        return Data(train_set, val_set, collate_keypoint_batches)

    def model(self) -> KeypointModel:
        cfg = self.config
        try:
            model = KeypointModel(cfg.task, cfg.backbone, self.n_classes, cfg.embedding_dim, **cfg.backbone_kwargs)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if cfg.n_points < model.min_points:
            raise DataError(
                f"backbone {cfg.backbone} needs at least {model.min_points} points per shape, got {cfg.n_points}"
            )
        if cfg.init:
            model.backbone.load_state_dict(pretrained_backbone(cfg))
        return model

    @classmethod
    def load_model(cls, state: dict[str, Any]) -> KeypointModel:
        """The trained network of a checkpoint; its head's size (``n_classes``) comes from the
        checkpoint, since :meth:`model` reads it from the data."""
        cfg = TrainConfig.from_json(state["config"])
        model = KeypointModel(cfg.task, cfg.backbone, state["n_classes"], cfg.embedding_dim, **cfg.backbone_kwargs)
        model.load_state_dict(state["model"])
        return model.eval()

    def penalty(self, model: KeypointModel) -> torch.Tensor:
        return self.config.regularizer_weight * model.regularizer()

    def check(self, batch: dict[str, Any]) -> None:
        check_batch(batch)

    def trainable(self, batch: dict[str, Any]) -> bool:
        return len(batch["points"]) >= 2  # batch norm cannot train on one shape

    def size(self, batch: dict[str, Any]) -> int:
        return len(batch["points"])

    def where(self, batch: dict[str, Any]) -> str:
        return f"models {batch['model_id']}"

    def data_version(self) -> str:
        return data_version(self.config.data, self.category_name)

    def describe(self) -> dict[str, Any]:
        out = {"backbone": self.config.backbone, "category": self.config.category}
        if self.config.init:
            out["init"] = self.config.init
        if self.skipped is not None:
            out["skipped"] = self.skipped
        return out

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"n_classes": self.n_classes}

    def title(self) -> str:
        return f"{self.config.task} / {self.config.backbone}"
