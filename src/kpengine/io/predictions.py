"""Prediction files of the 3D tasks, as ``kpengine predict`` writes and ``kpengine evaluate`` reads.

Point indices refer to the model's cloud as kpengine loads it:

* saliency: ``{"<model_id>": [[point_index, score], ...], ...}``
* correspondence: ``{"<model_id>": {"<semantic_id>": point_index, ...}, ...}``

The loaders check every entry against the models they are given (``n_points``: the cloud
size of each known model) and return warnings for what they ignore: models not known, and
(correspondence) semantic ids outside ``[0, n_classes)``. A malformed entry raises
``DataError`` naming the file and the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import read_json, write_json

#: model id -> (point indices (P,) int64, scores (P,) float64)
SaliencyPredictions = dict[str, tuple[np.ndarray, np.ndarray]]
#: model id -> {semantic id: point index}
CorrespondencePredictions = dict[str, dict[int, int]]


def _warn_unknown(kind: str, names: list[str], path: Path, warnings: list[str]) -> None:
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        warnings.append(f"{path}: {len(names)} {kind} not in the evaluated split, ignored: {shown}")


def load_saliency_predictions(path: str | Path, n_points: Mapping[str, int]) -> tuple[SaliencyPredictions, list[str]]:
    """Read a saliency file, keeping the models in ``n_points``; returns predictions and warnings."""
    return parse_saliency_predictions(read_json(Path(path)), n_points, path)


def parse_saliency_predictions(
    raw: Any, n_points: Mapping[str, int], path: str | Path
) -> tuple[SaliencyPredictions, list[str]]:
    """Check saliency predictions already parsed from JSON (the explorer receives a file's
    content, not a path); ``path`` names the source in messages."""
    path = Path(path)
    if not isinstance(raw, dict):
        raise DataError('saliency predictions must be an object {"<model_id>": [[point_index, score], ...]}', path=path)
    out: SaliencyPredictions = {}
    warnings: list[str] = []
    _warn_unknown("models", [m for m in raw if m not in n_points], path, warnings)
    for mid, items in raw.items():
        if mid not in n_points:
            continue
        n = n_points[mid]
        if not isinstance(items, list):
            raise DataError("expected a list of [point_index, score] pairs", path=path, model_id=mid)
        idx = np.zeros(len(items), np.int64)
        score = np.zeros(len(items))
        for j, item in enumerate(items):
            ok = isinstance(item, (list, tuple)) and len(item) == 2
            if ok:
                i, s = item
                ok = isinstance(i, int) and not isinstance(i, bool) and isinstance(s, (int, float)) and math.isfinite(s)
            if not ok:
                raise DataError(
                    f"entry {j}: expected [point_index, finite score], got {item!r}", path=path, model_id=mid
                )
            if not 0 <= i < n:
                raise DataError(f"entry {j}: point index {i} out of range [0, {n})", path=path, model_id=mid)
            idx[j], score[j] = i, s
        out[mid] = (idx, score)
    return out, warnings


def save_saliency_predictions(path: str | Path, predictions: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``{model_id: [[point_index, score], ...]}`` atomically (scores as Python floats: exact)."""
    write_json(
        path,
        {
            mid: [[int(i), float(s)] for i, s in zip(np.asarray(idx).tolist(), np.asarray(score).tolist())]
            for mid, (idx, score) in predictions.items()
        },
    )


def load_correspondence_predictions(
    path: str | Path, n_points: Mapping[str, int], n_classes: int
) -> tuple[CorrespondencePredictions, list[str]]:
    """Read a correspondence file, keeping the models in ``n_points`` and ids in ``[0, n_classes)``."""
    return parse_correspondence_predictions(read_json(Path(path)), n_points, n_classes, path)


def parse_correspondence_predictions(
    raw: Any, n_points: Mapping[str, int], n_classes: int, path: str | Path
) -> tuple[CorrespondencePredictions, list[str]]:
    """Check correspondence predictions already parsed from JSON (see :func:`parse_saliency_predictions`)."""
    path = Path(path)
    if not isinstance(raw, dict):
        raise DataError(
            'correspondence predictions must be an object {"<model_id>": {"<semantic_id>": point_index}}', path=path
        )
    out: CorrespondencePredictions = {}
    warnings: list[str] = []
    _warn_unknown("models", [m for m in raw if m not in n_points], path, warnings)
    unknown_ids: set[str] = set()
    for mid, items in raw.items():
        if mid not in n_points:
            continue
        n = n_points[mid]
        if not isinstance(items, dict):
            raise DataError("expected an object {semantic_id: point_index}", path=path, model_id=mid)
        out[mid] = {}
        for key, i in items.items():
            try:
                sid = int(key)
            except ValueError:
                raise DataError(f"semantic id {key!r} is not an integer", path=path, model_id=mid) from None
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
                raise DataError(f"semantic id {sid}: point index {i!r} is not in [0, {n})", path=path, model_id=mid)
            if not 0 <= sid < n_classes:
                unknown_ids.add(key)
                continue
            out[mid][sid] = i
    _warn_unknown("semantic ids", sorted(unknown_ids), path, warnings)
    return out, warnings


def save_correspondence_predictions(path: str | Path, predictions: Mapping[str, Mapping[int, int]]) -> None:
    """Write ``{model_id: {"<semantic_id>": point_index}}`` atomically."""
    write_json(path, {mid: {str(int(s)): int(i) for s, i in ids.items()} for mid, ids in predictions.items()})
