"""Training a point task (saliency, correspondence, embedding) through the run mechanism.

:class:`Trainer` is :class:`kpengine.learn.runs.Run` for a :class:`TrainConfig`: the config's
task is looked up in the task registry; everything else (run directory, checkpoints, exact
resume, torchrun, history, curve) is the run mechanism's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kpengine.learn.config import TrainConfig
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Run


class Trainer(Run):
    """A run of the point task ``config.task`` in the run directory ``out``."""

    def __init__(self, config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True):
        super().__init__(TASKS.get(config.task)(config), out, resume=resume, progress=progress)


def train(config: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a run into ``out`` (or continue it with ``resume``); returns the summary."""
    return Trainer(config, out, resume=resume, progress=progress).run()
