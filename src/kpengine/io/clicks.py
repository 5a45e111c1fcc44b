"""Raw crowd clicks (RAW.json): the one format for clicks before aggregation.

A raw-click file is a JSON list with one object per click::

    {"class_id": "02808440",                 # optional: the model's synset
     "model_id": "1a2b...", "annotator": "alice", "kp_index": 3,
     "xyz": [x, y, z],                       # model frame (ShapeNetCore.v2 model_normalized)
     "point_index": 1476,                    # optional: index into the model's cloud
     "face_index": 20521, "face_uv": [u, v, w],   # optional: mesh triangle + barycentrics
     "time": 1700000000.0}                   # optional: seconds since the epoch (UTC)

``kp_index`` is the annotator's *own* numbering: the same annotator uses the same number
for the same kind of point on every model they annotate; two annotators' numbers are
unrelated. Written by ``kpengine db export-raw`` and ``kpengine simulate-crowd``; read by
``kpengine aggregate --raw`` and ``kpengine db import-raw``. One flat click per object
(rather than one set per model and annotator) because that is what both the aggregator
and a spreadsheet want, and a set is just the clicks sharing (model, annotator).

The nested layout that ``db export-raw`` wrote before (one object per model and annotator
with ``keypoints: [{index, xyz, mesh_info, pcd_info, time: ISO-8601}]``) is still read, with
a warning, for one release.

:func:`load_clicks` returns what parsed plus a ``Problem`` per element that did not, so one
bad click never stops the rest; a file that is not a JSON list raises ``DataError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kpengine.errors import DataError, Problem
from kpengine.io.atomic import read_json, write_json

#: KeypointNet's annotation tool allowed at most this many keypoints per model and
#: annotator. The store, the API, the aggregator and the annotation page (through
#: ``GET /api/me``) all use this one number.
MAX_KEYPOINTS = 24

#: Keys of one flat click object, in the order they are written.
CLICK_FIELDS = ("class_id", "model_id", "annotator", "kp_index", "xyz", "point_index", "face_index", "face_uv", "time")


@dataclass(frozen=True)
class Click:
    """One raw click by one annotator on one model.

    ``xyz`` in the model frame; ``point_index`` into the model's cloud; ``face_index`` and
    ``face_uv`` (barycentric weights) on its mesh; ``time`` in seconds since the epoch;
    ``class_id`` the model's synset when known (the store needs it to find the model).
    """

    model_id: str
    annotator: str
    kp_index: int
    xyz: tuple[float, float, float]
    point_index: int | None = None
    face_index: int | None = None
    face_uv: tuple[float, float, float] | None = None
    time: float | None = None
    class_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.class_id is None else {"class_id": self.class_id}
        out.update(model_id=self.model_id, annotator=self.annotator, kp_index=self.kp_index, xyz=list(self.xyz))
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


def _time(value: Any) -> float | None:
    """Seconds since the epoch; ISO-8601 text (the old nested export) is converted, naive = UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"'time' must be seconds since the epoch or ISO-8601 text, got {value!r}") from exc
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"'time' must be a number, got {value!r}")
    return float(value)


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
    class_id = obj.get("class_id")
    return Click(
        model_id=str(obj["model_id"]),
        annotator=str(obj["annotator"]),
        kp_index=kp,
        xyz=_vec3(obj["xyz"], "'xyz'"),
        point_index=_opt_int(obj, "point_index"),
        face_index=_opt_int(obj, "face_index"),
        face_uv=None if face_uv is None else _vec3(face_uv, "'face_uv'"),
        time=_time(obj.get("time")),
        class_id=None if class_id is None else str(class_id),
    )


def _is_nested(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("keypoints"), list) and "kp_index" not in obj


def _flatten_nested(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """One set of the old nested export -> flat click objects (validated by :func:`parse_click`)."""
    out = []
    for kp in obj["keypoints"]:
        if not isinstance(kp, dict):
            raise ValueError(f"keypoints must hold objects, got {type(kp).__name__}")
        if "index" not in kp:
            raise ValueError("keypoint has no 'index'")
        mesh, pcd = kp.get("mesh_info") or {}, kp.get("pcd_info") or {}
        flat = {k: obj[k] for k in ("class_id", "model_id", "annotator") if k in obj}
        flat.update(kp_index=kp["index"], xyz=kp.get("xyz"))
        flat.update(point_index=pcd.get("point_index"), face_index=mesh.get("face_index"))
        flat.update(face_uv=mesh.get("face_uv"), time=kp.get("time"))
        out.append(flat)
    return out


def load_clicks(path: str | Path) -> tuple[list[Click], list[Problem]]:
    """Read a raw-click file. Returns the clicks that parsed and a ``Problem`` per element that did not.

    The old nested export is accepted with a non-fatal ``Problem`` (a warning) saying so.
    A file that is not a JSON list raises ``DataError``.
    """
    return clicks_from_json(read_json(path), path)


def clicks_from_json(data: Any, path: str | Path) -> tuple[list[Click], list[Problem]]:  # noqa: ANN401
    """:func:`load_clicks` on already-decoded JSON (e.g. read from standard input); ``path``
    names the source in messages."""
    if not isinstance(data, list):
        raise DataError("expected a JSON list of clicks (see docs/aggregation.md for the raw format)", path=path)
    clicks: list[Click] = []
    problems: list[Problem] = []
    n_nested = 0
    for i, obj in enumerate(data):
        mid = str(obj.get("model_id", f"#{i}")) if isinstance(obj, dict) else f"#{i}"
        if _is_nested(obj):
            n_nested += 1
            try:
                flat = _flatten_nested(obj)
            except ValueError as exc:
                problems.append(Problem(mid, f"set {i} ignored: {exc}", path=str(path)))
                continue
            for j, item in enumerate(flat):
                try:
                    clicks.append(parse_click(item))
                except ValueError as exc:
                    problems.append(Problem(mid, f"set {i}, keypoint {j} ignored: {exc}", path=str(path)))
            continue
        try:
            clicks.append(parse_click(obj))
        except ValueError as exc:
            problems.append(Problem(mid, f"click {i} ignored: {exc}", path=str(path)))
    if n_nested:
        problems.insert(
            0,
            Problem(
                "*",
                f"{n_nested} element(s) use the old nested raw export (one set per model and annotator); read "
                "them as flat clicks. This layout will not be read after the next release: re-export with "
                "`kpengine db export-raw` (see docs/aggregation.md)",
                path=str(path),
                fatal=False,
            ),
        )
    return clicks, problems


def clicks_to_json(clicks: Iterable[Click]) -> list[dict[str, Any]]:
    return [c.to_json() for c in clicks]


def save_clicks(path: str | Path, clicks: Iterable[Click]) -> None:
    """Write a raw-click file atomically (one flat object per click)."""
    write_json(path, clicks_to_json(clicks))
