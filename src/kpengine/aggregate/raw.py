"""Raw crowd clicks: the RAW.json format, validation at the boundary, and I/O.

A raw-annotation file is a JSON list of clicks, one object per click::

    {"model_id": "1a2b...", "annotator": "alice", "kp_index": 3,
     "xyz": [x, y, z],                       # model frame (ShapeNetCore.v2 model_normalized)
     "point_index": 1476,                    # optional: index into the model's 2,048-point cloud
     "face_index": 20521, "face_uv": [u, v, w],   # optional: mesh triangle + barycentrics
     "time": 1700000000.0}                   # optional: seconds since the epoch

``kp_index`` is the annotator's *own* numbering: the same annotator uses the same number for
the same kind of point on every model they annotate; two annotators' numbers are unrelated.
The store (issue 3) writes this format; ``kpengine simulate-crowd`` writes it too.

:func:`load_clicks` parses and validates; :func:`check_clicks` checks clicks against the
models of a dataset. Both return what can be used plus a list of ``Problem`` messages, so
one bad click never stops the rest.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kpengine.errors import DataError, Problem
from kpengine.io.atomic import read_json, write_json

#: KeypointNet's annotation tool allowed at most this many keypoints per model and annotator.
MAX_POINTS_PER_MODEL = 24


@dataclass(frozen=True)
class Click:
    """One raw click. ``xyz`` in the model frame; optional cloud / mesh locations."""

    model_id: str
    annotator: str
    kp_index: int
    xyz: tuple[float, float, float]
    point_index: int | None = None
    face_index: int | None = None
    face_uv: tuple[float, float, float] | None = None
    time: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_id": self.model_id,
            "annotator": self.annotator,
            "kp_index": self.kp_index,
            "xyz": list(self.xyz),
        }
        if self.point_index is not None:
            out["point_index"] = self.point_index
        if self.face_index is not None:
            out["face_index"] = self.face_index
            out["face_uv"] = list(self.face_uv or ())
        if self.time is not None:
            out["time"] = self.time
        return out


def _vec3(value: Any, what: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"{what} must be a list of 3 numbers, got {value!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise ValueError(f"{what} must hold 3 finite numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _opt_int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key!r} must be an integer >= 0, got {value!r}")
    return value


def parse_click(obj: Any) -> Click:
    """One click object -> :class:`Click`; ``ValueError`` names the field at fault."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object, got {type(obj).__name__}")
    for key in ("model_id", "annotator", "kp_index", "xyz"):
        if key not in obj:
            raise ValueError(f"missing field {key!r}")
    kp = obj["kp_index"]
    if isinstance(kp, bool) or not isinstance(kp, int) or kp < 0:
        raise ValueError(f"'kp_index' must be an integer >= 0, got {kp!r}")
    face_uv = obj.get("face_uv")
    t = obj.get("time")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
        raise ValueError(f"'time' must be a number, got {t!r}")
    return Click(
        model_id=str(obj["model_id"]),
        annotator=str(obj["annotator"]),
        kp_index=kp,
        xyz=_vec3(obj["xyz"], "'xyz'"),
        point_index=_opt_int(obj, "point_index"),
        face_index=_opt_int(obj, "face_index"),
        face_uv=None if face_uv is None else _vec3(face_uv, "'face_uv'"),
        time=None if t is None else float(t),
    )


