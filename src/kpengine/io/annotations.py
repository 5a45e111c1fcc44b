"""KeypointNet annotation JSON: read and write the official format losslessly.

One file is a JSON list with one element per model (see ``../shared/data/README.md``)::

    {"class_id": "03001627", "model_id": "...",
     "keypoints": [{"xyz": [x, y, z], "rgb": [r, g, b], "semantic_id": 0,
                    "pcd_info": {"point_index": 1476},
                    "mesh_info": {"face_index": 20521, "face_uv": [u, v, w]}}, ...],
     "symmetries": {"reflection": [{"kp_indexes": [0, 1]}],
                    "rotation": [{"kp_indexes": [...], "is_circle": true,
                                  "circle": {"center": [...], "radius": r, "normal": [...]}}]}}

The official ``all.json`` is the concatenation of the per-category lists and reads the
same way. Numbers are kept as Python floats and unknown fields are carried in ``extra``
dicts, so ``save_annotations(load_annotations(p))`` writes back the same JSON values in
the same key order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpengine.errors import DataError, Problem
from kpengine.io.atomic import read_json, write_text

Vec3 = tuple[float, float, float]


@dataclass
class Keypoint:
    """One aggregated keypoint of a model; ``xyz`` in the model's own frame.

    ``xyz`` may be absent in hand-made files when ``pcd_info`` or ``mesh_info`` locates the
    point; the dataset then resolves the position from the cloud or the mesh.
    """

    xyz: Vec3 | None
    semantic_id: int
    rgb: tuple[int, int, int] | None = None
    point_index: int | None = None
    face_index: int | None = None
    face_uv: Vec3 | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReflectionGroup:
    """Keypoints (indices into the model's keypoint list) that mirror each other."""

    kp_indexes: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Circle:
    center: Vec3
    radius: float
    normal: Vec3


@dataclass
class RotationGroup:
    """Keypoints related by a rotation; ``is_circle`` when they lie on a continuous circle."""

    kp_indexes: list[int]
    is_circle: bool = False
    circle: Circle | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Symmetries:
    reflection: list[ReflectionGroup] = field(default_factory=list)
    rotation: list[RotationGroup] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelAnnotation:
    """All keypoints of one model, as in one element of a KeypointNet annotation file."""

    class_id: str
    model_id: str
    keypoints: list[Keypoint]
    symmetries: Symmetries = field(default_factory=Symmetries)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def semantic_ids(self) -> list[int]:
        return [kp.semantic_id for kp in self.keypoints]


# --------------------------------------------------------------------------- parsing


def _vec3(value: Any, what: str) -> Vec3:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"{what} must be a list of 3 numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{what} must hold numbers, got {value!r}")
        if not math.isfinite(v):
            raise ValueError(f"{what} is not finite: {value!r}")
        out.append(v)
    return (out[0], out[1], out[2])


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _rest(obj: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


def _parse_keypoint(obj: Any, i: int) -> Keypoint:
    what = f"keypoints[{i}]"
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be an object")
    if "semantic_id" not in obj:
        raise ValueError(f"{what} needs 'semantic_id'")
    if "xyz" not in obj and "pcd_info" not in obj and "mesh_info" not in obj:
        raise ValueError(f"{what} needs a position: 'xyz', 'pcd_info' or 'mesh_info'")
    rgb = obj.get("rgb")
    if rgb is not None:
        rgb = tuple(int(c) for c in _vec3(rgb, f"{what}.rgb"))
    pcd_info = obj.get("pcd_info")
    mesh_info = obj.get("mesh_info")
    extra = _rest(obj, {"xyz", "rgb", "semantic_id", "pcd_info", "mesh_info"})
    point_index = face_index = face_uv = None
    if pcd_info is not None:
        point_index = _int(pcd_info.get("point_index"), f"{what}.pcd_info.point_index")
        if len(pcd_info) > 1:
            extra["pcd_info"] = _rest(pcd_info, {"point_index"})
    if mesh_info is not None:
        face_index = _int(mesh_info.get("face_index"), f"{what}.mesh_info.face_index")
        face_uv = _vec3(mesh_info.get("face_uv"), f"{what}.mesh_info.face_uv")
        if len(mesh_info) > 2:
            extra["mesh_info"] = _rest(mesh_info, {"face_index", "face_uv"})
    return Keypoint(
        xyz=_vec3(obj["xyz"], f"{what}.xyz") if "xyz" in obj else None,
        semantic_id=_int(obj["semantic_id"], f"{what}.semantic_id"),
        rgb=rgb,  # type: ignore[arg-type]
        point_index=point_index,
        face_index=face_index,
        face_uv=face_uv,
        extra=extra,
    )


def _parse_symmetries(obj: Any, n_keypoints: int) -> Symmetries:
    if obj is None:
        return Symmetries()
    if not isinstance(obj, dict):
        raise ValueError("symmetries must be an object")

    def indexes(group: Any, what: str) -> list[int]:
        idx = group.get("kp_indexes") if isinstance(group, dict) else None
        if not isinstance(idx, list):
            raise ValueError(f"{what}.kp_indexes must be a list")
        for k in idx:
            if _int(k, f"{what}.kp_indexes") >= n_keypoints:
                raise ValueError(f"{what}.kp_indexes names keypoint {k} but the model has {n_keypoints}")
        return list(idx)

    reflection = [
        ReflectionGroup(indexes(g, f"symmetries.reflection[{i}]"), _rest(g, {"kp_indexes"}))
        for i, g in enumerate(obj.get("reflection", []))
    ]
    rotation = []
    for i, g in enumerate(obj.get("rotation", [])):
        what = f"symmetries.rotation[{i}]"
        circle = g.get("circle")
        extra = _rest(g, {"kp_indexes", "is_circle", "circle"})
        if not circle:  # non-circular groups carry "circle": {} in the official files
            if circle is not None:
                extra["circle"] = circle
            circle = None
        else:
            circle = Circle(
                center=_vec3(circle.get("center"), f"{what}.circle.center"),
                radius=float(circle.get("radius")),
                normal=_vec3(circle.get("normal"), f"{what}.circle.normal"),
            )
        rotation.append(
            RotationGroup(
                kp_indexes=indexes(g, what),
                is_circle=bool(g.get("is_circle", False)),
                circle=circle,
                extra=extra,
            )
        )
    return Symmetries(reflection, rotation, _rest(obj, {"reflection", "rotation"}))


def parse_model(obj: Any) -> ModelAnnotation:
    """Parse one element of an annotation list; raises ``ValueError`` saying which field is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object per model, got {type(obj).__name__}")
    for key in ("class_id", "model_id", "keypoints"):
        if key not in obj:
            raise ValueError(f"missing field {key!r}")
    if not isinstance(obj["keypoints"], list):
        raise ValueError("'keypoints' must be a list")
    keypoints = [_parse_keypoint(kp, i) for i, kp in enumerate(obj["keypoints"])]
    return ModelAnnotation(
        class_id=str(obj["class_id"]),
        model_id=str(obj["model_id"]),
        keypoints=keypoints,
        symmetries=_parse_symmetries(obj.get("symmetries"), len(keypoints)),
        extra=_rest(obj, {"class_id", "model_id", "keypoints", "symmetries"}),
    )


def load_annotations(path: str | Path) -> tuple[list[ModelAnnotation], list[Problem]]:
    """Read a per-category annotation file or the official ``all.json``.

    Returns the models that parsed and a ``Problem`` for each element that did not
    (with its index, model id where known, and the field at fault); one bad model never
    stops the others. A file that is not valid JSON raises ``DataError`` with the line
    and column.
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError("expected a JSON list of models (the KeypointNet annotation format)", path=path)
    models: list[ModelAnnotation] = []
    problems: list[Problem] = []
    for i, obj in enumerate(data):
        try:
            models.append(parse_model(obj))
        except (ValueError, TypeError, AttributeError) as exc:
            model_id = obj.get("model_id", f"#{i}") if isinstance(obj, dict) else f"#{i}"
            problems.append(Problem(str(model_id), f"element {i}: {exc}", path=str(path)))
    return models, problems


# --------------------------------------------------------------------------- writing


def keypoint_to_json(kp: Keypoint) -> dict[str, Any]:
    out: dict[str, Any] = {} if kp.xyz is None else {"xyz": list(kp.xyz)}
    if kp.rgb is not None:
        out["rgb"] = list(kp.rgb)
    out["semantic_id"] = kp.semantic_id
    if kp.point_index is not None:
        out["pcd_info"] = {"point_index": kp.point_index, **kp.extra.get("pcd_info", {})}
    if kp.face_index is not None:
        out["mesh_info"] = {
            "face_index": kp.face_index,
            "face_uv": list(kp.face_uv or ()),
            **kp.extra.get("mesh_info", {}),
        }
    out.update({k: v for k, v in kp.extra.items() if k not in ("pcd_info", "mesh_info")})
    return out


def symmetries_to_json(sym: Symmetries) -> dict[str, Any]:
    rotation = []
    for g in sym.rotation:
        item: dict[str, Any] = {"kp_indexes": list(g.kp_indexes), "is_circle": g.is_circle}
        if g.circle is not None:
            item["circle"] = {
                "center": list(g.circle.center),
                "radius": g.circle.radius,
                "normal": list(g.circle.normal),
            }
        item.update(g.extra)
        rotation.append(item)
    return {
        "reflection": [{"kp_indexes": list(g.kp_indexes), **g.extra} for g in sym.reflection],
        "rotation": rotation,
        **sym.extra,
    }


def model_to_json(model: ModelAnnotation) -> dict[str, Any]:
    return {
        "class_id": model.class_id,
        "model_id": model.model_id,
        "keypoints": [keypoint_to_json(kp) for kp in model.keypoints],
        "symmetries": symmetries_to_json(model.symmetries),
        **model.extra,
    }


def save_annotations(path: str | Path, models: Iterable[ModelAnnotation]) -> None:
    """Write models in the official format (atomically: temporary file, then rename)."""
    write_text(path, json.dumps([model_to_json(m) for m in models]))
