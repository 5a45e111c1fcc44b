"""A small resumable training loop for the image networks (until they move onto ``kpengine.learn.runs``).

The run directory holds ``config.json``, ``last.pt`` (weights, optimiser, schedule, epoch,
history; rewritten atomically after every epoch: what a resumed run reads), ``history.json``
and ``curve.png``. Every epoch reseeds from (seed, epoch), so a resumed run draws the same
batches as an uninterrupted one. The checkpoint's config names the task and category, so a
command handed a run of another task or category refuses it (``learn.checkpoint``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kpengine.errors import DataError
from kpengine.io.atomic import write_json
from kpengine.learn.checkpoint import code_version, load_checkpoint, save_checkpoint
from kpengine.learn.curves import plot_training_curve

log = logging.getLogger(__name__)


@dataclass
class ImageTask:
    """What ``fit`` needs from a task: its model, batches, loss and a validation measure."""

    name: str
    category: str
    config: dict[str, Any]
    model: torch.nn.Module
    batches: Callable[[torch.Generator], Iterable[Any]]  # one epoch of training batches
    loss: Callable[[torch.nn.Module, Any], torch.Tensor]
    validate: Callable[[torch.nn.Module], dict[str, float]]  # must return "val_loss"
    extra: dict[str, Any] = field(default_factory=dict)  # saved with the weights (e.g. a shape space)


def fit(
    task: ImageTask,
    out: str | Path,
    *,
    epochs: int,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    resume: bool = False,
    time_limit_s: float | None = None,
) -> list[dict[str, float]]:
    """Train ``task.model`` for ``epochs`` (AdamW, cosine schedule), one log line per epoch; returns the history."""
    out = Path(out)
    last = out / "last.pt"
    if last.is_file() and not resume:
        raise DataError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    model = task.model
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs)))
    history: list[dict[str, float]] = []
    start = 0
    config = {"task": task.name, "category": task.category, **task.config, "epochs": epochs, "lr": lr, "seed": seed}
    if resume and last.is_file():
        state = load_checkpoint(last, task=task.name, category=task.category)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start = state["history"], state["epoch"]
    write_json(out / "config.json", config)
    t0 = time.monotonic()
    for epoch in range(start, epochs):
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        torch.manual_seed(seed * 100_003 + epoch)
        model.train()
        total, count, te = 0.0, 0, time.monotonic()
        for batch in task.batches(gen):
            loss = task.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item(), count + 1
        sched.step()
        model.eval()
        with torch.no_grad():
            metrics = task.validate(model)
        row = {"epoch": epoch + 1, "train_loss": total / max(count, 1), **metrics, "seconds": time.monotonic() - te}
        history.append(row)
        state = {
            "config": config,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": epoch + 1,
            "history": history,
            "code_version": code_version(),
            **task.extra,
        }
        save_checkpoint(last, state)
        write_json(out / "history.json", history)
        plot_training_curve(out / "curve.png", history, title=f"{task.name} ({task.category})")
        log.warning(
            "epoch %d/%d %s", epoch + 1, epochs, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
        )
        if time_limit_s is not None and time.monotonic() - t0 > time_limit_s:
            log.warning("time limit reached after epoch %d; resume to continue", epoch + 1)
            break
    return history