def load_clicks(path: str | Path) -> tuple[list[Click], list[Problem]]:
    """Read RAW.json. Returns the clicks that parsed and a ``Problem`` per element that did not.

    A file that is not a JSON list raises ``DataError``.
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError("expected a JSON list of clicks (see docs/aggregation.md for the raw format)", path=path)
    clicks: list[Click] = []
    problems: list[Problem] = []
    for i, obj in enumerate(data):
        try:
            clicks.append(parse_click(obj))
        except ValueError as exc:
            mid = str(obj.get("model_id", f"#{i}")) if isinstance(obj, dict) else f"#{i}"
            problems.append(Problem(mid, f"click {i} ignored: {exc}", path=str(path)))
    return clicks, problems


def save_clicks(path: str | Path, clicks: Iterable[Click]) -> None:
    """Write RAW.json atomically."""
    write_json(path, [c.to_json() for c in clicks])


def check_clicks(
    clicks: Sequence[Click], model_ids: Iterable[str], *, max_points: int = MAX_POINTS_PER_MODEL
) -> tuple[list[Click], list[Problem]]:
    """Keep the clicks that can be aggregated; say why each other one was dropped.

    - clicks on models not in ``model_ids`` are dropped (one problem per annotator and model);
    - duplicates (same model, annotator and ``kp_index``) keep the first click;
    - an annotator with more than ``max_points`` distinct points on a model keeps the first
      ``max_points`` (in file order);
    - an annotator who annotated one model only is kept, with a warning: their numbering
      ties nothing across models, so they add saliency but no cross-model consistency.
    """
    known = set(model_ids)
    problems: list[Problem] = []
    unknown: Counter[tuple[str, str]] = Counter()
    seen: set[tuple[str, str, int]] = set()
    per_pair: Counter[tuple[str, str]] = Counter()
    kept: list[Click] = []
    dup: Counter[tuple[str, str]] = Counter()
    over: Counter[tuple[str, str]] = Counter()
    for c in clicks:
        if c.model_id not in known:
            unknown[(c.model_id, c.annotator)] += 1
            continue
        key = (c.model_id, c.annotator, c.kp_index)
        if key in seen:
            dup[(c.model_id, c.annotator)] += 1
            continue
        if per_pair[(c.model_id, c.annotator)] >= max_points:
            over[(c.model_id, c.annotator)] += 1
            continue
        seen.add(key)
        per_pair[(c.model_id, c.annotator)] += 1
        kept.append(c)
    for (mid, ann), n in sorted(unknown.items()):
        problems.append(Problem(mid, f"annotator {ann}: {n} click(s) on a model that is not in the dataset; ignored"))
    for (mid, ann), n in sorted(dup.items()):
        problems.append(
            Problem(mid, f"annotator {ann}: {n} duplicate click(s) (same kp_index twice); kept the first", fatal=False)
        )
    for (mid, ann), n in sorted(over.items()):
        problems.append(
            Problem(
                mid,
                f"annotator {ann}: more than {max_points} points on one model; kept the first {max_points}, "
                f"ignored {n}",
                fatal=False,
            )
        )
    models_of: dict[str, set[str]] = defaultdict(set)
    for c in kept:
        models_of[c.annotator].add(c.model_id)
    for ann, mids in sorted(models_of.items()):
        if len(mids) == 1:
            problems.append(
                Problem(
                    next(iter(mids)),
                    f"annotator {ann} annotated this model only: their clicks add saliency but cannot tie "
                    "semantic ids across models",
                    fatal=False,
                )
            )
    return kept, problems


@dataclass
class ModelClicks:
    """The clicks on one model as arrays.

    ``xyz`` (C, 3) float32, ``annotator`` (C,) int64 index into :attr:`ClickSet.annotators`,
    ``label`` (C,) int64 global class id of (annotator, kp_index), ``point_index`` (C,) int64
    nearest cloud point (filled in by :func:`ClickSet.snap`; -1 before).
    """

    xyz: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    point_index: np.ndarray


@dataclass
class ClickSet:
    """Validated clicks of a category, grouped by model, with global class ids.

    Class ``label`` numbers each (annotator, kp_index) pair once: the classes the embedding
    learns. ``classes`` (L, 2) holds (annotator index, kp_index) per label.
    """

    annotators: list[str]
    classes: np.ndarray
    models: dict[str, ModelClicks]

    @classmethod
    def from_clicks(cls, clicks: Sequence[Click]) -> ClickSet:
        annotators = sorted({c.annotator for c in clicks})
        a_index = {a: i for i, a in enumerate(annotators)}
        pairs = sorted({(a_index[c.annotator], c.kp_index) for c in clicks})
        label_of = {p: i for i, p in enumerate(pairs)}
        grouped: dict[str, list[Click]] = defaultdict(list)
        for c in clicks:
            grouped[c.model_id].append(c)
        models = {}
        for mid, cs in grouped.items():
            models[mid] = ModelClicks(
                xyz=np.array([c.xyz for c in cs], np.float32).reshape(-1, 3),
                annotator=np.array([a_index[c.annotator] for c in cs], np.int64),
                label=np.array([label_of[(a_index[c.annotator], c.kp_index)] for c in cs], np.int64),
                point_index=np.array([-1 if c.point_index is None else c.point_index for c in cs], np.int64),
            )
        classes = np.array(pairs, np.int64).reshape(-1, 2)
        return cls(annotators, classes, models)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_clicks(self) -> int:
        return sum(len(m.xyz) for m in self.models.values())
