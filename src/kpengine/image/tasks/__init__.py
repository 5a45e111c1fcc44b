"""The image tasks of ``kpengine train`` (one module per task, registered in :data:`kpengine.learn.registry.TASKS`)."""

from __future__ import annotations

from kpengine.learn.registry import TASKS

TASKS.add_package(__name__)


def image_task(name: str):
    """The registered task class ``name`` (a ``kpengine.learn.runs.Task`` subclass); library code
    that reads image runs uses it, so it needs no CLI to have added this package."""
    return TASKS.get(name)
