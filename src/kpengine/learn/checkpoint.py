"""Checkpoints: weights, optimiser, config, data and code versions, metrics; written atomically.

``last.pt`` is rewritten after every epoch (what ``--resume`` reads) and ``best.pt`` whenever
the validation loss improves (what ``predict`` and ``transfer`` read). A kill during a write
leaves the previous file intact (temporary sibling, fsync, rename).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path
from typing import Any

import torch

import kpengine
from kpengine.errors import DataError
from kpengine.io import layout
from kpengine.io.atomic import write_bytes
from kpengine.io.splits import SPLITS

FORMAT = 1


def data_version(root: str | Path, category: str) -> str:
    """SHA-256 (first 16 hex) of the category's annotation file and the split files: what was learnt from."""
    root = Path(root)
    h = hashlib.sha256()
    ann = layout.annotation_path(root, category)
    for path in [ann, *(layout.split_path(root, s) for s in SPLITS)]:
        if path is not None and Path(path).is_file():
            h.update(Path(path).read_bytes())
    return h.hexdigest()[:16]


def code_version() -> str:
    """kpengine's version plus the git commit of the source tree when there is one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(kpengine.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{kpengine.__version__}+{commit}" if commit else kpengine.__version__


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    write_bytes(path, buf.getvalue())


def best_checkpoint(run: str | Path) -> Path:
    """A run directory's checkpoint to use for inference: ``best.pt`` (lowest validation loss) when the run
    kept one, else ``last.pt`` (a run without validation data writes only that)."""
    run = Path(run)
    return run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"


def load_checkpoint(path: str | Path, *, task: str | None = None, category: str | None = None) -> dict[str, Any]:
    """Load a checkpoint; refuse one made for another task or category, naming both."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no checkpoint here (train first, or check --run)", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise DataError(f"unreadable checkpoint ({type(exc).__name__}: {exc})", path=path) from exc
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise DataError("not a kpengine checkpoint (no config or weights)", path=path)
    cfg = state["config"]
    if task is not None and cfg.get("task") != task:
        raise DataError(f"checkpoint was trained for task {cfg['task']!r}, not {task!r}", path=path)
    if category is not None and cfg.get("category") != category:
        raise DataError(
            f"checkpoint was trained on category {cfg['category']!r}; it cannot predict {category!r}", path=path
        )
    return state
