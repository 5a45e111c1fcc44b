"""Shape spaces on disk: a shape collection's light-field descriptors, distances and embedding.

One NumPy ``.npz`` (no pickles), written atomically, read and validated by :func:`load_shape_space`:

====================  ===============  ================================================================
array                 shape, type      what
====================  ===============  ================================================================
``meta``              () str           JSON header: ``{"format": "kpengine-shape-space", "version": 1,
                                       "category": str, "spec": light-field settings, "distance":
                                       "sum" | "rotation", ...}`` (free-form fields such as ``stress``)
``model_ids``         (N,) str         one per shape, unique
``splits``            (N,) str         ``train`` / ``val`` / ``test`` (the official split of each shape)
``hog``               (N, V, H) f32    optional: HoG descriptor of each of V views (light field)
``distances``         (N, N) f64       optional: shape-to-shape distances (symmetric, >= 0, zero diagonal)
``coords``            (N, D) f32       optional: the embedding (a point per shape, e.g. D = 128)
====================  ===============  ================================================================

The ``shape-embedding`` task caches a collection's descriptors and distances as a file without
``coords`` and writes ``shape_space.npz`` (all arrays) into its run directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import atomic_open

FORMAT = "kpengine-shape-space"
VERSION = 1
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ShapeSpace:
    """A shape collection of one category in memory (fields as the module docstring's arrays)."""

    category: str
    model_ids: list[str]
    splits: list[str]
    hog: np.ndarray | None = None
    distances: np.ndarray | None = None
    coords: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.model_ids)

    def index(self) -> dict[str, int]:
        """model id -> row."""
        return {m: i for i, m in enumerate(self.model_ids)}


def _check(space: ShapeSpace, path: Path | str) -> None:
    n = len(space.model_ids)
    if len(space.splits) != n:
        raise DataError(f"{len(space.splits)} splits for {n} model_ids", path=path)
    if len(set(space.model_ids)) != n:
        dup = sorted({m for m in space.model_ids if space.model_ids.count(m) > 1})
        raise DataError(f"model_ids repeat: {', '.join(dup[:5])}", path=path)
    bad = sorted(set(space.splits) - set(SPLIT_NAMES))
    if bad:
        raise DataError(f"splits holds {bad}; expected {', '.join(SPLIT_NAMES)}", path=path)
    if not isinstance(space.category, str) or not space.category:
        raise DataError("meta: category missing", path=path)
    for name, ndim in (("hog", 3), ("distances", 2), ("coords", 2)):
        a = getattr(space, name)
        if a is None:
            continue
        if a.ndim != ndim or a.shape[0] != n:
            raise DataError(
                f"{name} has shape {a.shape}; expected {ndim} axes with {n} rows (one per model)", path=path
            )
        if not np.issubdtype(a.dtype, np.floating):
            raise DataError(f"{name} of type {a.dtype}; expected floats", path=path)
        if not np.isfinite(a).all():
            raise DataError(f"{name} holds NaN or infinite values", path=path)
    d = space.distances
    if d is not None:
        if d.shape != (n, n):
            raise DataError(f"distances has shape {d.shape}; expected ({n}, {n})", path=path)
        if (d < 0).any() or np.abs(np.diag(d)).max(initial=0) > 0 or not np.allclose(d, d.T, rtol=1e-6, atol=1e-9):
            raise DataError("distances must be symmetric, non-negative, with a zero diagonal", path=path)


def save_shape_space(path: str | Path, space: ShapeSpace) -> None:
    """Validate ``space`` and write it as ``.npz`` atomically (a temporary sibling, fsync, rename)."""
    _check(space, path)
    meta = {**space.meta, "format": FORMAT, "version": VERSION, "category": space.category}
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps(meta)),
        "model_ids": np.array(space.model_ids, dtype=str),
        "splits": np.array(space.splits, dtype=str),
    }
    for name, dtype in (("hog", np.float32), ("distances", np.float64), ("coords", np.float32)):
        a = getattr(space, name)
        if a is not None:
            arrays[name] = np.asarray(a, dtype)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_shape_space(path: str | Path, *, need: tuple[str, ...] = ()) -> ShapeSpace:
    """Read a file written by :func:`save_shape_space`; ``need`` names optional arrays that must be
    present (e.g. ``("coords",)``). Bad files raise DataError naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no shape space here (train a shape-embedding run first)", path=path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"unreadable shape space ({exc})", path=path) from exc
    for key in ("meta", "model_ids", "splits"):
        if key not in arrays:
            raise DataError(f"not a shape space: no {key!r} array", path=path)
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as exc:
        raise DataError(f"meta is not JSON ({exc})", path=path) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(
            f"not a {FORMAT} file (format {meta.get('format') if isinstance(meta, dict) else None!r})", path=path
        )
    if meta.get("version") != VERSION:
        raise DataError(
            f"shape space version {meta.get('version')!r}; this kpengine reads version {VERSION}", path=path
        )
    missing = [k for k in need if k not in arrays]
    if missing:
        raise DataError(f"shape space lacks {', '.join(missing)}", path=path)
    space = ShapeSpace(
        category=meta.get("category"),
        model_ids=[str(m) for m in arrays["model_ids"].tolist()],
        splits=[str(s) for s in arrays["splits"].tolist()],
        hog=arrays.get("hog"),
        distances=arrays.get("distances"),
        coords=arrays.get("coords"),
        meta={k: v for k, v in meta.items() if k not in ("format", "version", "category")},
    )
    _check(space, path)
    return space
