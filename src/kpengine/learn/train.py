"""The training loop: official protocol by default, deterministic, resumable, distributed-ready.

Every epoch reseeds from (seed, epoch), so an interrupted run resumed from ``last.pt`` gives the
same weights as an uninterrupted one. The run directory holds ``config.json``, ``last.pt``,
``best.pt`` (lowest validation loss), ``history.json`` and ``curve.png``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from kpengine.data.dataset import KeypointNetDataset
from kpengine.errors import DataError
from kpengine.io.atomic import write_json
from kpengine.learn.augment import Augment
from kpengine.learn.batches import KeypointBatches, collate_keypoint_batches
from kpengine.learn.checkpoint import code_version, data_version, load_checkpoint, save_checkpoint
from kpengine.learn.config import TrainConfig
from kpengine.learn.distributed import DistInfo, all_reduce_sum, barrier, init_distributed, shutdown
from kpengine.learn.heads import KeypointModel
from kpengine.learn.losses import contrastive_loss, correspondence_loss, saliency_loss

log = logging.getLogger(__name__)


def build_model(config: TrainConfig, n_classes: int) -> KeypointModel:
    return KeypointModel(
        config.task, config.backbone, n_classes, embedding_dim=config.embedding_dim, **config.backbone_kwargs
    )


def task_loss(task: str, out: torch.Tensor, batch: dict[str, Any], margin: float) -> torch.Tensor:
    if task == "saliency":
        return saliency_loss(out, batch.get("saliency_soft", batch["saliency"]))
    if task == "correspondence":
        return correspondence_loss(out, batch["labellings"])
    return contrastive_loss(out, batch["keypoint_index"], margin)


def check_batch(batch: dict[str, Any]) -> None:
    """NaNs or infinities in a batch: stop with the models at fault rather than train on garbage."""
    bad = ~torch.isfinite(batch["points"]).all(dim=(1, 2))
    if bad.any():
        names = [m for m, b in zip(batch["model_id"], bad.tolist()) if b]
        raise DataError(f"non-finite point coordinates in models {names}; fix or remove them from the data")


def peak_memory_mb() -> float:
    """Peak resident memory of this process (MB), from the OS."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Trainer:
    """Holds data, model and optimiser for one run directory."""

    def __init__(self, config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True):
        self.out = Path(out)
        self.info: DistInfo = init_distributed()
        self.progress = progress and self.info.is_main
        last = self.out / "last.pt"
        state = None
        if last.is_file() and not resume:
            raise DataError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        if resume and last.is_file():
            state = load_checkpoint(last, task=config.task, category=config.category)
            saved = TrainConfig.from_json(state["config"])
            if saved.backbone != config.backbone:
                raise DataError(f"{last}: run used backbone {saved.backbone!r}, not {config.backbone!r}")
            saved.epochs = config.epochs  # resuming may extend a run
            saved.data = config.data
            saved.threads, saved.workers = config.threads, config.workers  # runtime settings, not training ones
            config = saved
        self.config = config
        torch.set_num_threads(max(1, config.threads))
        train = KeypointNetDataset(config.data, config.category, config.train_split, n_points=config.n_points)
        val = KeypointNetDataset(config.data, config.category, config.val_split, n_points=config.n_points)
        self.n_classes = train.n_classes
        aug = Augment(
            config.jitter_sigma, config.jitter_clip, config.translate, config.surface_noise, config.scale_augment
        )
        soft = config.saliency_sigma if config.task == "saliency" else 0.0
        self.train_set = KeypointBatches(train, self.n_classes, aug, seed=config.seed, saliency_sigma=soft)
        self.val_set = KeypointBatches(val, self.n_classes, None, seed=config.seed, saliency_sigma=soft)
        for ds in (self.train_set, self.val_set):
            short = [s.model_id for s in ds.shapes if s.n_points != config.n_points]
            if short:
                raise DataError(f"models {short[:5]} have clouds of other sizes than {config.n_points} points")
        torch.manual_seed(config.seed)
        try:
            self.model = build_model(config, self.n_classes)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if config.n_points < self.model.min_points:
            raise DataError(
                f"backbone {config.backbone} needs at least {self.model.min_points} points per shape, "
                f"got {config.n_points}"
            )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.start_epoch = 0
        self.best_val = float("inf")
        self.history: list[dict[str, float]] = []
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.start_epoch = state["epoch"] + 1
            self.best_val = state["best_val"]
            self.history = state["history"]
        self.net: torch.nn.Module = self.model
        if self.info.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        self.versions = {"data": data_version(config.data, train.category.name), "code": code_version()}

    # ------------------------------------------------------------------ epochs

    def _loader(self, ds: KeypointBatches, epoch: int, shuffle: bool) -> DataLoader:
        sampler = DistributedSampler(
            ds, self.info.world_size, self.info.rank, shuffle=shuffle, seed=self.config.seed, drop_last=False
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            ds,
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=collate_keypoint_batches,
            num_workers=self.config.workers,
        )

    def _train_epoch(self, epoch: int) -> float:
        from tqdm import tqdm

        torch.manual_seed(hash((self.config.seed, epoch)) % 2**31)
        self.train_set.epoch = epoch
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr_at(epoch)
        self.net.train()
        total, count = 0.0, 0
        bar = tqdm(
            self._loader(self.train_set, epoch, True),
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not self.progress,
            leave=False,
        )
        for batch in bar:
            if len(batch["points"]) < 2:  # equal on every rank: DistributedSampler pads the shards
                continue  # batch norm cannot train on one shape
            check_batch(batch)
            out = self.net(batch["points"])
            loss = task_loss(self.config.task, out, batch, self.config.margin)
            if not torch.isfinite(loss):
                raise DataError(f"loss became {loss.item()} at epoch {epoch + 1} (models {batch['model_id']})")
            full = loss + self.config.regularizer_weight * self.model.regularizer()
            self.optimizer.zero_grad(set_to_none=True)
            full.backward()
            self.optimizer.step()
            total += loss.item() * len(batch["points"])
            count += len(batch["points"])
            bar.set_postfix(loss=f"{loss.item():.4f}")
        total, count = all_reduce_sum([total, count], self.info)
        return total / max(count, 1)

    @torch.no_grad()
    def _validate(self) -> float:
        self.model.eval()
        total, count = 0.0, 0
        for batch in self._loader(self.val_set, 0, False):
            check_batch(batch)
            loss = task_loss(self.config.task, self.model(batch["points"]), batch, self.config.margin)
            total += loss.item() * len(batch["points"])
            count += len(batch["points"])
        total, count = all_reduce_sum([total, count], self.info)
        return total / max(count, 1)

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.to_json(),
            "n_classes": self.n_classes,
            "epoch": epoch,
            "best_val": self.best_val,
            "history": self.history,
            "versions": self.versions,
            "metrics": self.history[-1] if self.history else {},
        }

    def run(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the run summary (also written to history.json)."""
        cfg = self.config
        if self.info.is_main:
            write_json(self.out / "config.json", {**cfg.to_json(), "versions": self.versions}, indent=2)
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            seconds = time.perf_counter() - t0
            val_loss = self._validate()
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "seconds": seconds,
                "lr": cfg.lr_at(epoch),
                "loadavg_1m": os.getloadavg()[0],
                "peak_memory_mb": peak_memory_mb(),
            }
            self.history.append(row)
            improved = val_loss < self.best_val
            if improved:
                self.best_val = val_loss
            if self.info.is_main:
                state = self._state(epoch)
                if improved:
                    save_checkpoint(self.out / "best.pt", state)
                save_checkpoint(self.out / "last.pt", state)
                self._write_report()
                log.info("epoch %d: train %.4f val %.4f (%.1f s)", epoch + 1, train_loss, val_loss, seconds)
                if self.progress:
                    mark = " *" if improved else ""
                    print(
                        f"epoch {epoch + 1}/{cfg.epochs}  train {train_loss:.4f}  val {val_loss:.4f}  "
                        f"{seconds:.1f} s{mark}",
                        flush=True,
                    )
            barrier(self.info)
        summary = self.summary()
        shutdown(self.info)
        return summary

    def summary(self) -> dict[str, Any]:
        secs = [h["seconds"] for h in self.history]
        return {
            "run": str(self.out),
            "task": self.config.task,
            "backbone": self.config.backbone,
            "category": self.config.category,
            "epochs": len(self.history),
            "best_val_loss": self.best_val,
            "best_epoch": 1 + int(np.argmin([h["val_loss"] for h in self.history])) if self.history else None,
            "seconds_per_epoch": float(np.median(secs)) if secs else None,
            "peak_memory_mb": peak_memory_mb(),
            "world_size": self.info.world_size,
        }

    def _write_report(self) -> None:
        from kpengine.learn.curves import plot_training_curve

        write_json(self.out / "history.json", {"summary": self.summary(), "epochs": self.history}, indent=2)
        plot_training_curve(self.out / "curve.png", self.history, title=f"{self.config.task} / {self.config.backbone}")


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a run into ``out`` (or continue it with ``resume``); returns the summary."""
    return Trainer(config, out, resume=resume, progress=progress).run()


def read_history(run: str | Path) -> dict[str, Any]:
    return json.loads((Path(run) / "history.json").read_text())
