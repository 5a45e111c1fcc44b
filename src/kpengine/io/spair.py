"""SPair-71k pair annotations (Min et al. 2019): corresponding keypoints and boxes of two photos.

A pair file is a JSON list; each entry has ``source_path`` and ``target_path`` (photo file names,
beside the JSON file), ``source_points`` and ``target_points`` (K x [x, y] pixels, entry k of
one corresponding to entry k of the other), ``source_bounding_box`` and ``target_bounding_box``
(``[xmin, ymin, xmax, ymax]``), ``category`` and, optionally, SPair's difficulty fields
(``viewpoint_variation``, ``mirror``, ``source_pose``, ``target_pose``), kept as given. SPair's
PCK threshold is ``alpha * max(w, h)`` of the *target box*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import read_json


@dataclass(frozen=True)
class SpairPair:
    """One annotated pair; points (K, 2) float64 (x, y); boxes (4,) float64 ``xmin, ymin, xmax, ymax``."""

    source_path: Path
    target_path: Path
    source_points: np.ndarray
    target_points: np.ndarray
    source_box: np.ndarray
    target_box: np.ndarray
    category: str
    extra: dict[str, Any] = field(default_factory=dict)


def _array(entry: dict, key: str, shape: tuple[int | None, int], where: str, path: Path) -> np.ndarray:
    if key not in entry:
        raise DataError(f"{where}: field {key!r} missing", path=path)
    try:
        a = np.asarray(entry[key], np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {key} is not numeric ({exc})", path=path) from exc
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        want = " x ".join("K" if s is None else str(s) for s in shape)
        raise DataError(f"{where}: {key} has shape {a.shape}, expected {want}", path=path)
    if not np.isfinite(a).all():
        raise DataError(f"{where}: {key} has non-finite values", path=path)
    return a


def load_spair_pairs(path: str | Path) -> list[SpairPair]:
    """Every pair of a SPair pair file; photos must exist beside it, boxes be non-empty, points match in count."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list) or not data:
        raise DataError("expected a non-empty JSON list of pairs", path=path)
    known = {"source_path", "target_path", "source_points", "target_points", "category"}
    known |= {"source_bounding_box", "target_bounding_box"}
    pairs = []
    for i, e in enumerate(data):
        where = f"pair {i}"
        if not isinstance(e, dict):
            raise DataError(f"{where}: expected an object, got {type(e).__name__}", path=path)
        src = _array(e, "source_points", (None, 2), where, path)
        tgt = _array(e, "target_points", (None, 2), where, path)
        if len(src) != len(tgt) or not len(src):
            raise DataError(f"{where}: {len(src)} source points and {len(tgt)} target points", path=path)
        boxes = [_array(e, k, (4,), where, path) for k in ("source_bounding_box", "target_bounding_box")]
        for k, b in zip(("source_bounding_box", "target_bounding_box"), boxes):
            if b[2] <= b[0] or b[3] <= b[1]:
                raise DataError(f"{where}: {k} {b.tolist()} is empty (expected xmin < xmax, ymin < ymax)", path=path)
        photos = []
        for k in ("source_path", "target_path"):
            if not isinstance(e.get(k), str):
                raise DataError(f"{where}: field {k!r} missing or not a file name", path=path)
            p = path.parent / e[k]
            if not p.is_file():
                raise DataError(f"{where}: photo {e[k]!r} not found beside the pair file", path=p)
            photos.append(p)
        if not isinstance(e.get("category"), str):
            raise DataError(f"{where}: field 'category' missing or not text", path=path)
        extra = {k: v for k, v in e.items() if k not in known}
        pairs.append(SpairPair(photos[0], photos[1], src, tgt, boxes[0], boxes[1], e["category"], extra))
    return pairs
