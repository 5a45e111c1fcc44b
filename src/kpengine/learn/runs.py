"""One run mechanism for every network (point, image, voxel): a task brings the network and
its data; this module does the rest.

A **task** (subclass :class:`Task`, one file registered in :data:`kpengine.learn.registry.TASKS`)
holds its config (a :class:`~kpengine.learn.config.RunConfig` subclass) and answers:

* ``data() -> Data(train, val, collate)``: torch datasets (``val`` may be None) and the collate
  function. A dataset with an ``epoch`` attribute is told the epoch before each training pass
  (seed its augmentation from it and the run stays exact on resume).
* ``model() -> nn.Module``: built after ``torch.manual_seed(config.seed)``.
* ``loss(net, batch) -> scalar tensor``: the mean loss of a batch (forward included; ``net`` is
  the DDP wrapper in training, the plain model in validation). Optional hooks: ``penalty(model)``
  (added in training only, e.g. a regulariser), ``check(batch)`` (raise DataError on bad input),
  ``size(batch)`` (items, weights the means), ``trainable(batch)``, ``where(batch)`` (names for
  error messages), ``metrics(model, batch)`` (extra validation sums over items, averaged into
  the history), ``finish(model, out)`` (rank 0, after the last epoch of a run with a directory: write a
  task's own result file, e.g. the shape-embedding task's ``shape_space.npz``),
  ``validate(model)`` (whole-set validation instead of the per-batch one, for
  measures that are not means, e.g. medians; returns a dict with ``val_loss``; under torchrun
  every rank runs it and must get the same), ``data_version()``, ``describe()`` (summary
  fields), ``checkpoint_extras()``, ``title()``, ``optimizer(model)`` (default Adam(lr,
  weight_decay)).

:class:`Run` ``(task, out, resume=False, progress=True).run() -> summary`` then gives:

* the run directory ``out``: ``config.json`` (config + data/code versions), ``last.pt`` after
  every epoch, ``best.pt`` at the lowest validation loss (training loss without a validation
  set), ``history.json`` (summary + one row per epoch), ``curve.png``; checkpoints hold weights,
  optimiser, config, data hash, code version, history, metrics, written atomically;
* ``resume=True``: the saved config wins for training settings (``IDENTITY`` fields must match,
  ``RUNTIME`` fields come from the given config), and the result is bit-identical to an
  uninterrupted run: torch is reseeded from (seed, epoch), shuffling is
  ``DistributedSampler(seed).set_epoch(epoch)``, the learning rate a function of the epoch only;
* torchrun: the same code under ``torchrun --nproc_per_node N`` trains with DDP (gloo on CPU,
  NCCL with ``device="cuda"``); rank 0 alone logs and writes;
* progress bars on a terminal, one line per epoch otherwise (``progress=False``: silent);
* ``time_limit_s``: stop after the first epoch that ends past it (a device's time budget);
  ``resume`` continues;
* ``out=None``: an in-memory run (nothing written, no resume), e.g. a network trained inside a
  pipeline; the trained model is ``Run.model``.

An image network, for example (``kpengine train --task viewpoint`` when the module is in a
package the CLI adds to the registry; ``train_run`` from Python in any case)::

    @dataclass(kw_only=True)
    class ViewpointConfig(RunConfig):
        size: int = 64
        IDENTITY: ClassVar[tuple[str, ...]] = ("task", "size")

    @TASKS.register("viewpoint")
    class ViewpointTask(Task):
        config_class = ViewpointConfig

        def data(self) -> Data:  # augmentation: per item from (seed, epoch, index), or torch's RNG
            return Data(ViewDataset(..., train=True), ViewDataset(..., train=False), default_collate)

        def model(self) -> nn.Module:
            return ViewpointNet(self.config.size)

        def loss(self, net, batch):
            x, azimuth, elevation = batch
            return viewpoint_loss(net(x), azimuth, elevation)

        def optimizer(self, model):
            return torch.optim.AdamW(model.parameters(), lr=self.config.lr, weight_decay=1e-4)

    config = ViewpointConfig(task="viewpoint", epochs=30, lr=2e-3, lr_schedule="cosine", min_lr_ratio=0.0)
    summary = train_run(ViewpointTask(config), "runs/vp", time_limit_s=480)
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from kpengine.errors import DataError
from kpengine.io.atomic import write_json
from kpengine.learn.checkpoint import code_version, load_checkpoint, save_checkpoint
from kpengine.learn.config import RunConfig
from kpengine.learn.curves import plot_training_curve
from kpengine.learn.distributed import DistInfo, all_reduce_sum, average_buffers, barrier, init_distributed, shutdown

log = logging.getLogger(__name__)

CURVE_EVERY_S = 30.0  # the training curve is redrawn at most this often during a run (and at its end)


@dataclass
class Data:
    """What a task trains and validates on."""

    train: Dataset
    val: Dataset | None
    collate: Callable[[list[Any]], Any]


class Task(ABC):
    """A trainable network with its data, loss and metrics (see the module docstring)."""

    #: the config class of the task's runs
    config_class: ClassVar[type[RunConfig]] = RunConfig
    #: shuffle the training set every epoch
    shuffle: ClassVar[bool] = True

    def __init__(self, config: RunConfig):
        if not isinstance(config, self.config_class):
            raise DataError(f"task {config.task!r} needs a {self.config_class.__name__}, not {type(config).__name__}")
        self.config = config

    @abstractmethod
    def data(self) -> Data: ...

    @abstractmethod
    def model(self) -> nn.Module: ...

    @classmethod
    def load_model(cls, state: dict[str, Any]) -> nn.Module:
        """The trained network of a checkpoint (eval mode), built by :meth:`model` from the saved
        config: one way back from a run for every task (a task's ``__init__`` must not load data)."""
        saved = dict(state["config"])
        for f in fields(cls.config_class):  # runtime settings (the data path) do not shape the network
            required = f.default is MISSING and f.default_factory is MISSING
            if f.name in cls.config_class.RUNTIME and f.name not in saved and required:
                saved[f.name] = ""
        model = cls(cls.config_class.from_json(saved)).model()
        model.load_state_dict(state["model"])
        return model.eval()

    @abstractmethod
    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor: ...

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        return 0.0

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def check(self, batch: Any) -> None:  # noqa: B027 - a hook; nothing to check by default
        """Raise DataError on a batch that must not be trained on."""

    def trainable(self, batch: Any) -> bool:
        return True

    def size(self, batch: Any) -> int:
        """Number of items in a batch: the first tensor's length."""
        if isinstance(batch, dict):
            batch = next(v for v in batch.values() if isinstance(v, torch.Tensor))
        elif isinstance(batch, (list, tuple)):
            batch = batch[0]
        return len(batch)

    def where(self, batch: Any) -> str:
        return "this batch"

    def metrics(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Validation metrics summed over the batch's items (the run averages them); the same keys
        for every batch (ranks add their sums key by key)."""
        return {}

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        """Whole-set validation (model in eval mode, no gradients): a dict with ``val_loss`` and
        any other measures; None (the default) = the run's per-batch validation of ``data().val``."""
        return None

    def finish(self, model: nn.Module, out: Path) -> None:  # noqa: B027 - a hook; nothing by default
        """After the run's last epoch (rank 0, runs with a directory): write the task's own result files."""

    def data_version(self) -> str:
        return ""

    def describe(self) -> dict[str, Any]:
        """Fields of the run summary after ``task`` (e.g. backbone, category)."""
        return {}

    def checkpoint_extras(self) -> dict[str, Any]:
        return {}

    def title(self) -> str:
        return self.config.task


def peak_memory_mb() -> float:
    """Peak resident memory of this process (MB), from the OS."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resumed_config(given: RunConfig, saved: dict[str, Any], path: Path) -> RunConfig:
    """The config a resumed run goes on with: the saved one, with the given RUNTIME settings."""
    for name in given.IDENTITY:
        if saved.get(name) != getattr(given, name):
            raise DataError(f"run used {name} {saved.get(name)!r}, not {getattr(given, name)!r}", path=path)
    config = type(given).from_json(saved)
    ignored = [
        f.name
        for f in fields(config)
        if f.name not in given.RUNTIME and getattr(config, f.name) != getattr(given, f.name)
    ]
    if ignored:
        log.warning("resuming %s with its saved %s (the given values are ignored)", path.parent, ", ".join(ignored))
    for name in given.RUNTIME:
        setattr(config, name, getattr(given, name))
    return config


def to_device(batch: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def to_cpu(tree: Any) -> Any:
    """Tensors of a (nested dict/list/tuple) network output moved to the CPU, for numpy metrics."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


def module_device(module: nn.Module) -> torch.device:
    """Where a network's parameters live (the CPU for one without any): inputs made on the CPU go there."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class Run:
    """One run of a task, in a run directory (or in memory with ``out=None``)."""

    def __init__(
        self,
        task: Task,
        out: str | Path | None,
        *,
        resume: bool = False,
        progress: bool = True,
        time_limit_s: float | None = None,
    ):
        self.out = Path(out) if out is not None else None
        self.time_limit_s = time_limit_s
        self._curve_drawn = float("-inf")  # monotonic time curve.png was last drawn
        self.info: DistInfo = init_distributed(task.config.device)
        self.progress = progress and self.info.is_main
        self.bars = self.progress and sys.stderr.isatty()
        state = None
        if self.out is not None:
            last = self.out / "last.pt"
            if last.is_file() and not resume:
                raise DataError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
            if resume and last.is_file():
                state = load_checkpoint(last)
                task.config = resumed_config(task.config, state["config"], last)
        self.task = task
        self.config = cfg = task.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device if cfg.device != "cuda" else f"cuda:{self.info.local_rank}")
        data = task.data()
        self.train_set, self.val_set, self.collate = data.train, data.val, data.collate
        torch.manual_seed(cfg.seed)
        self.model = task.model().to(self.device)
        self.optimizer = task.optimizer(self.model)
        self.start_epoch = 0
        self.best_val = float("inf")
        self.history: list[dict[str, Any]] = []
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.start_epoch = state["epoch"] + 1
            self.best_val = state["best_val"]
            self.history = state["history"]
        self.net: nn.Module = self.model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.versions = {"data": task.data_version(), "code": code_version()} if self.out is not None else {}

    # ------------------------------------------------------------------ epochs

    def _loader(self, ds: Dataset, epoch: int, shuffle: bool) -> DataLoader:
        sampler = DistributedSampler(
            ds, self.info.world_size, self.info.rank, shuffle=shuffle, seed=self.config.seed, drop_last=False
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            ds,
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.config.workers,
        )

    def _train_epoch(self, epoch: int) -> float:
        cfg, task = self.config, self.task
        torch.manual_seed(hash((cfg.seed, epoch)) % 2**31)
        if hasattr(self.train_set, "epoch"):
            self.train_set.epoch = epoch
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.lr_at(epoch)
        self.net.train()
        total, count = 0.0, 0
        bar = tqdm(
            self._loader(self.train_set, epoch, task.shuffle),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not self.bars,
            leave=False,
        )
        for batch in bar:
            if not task.trainable(batch):  # must be equal on every rank (DistributedSampler pads the shards)
                continue
            task.check(batch)
            batch = to_device(batch, self.device)
            loss = task.loss(self.net, batch)
            if not torch.isfinite(loss):
                raise DataError(f"loss became {loss.item()} at epoch {epoch + 1} ({task.where(batch)})")
            full = loss + task.penalty(self.model)
            self.optimizer.zero_grad(set_to_none=True)
            full.backward()
            self.optimizer.step()
            n = task.size(batch)
            total += loss.item() * n
            count += n
            bar.set_postfix(loss=f"{loss.item():.4f}")
        total, count = all_reduce_sum([total, count], self.info, self.device)
        return total / max(count, 1)

    @torch.no_grad()
    def _validate(self) -> dict[str, float | None]:
        """val_loss and the task's metrics: the task's own whole-set validation, or means over the
        validation items of all ranks; val_loss None without a validation set."""
        self.model.eval()
        own = self.task.validate(self.model)
        if own is not None:
            return dict(own)
        if self.val_set is None:
            return {"val_loss": None}
        sums: dict[str, float] = {"val_loss": 0.0}
        count = 0
        for batch in self._loader(self.val_set, 0, False):
            self.task.check(batch)
            batch = to_device(batch, self.device)
            n = self.task.size(batch)
            sums["val_loss"] += self.task.loss(self.model, batch).item() * n
            for k, v in self.task.metrics(self.model, batch).items():
                sums[k] = sums.get(k, 0.0) + v
            count += n
        *values, count = all_reduce_sum([*sums.values(), count], self.info, self.device)
        return {k: v / max(count, 1) for k, v in zip(sums, values)}

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.to_json(),
            **self.task.checkpoint_extras(),
            "epoch": epoch,
            "best_val": self.best_val,
            "history": self.history,
            "versions": self.versions,
            "metrics": self.history[-1] if self.history else {},
        }

    @staticmethod
    def _score(row: dict[str, Any]) -> float:
        """What "best" minimises: validation loss, or training loss for a run without validation."""
        return row["val_loss"] if row.get("val_loss") is not None else row["train_loss"]

    def run(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the run summary (also written to history.json)."""
        cfg = self.config
        if self.info.is_main and self.out is not None:
            write_json(self.out / "config.json", {**cfg.to_json(), "versions": self.versions}, indent=2)
        started = time.monotonic()
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            seconds = time.perf_counter() - t0
            average_buffers(self.model, self.info)  # every rank validates, and rank 0 saves, the same model
            val = self._validate()
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val.pop("val_loss"),
                "seconds": seconds,
                "lr": cfg.lr_at(epoch),
                "loadavg_1m": os.getloadavg()[0],
                "peak_memory_mb": peak_memory_mb(),
                **val,
            }
            self.history.append(row)
            improved = self._score(row) < self.best_val
            if improved:
                self.best_val = self._score(row)
            if self.info.is_main:
                if self.out is not None:
                    state = self._state(epoch)
                    if improved:
                        save_checkpoint(self.out / "best.pt", state)
                    save_checkpoint(self.out / "last.pt", state)
                    self._write_report()
                vl = "–" if row["val_loss"] is None else f"{row['val_loss']:.4f}"
                log.info("epoch %d: train %.4f val %s (%.1f s)", epoch + 1, train_loss, vl, seconds)
                if self.progress and self.out is not None:
                    mark = " *" if improved else ""
                    print(
                        f"epoch {epoch + 1}/{cfg.epochs}  train {train_loss:.4f}  val {vl}  {seconds:.1f} s{mark}",
                        flush=True,
                    )
            barrier(self.info)
            if self.time_limit_s is not None:
                over = float(time.monotonic() - started > self.time_limit_s)
                if all_reduce_sum([over], self.info, self.device)[0] > 0:  # every rank stops together
                    log.warning("time limit reached after epoch %d; resume continues the run", epoch + 1)
                    break
        if self.info.is_main and self.out is not None:
            self._write_report(final=True)
            self.task.finish(self.model, self.out)
        summary = self.summary()
        shutdown(self.info)
        return summary

    def summary(self) -> dict[str, Any]:
        secs = [h["seconds"] for h in self.history]
        return {
            "run": str(self.out),
            "task": self.config.task,
            **self.task.describe(),
            "epochs": len(self.history),
            "best_val_loss": self.best_val,
            "best_epoch": 1 + int(np.argmin([self._score(h) for h in self.history])) if self.history else None,
            "seconds_per_epoch": float(np.median(secs)) if secs else None,
            "peak_memory_mb": peak_memory_mb(),
            "world_size": self.info.world_size,
        }

    def _write_report(self, final: bool = False) -> None:
        """history.json after every epoch (resume and scripts read it); curve.png at most every
        ``CURVE_EVERY_S`` seconds and at the end. Why: drawing the figure costs ~0.3-1 s, which
        dominated few-shot runs whose epochs are a single step (3-5 s per step, issue 15)."""
        write_json(self.out / "history.json", {"summary": self.summary(), "epochs": self.history}, indent=2)
        now = time.monotonic()
        if final or now - self._curve_drawn >= CURVE_EVERY_S:
            plot_training_curve(self.out / "curve.png", self.history, title=self.task.title())
            self._curve_drawn = now


def train_run(
    task: Task,
    out: str | Path | None,
    *,
    resume: bool = False,
    progress: bool = True,
    time_limit_s: float | None = None,
) -> dict[str, Any]:
    """Train ``task`` into ``out`` (or continue it with ``resume``); returns the summary.
    ``time_limit_s``: stop after the epoch that passes it (resume continues)."""
    return Run(task, out, resume=resume, progress=progress, time_limit_s=time_limit_s).run()
