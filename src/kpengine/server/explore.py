"""The explorer's own API (``/api/explore``): what the catalogue endpoints of :mod:`api` do not
carry and only the explorer page needs.

* a category summary: semantic ids with names and the number of models carrying each, and how
  many models have a mesh or a cloud (the page offers a geometry filter and opens on one);
* a model's symmetry groups with their keypoints resolved to positions (reflection pairs,
  rotation groups, circles);
* the mesh with its MTL colours and textures as binary glTF, for looking at (``mesh.glb`` of
  :mod:`api` keeps KeypointNet's triangle order for clicking and has no materials);
* a predictions file (the format of ``kpengine evaluate``) scored model by model against the
  stored keypoints, with the error lines to draw (:mod:`kpengine.metrics.per_model`).

* the predictions files under the server's ``--runs`` folder, listed and scored by name.

All public and read-only, like the rest of the catalogue. A predictions file is either sent by
the page or one the server found under its runs folder: a request names a file of that
listing, never a path of its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from kpengine.errors import DataError
from kpengine.io.pcd import load_pcd
from kpengine.io.predictions import parse_correspondence_predictions, parse_saliency_predictions
from kpengine.metrics import THRESHOLDS
from kpengine.metrics.per_model import model_errors
from kpengine.server.guard import BadJSON, parse_json
from kpengine.server.schemas import ModelRow
from kpengine.store import repo
from kpengine.store.schema import AggregatedKeypoint, Category, Model, SymmetryGroup

router = APIRouter(prefix="/api/explore", tags=["explore"])


# --------------------------------------------------------------------------- response bodies
# Declared so that /openapi.json describes them and the page's TypeScript types are generated
# from it (scripts/gen_web.py), like the catalogue's.

Vec3 = tuple[float, float, float]


class ExploreModelRow(ModelRow):
    semantic_ids: list[int] = Field(description="semantic ids of the model's keypoints (rejected ones left out)")


class SemanticIdCount(BaseModel):
    semantic_id: int
    name: str | None = Field(description="the category's label for the id, when it has one")
    n_models: int = Field(description="models of the category with a keypoint of this id")


class CategorySummary(BaseModel):
    category: str
    synset: str
    n_models: int
    n_with_mesh: int
    n_with_points: int
    n_with_geometry: int
    splits: dict[str, int] = Field(description="models per split ('none' for models without one)")
    semantic_ids: list[SemanticIdCount]


class Circle(BaseModel):
    center: Vec3
    radius: float
    normal: Vec3


class SymmetryOut(BaseModel):
    kind: Literal["reflection", "rotation"]
    kp_indexes: list[int] = Field(description="ordinals of the model's keypoints (as stored; may have gaps)")
    semantic_ids: list[int]
    xyz: list[Vec3] = Field(description="the members' positions, in the group's order")
    is_circle: bool
    circle: Circle | None


class ErrorPairOut(BaseModel):
    pred: int | None = Field(description="predicted point index; null for a ground-truth id nobody predicted")
    gt: int | None = Field(description="ground-truth point index; null for a prediction of an id the model lacks")
    semantic_id: int | None
    distance: float | None = Field(description="geodesic distance; null when beyond 2x the largest threshold")
    pred_xyz: Vec3 | None
    gt_xyz: Vec3 | None


class GroundTruthOut(BaseModel):
    semantic_id: int
    point: int
    xyz: Vec3
    distance: float | None = Field(description="to the nearest prediction (saliency) or its id's (correspondence)")


class ModelScores(BaseModel):
    model_id: str
    split: str | None
    score: list[float | None] = Field(description="IoU (saliency) or PCK (correspondence) at each threshold")
    mean_error: float | None
    pairs: list[ErrorPairOut]
    gt: list[GroundTruthOut]


class PredictionScores(BaseModel):
    task: Literal["saliency", "correspondence"]
    category: str
    source: str
    thresholds: list[float]
    warnings: list[str]
    models: list[ModelScores]


#: Path prefix of the one explorer endpoint that takes a body (a whole predictions file).
PREDICTIONS_PATH = "/api/explore/predictions"


def _store(request: Request):  # noqa: ANN202
    return request.app.state.store


def _category_or_404(session, category: str):  # noqa: ANN001, ANN202
    cat = repo.get_category(session, category)
    if cat is None:
        raise HTTPException(404, f"no category {category!r}")
    return cat


def _model_or_404(session, category: str, model_id: str) -> Model:  # noqa: ANN001
    model = repo.get_model(session, category, model_id)
    if model is None:
        raise HTTPException(404, f"no model {model_id!r} in category {category!r}")
    return model


def _visible(query):  # noqa: ANN001, ANN202 - keypoints an admin rejected are not shown or scored
    return query.where(AggregatedKeypoint.status != "rejected")


@router.get("/categories/{category}/summary")
def category_summary(request: Request, category: str) -> CategorySummary:
    """Semantic ids of the category: name (when labelled) and number of models carrying it;
    model counts with a mesh, with a cloud, with either, per split."""
    with _store(request).read() as s:
        cat = _category_or_404(s, category)
        labels = {c["synset"]: c["labels"] for c in repo.list_categories(s)}[cat.synset]
        per_id = s.execute(
            _visible(
                select(AggregatedKeypoint.semantic_id, func.count(func.distinct(AggregatedKeypoint.model_id)))
                .join(Model, Model.id == AggregatedKeypoint.model_id)
                .where(Model.category_id == cat.id)
            ).group_by(AggregatedKeypoint.semantic_id)
        ).all()
        has_mesh = Model.mesh_path.is_not(None)
        has_points = Model.pcd_path.is_not(None)
        row = s.execute(
            select(
                func.count(),
                func.count().filter(has_mesh),
                func.count().filter(has_points),
                func.count().filter(has_mesh | has_points),
            ).where(Model.category_id == cat.id)
        ).one()
        splits = dict(
            s.execute(select(Model.split, func.count()).where(Model.category_id == cat.id).group_by(Model.split)).all()
        )
    return CategorySummary.model_validate(
        {
            "category": cat.name,
            "synset": cat.synset,
            "n_models": row[0],
            "n_with_mesh": row[1],
            "n_with_points": row[2],
            "n_with_geometry": row[3],
            "splits": {str(k) if k else "none": v for k, v in splits.items()},
            "semantic_ids": [
                {"semantic_id": sid, "name": labels.get(str(sid)), "n_models": n} for sid, n in sorted(per_id)
            ],
        }
    )


@router.get("/categories/{category}/models")
def models(request: Request, category: str) -> list[ExploreModelRow]:
    """Every model of the category (the page filters and searches them itself): the fields of
    ``/api/categories/{category}/models`` and the semantic ids each model carries (to mark the
    models that have a highlighted id). Plain column queries: 1,124 tables in ~50 ms, where
    loading ORM objects took ~4x longer."""
    with _store(request).read() as s:
        cat = _category_or_404(s, category)
        models = s.execute(
            select(Model.id, Model.model_id, Model.split, Model.mesh_path.is_not(None), Model.pcd_path.is_not(None))
            .where(Model.category_id == cat.id)
            .order_by(Model.id)
        ).all()
        kps = s.execute(
            select(AggregatedKeypoint.model_id, AggregatedKeypoint.semantic_id, AggregatedKeypoint.status)
            .join(Model, Model.id == AggregatedKeypoint.model_id)
            .where(Model.category_id == cat.id)
        ).all()
    count: dict[int, int] = {}
    ids: dict[int, set[int]] = {}
    for pk, sid, status in kps:
        count[pk] = count.get(pk, 0) + 1  # every stored keypoint, as the catalogue's list counts them
        if status != "rejected":
            ids.setdefault(pk, set()).add(sid)
    return [
        ExploreModelRow(
            model_id=mid,
            split=split,
            n_keypoints=count.get(pk, 0),
            has_mesh=bool(has_mesh),
            has_points=bool(has_points),
            semantic_ids=sorted(ids.get(pk, ())),
        )
        for pk, mid, split, has_mesh, has_points in models
    ]


@router.get("/models/{category}/{model_id}/symmetries")
def symmetries(request: Request, category: str, model_id: str) -> list[SymmetryOut]:
    """The model's symmetry groups, each with its keypoints' positions and semantic ids (in the
    group's order) so the page can join reflection pairs and draw rotation groups and circles."""
    with _store(request).read() as s:
        model = _model_or_404(s, category, model_id)
        kps = repo.aggregated_keypoints(s, model)
        groups = s.scalars(
            select(SymmetryGroup)
            .where(SymmetryGroup.model_id == model.id)
            .order_by(SymmetryGroup.kind, SymmetryGroup.ordinal)
        ).all()
        # groups index keypoint *ordinals*, which have gaps once a re-run kept some of an
        # earlier run's keypoints: resolved by ordinal, never by list position
        by_ordinal = {k.ordinal: k for k in kps}
        out = []
        for g in groups:
            members = [by_ordinal[i] for i in g.kp_indexes if isinstance(i, int) and i in by_ordinal]
            out.append(
                SymmetryOut.model_validate(
                    {
                        "kind": g.kind,
                        "kp_indexes": list(g.kp_indexes),
                        "semantic_ids": [k.semantic_id for k in members],
                        "xyz": [[k.x, k.y, k.z] for k in members if k.x is not None],
                        "is_circle": g.is_circle,
                        "circle": g.circle,
                    }
                )
            )
        return out


class _GlbCache:
    """A small LRU of display meshes (textured GLBs of ShapeNet models run to megabytes)."""

    def __init__(self, capacity: int = 16):
        self.capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, mesh_path: str) -> bytes:
        with self._lock:
            if mesh_path in self._items:
                self._items.move_to_end(mesh_path)
                return self._items[mesh_path]
        data = display_glb(Path(mesh_path))
        with self._lock:
            self._items[mesh_path] = data
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return data


_GLB = _GlbCache()


class _ModelFolderResolver:
    """Reads the files an OBJ's MTL names (textures), relative to the OBJ, from inside its model
    folder only. ShapeNet keeps ``<model>/models/model_normalized.obj`` and its textures in
    ``<model>/images/`` (``map_Kd ../images/texture0.jpg``), which trimesh's own resolver refuses
    as escaping ``models/``; a folder above the model's is still refused."""

    def __init__(self, obj_path: Path):
        self.parent = obj_path.resolve().parent
        self.root = self.parent.parent if self.parent.name == "models" else self.parent

    def get(self, name: str) -> bytes:
        target = (self.parent / name.strip()).resolve()
        if not target.is_relative_to(self.root):
            raise FileNotFoundError(f"{name} lies outside the model folder {self.root}")
        return target.read_bytes()

    __getitem__ = get  # trimesh's OBJ reader indexes the resolver for the MTL


def display_glb(path: Path) -> bytes:
    """The mesh file with its materials (MTL ``Kd`` colours, ``map_Kd`` textures) as binary glTF.

    trimesh groups faces by material here, which is right for display and why this is not the
    mesh annotation clicks are located on (that one keeps the file's triangle order)."""
    import trimesh

    scene = trimesh.load(path, force="scene", process=False, resolver=_ModelFolderResolver(path))
    if not scene.geometry:
        raise DataError("the mesh has no triangles", path=path)
    return scene.export(file_type="glb")


@router.get("/models/{category}/{model_id}/display.glb", response_class=Response)
async def display_mesh(request: Request, category: str, model_id: str) -> Response:
    """The model's mesh with its MTL colours and textures, as binary glTF (for viewing)."""

    def path() -> str | None:
        with _store(request).read() as s:
            return _model_or_404(s, category, model_id).mesh_path

    mesh_path = await run_in_threadpool(path)
    if mesh_path is None:
        raise HTTPException(404, f"model {model_id} has no mesh")
    try:
        data = await run_in_threadpool(_GLB.get, mesh_path)
    except (OSError, ValueError, DataError) as exc:
        raise HTTPException(409, f"cannot read the mesh of {model_id}: {exc}") from exc
    return Response(data, media_type="model/gltf-binary", headers={"Cache-Control": "public, max-age=3600"})


# --------------------------------------------------------------------------- predictions


class _CloudSizes(Mapping[str, int]):
    """Model id -> cloud size for the stored models of a category that have a cloud, as the
    predictions parsers ask for it; a cloud is read only when a prediction names its model."""

    def __init__(self, pcd_paths: dict[str, str]):
        self.pcd_paths = pcd_paths
        self._points: dict[str, np.ndarray] = {}

    def points(self, model_id: str) -> np.ndarray:
        if model_id not in self._points:
            self._points[model_id] = load_pcd(Path(self.pcd_paths[model_id])).points
        return self._points[model_id]

    def __getitem__(self, model_id: str) -> int:
        return len(self.points(model_id))

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.pcd_paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.pcd_paths)

    def __len__(self) -> int:
        return len(self.pcd_paths)


def _xyz(points: np.ndarray, index: int | None) -> list[float] | None:
    return None if index is None else [round(float(v), 6) for v in points[index]]


def _num(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


def score_predictions(request: Request, category: str, task: str, raw: Any, name: str) -> PredictionScores:
    """Validate a predictions object and score each predicted model that has a stored cloud."""
    with _store(request).read() as s:
        cat = _category_or_404(s, category)
        rows = s.execute(
            select(Model.id, Model.model_id, Model.split, Model.pcd_path).where(Model.category_id == cat.id)
        ).all()
        kp_rows = s.execute(
            _visible(
                select(AggregatedKeypoint.model_id, AggregatedKeypoint.semantic_id, AggregatedKeypoint.point_index)
                .join(Model, Model.id == AggregatedKeypoint.model_id)
                .where(Model.category_id == cat.id)
            ).order_by(AggregatedKeypoint.model_id, AggregatedKeypoint.ordinal)
        ).all()
    gt: dict[int, list[tuple[int, int]]] = {}
    for pk, sid, pi in kp_rows:
        if pi is not None:
            gt.setdefault(pk, []).append((sid, pi))
    n_classes = 1 + max((sid for _, sid, _ in kp_rows), default=-1)
    clouds = _CloudSizes({mid: path for _, mid, _, path in rows if path})
    split_of = {mid: split for _, mid, split, _ in rows}
    pk_of = {mid: pk for pk, mid, _, _ in rows}
    if not isinstance(raw, dict):
        raise DataError("a predictions file is a JSON object keyed by model id", path=name)
    no_cloud = sorted(m for m in raw if m in split_of and m not in clouds)
    if task == "saliency":
        preds, warnings = parse_saliency_predictions(raw, clouds, name)
    elif task == "correspondence":
        preds, warnings = parse_correspondence_predictions(raw, clouds, n_classes, name)
    else:
        raise HTTPException(422, f"unknown task {task!r}; choose saliency or correspondence")
    if no_cloud:
        warnings.insert(0, f"{len(no_cloud)} predicted models have no point cloud on this server and are not scored")
    models = []
    for mid, pred in preds.items():
        points = clouds.points(mid)
        pairs = gt.get(pk_of[mid], [])
        ids = np.array([sid for sid, _ in pairs], np.int64)
        indices = np.array([pi for _, pi in pairs], np.int64)
        prediction = pred[0] if task == "saliency" else pred
        result = model_errors(mid, points, indices, ids, task, prediction)  # type: ignore[arg-type]
        models.append(
            {
                "model_id": mid,
                "split": split_of[mid],
                "score": [_num(v) for v in result.score],
                "mean_error": _num(result.mean_error),
                "pairs": [
                    {
                        "pred": p.pred,
                        "gt": p.gt,
                        "semantic_id": p.semantic_id,
                        "distance": _num(p.distance),
                        "pred_xyz": _xyz(points, p.pred),
                        "gt_xyz": _xyz(points, p.gt),
                    }
                    for p in result.pairs
                ],
                "gt": [
                    {"semantic_id": int(sid), "point": int(pi), "xyz": _xyz(points, int(pi)), "distance": _num(d)}
                    for sid, pi, d in zip(ids, indices, result.gt_distance)
                ],
            }
        )
    return PredictionScores.model_validate(
        {
            "task": task,
            "category": cat.name,
            "source": name,
            "thresholds": [round(t, 4) for t in THRESHOLDS],
            "warnings": warnings,
            "models": models,
        }
    )


@router.post(PREDICTIONS_PATH.removeprefix("/api/explore") + "/{category}")
async def predictions(
    request: Request,
    category: str,
    task: Annotated[str, Query(pattern="^(saliency|correspondence)$")],
    name: Annotated[str, Query(max_length=256)] = "uploaded predictions",
) -> PredictionScores:
    """Score a predictions file (the body; the format of ``kpengine evaluate``) model by model
    against the stored keypoints: per model the score at each threshold (IoU for saliency, PCK
    for correspondence), the mean clipped geodesic error and the error lines to draw.
    Only models with a stored point cloud are scored (predictions index the cloud)."""
    try:
        raw = parse_json(await request.body())
    except BadJSON as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc
    try:
        return await run_in_threadpool(score_predictions, request, category, task, raw, name)
    except DataError as exc:
        raise HTTPException(422, str(exc)) from exc


# --------------------------------------------------------------------------- runs' outputs

#: Files a run writes beside its predictions that are not predictions.
_RUN_METADATA = {"config.json", "history.json", "decision.json", "summary.json", "report.json"}
_MAX_RUNS_LISTED = 500


class RunFile(BaseModel):
    name: str = Field(description="path under the server's runs folder (what /api/explore/runs/score takes)")
    bytes: int
    modified: float = Field(description="seconds since the epoch")


def _runs_dir(request: Request) -> Path:
    root = request.app.state.config.runs_dir
    if root is None:
        raise HTTPException(404, "this server has no runs folder (start it with kpengine serve --runs DIR)")
    return Path(root).resolve()


def read_run_file(request: Request, name: str) -> dict:
    """A predictions file of the runs folder by its listed name, parsed: 404 for a name not listed,
    422 for bad JSON or JSON that is not an object keyed by model id."""
    path = _run_files(_runs_dir(request)).get(name)
    if path is None:
        raise HTTPException(404, f"no predictions file {name!r} under the runs folder")
    try:
        raw = parse_json(path.read_bytes())
    except BadJSON as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc
    if not isinstance(raw, dict):
        raise HTTPException(422, f"{name}: not a predictions file (an object keyed by model id)")
    return raw


def _run_files(root: Path) -> dict[str, Path]:
    """JSON files under ``root`` that may be predictions (newest first), by their path under ``root``."""
    found = [
        p
        for p in root.rglob("*.json")
        if p.is_file() and p.name not in _RUN_METADATA and not p.name.endswith(".report.json")
    ]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return {p.relative_to(root).as_posix(): p for p in found[:_MAX_RUNS_LISTED]}


@router.get("/runs")
def runs(request: Request) -> list[RunFile]:
    """The JSON files under the server's runs folder that may be predictions files, newest first."""
    root = _runs_dir(request)
    return [RunFile(name=n, bytes=p.stat().st_size, modified=p.stat().st_mtime) for n, p in _run_files(root).items()]


def _category_of(request: Request, model_ids: list[str]) -> str:
    """The category holding most of the (first 200) predicted models."""
    with _store(request).read() as s:
        rows = s.execute(
            select(Category.name, func.count())
            .join(Model, Model.category_id == Category.id)
            .where(Model.model_id.in_(model_ids[:200]))
            .group_by(Category.name)
            .order_by(func.count().desc())
        ).all()
    if not rows:
        raise HTTPException(422, "none of the predicted models is in this server's store")
    return rows[0][0]


@router.get("/runs/score")
def score_run_file(
    request: Request, name: Annotated[str, Query(max_length=1024)], category: str | None = None
) -> PredictionScores:
    """Score a predictions file of the runs folder (by its listed name) like an uploaded one.
    The task is read from the file's shape and the category, unless given, from its model ids."""
    raw = read_run_file(request, name)
    if not raw:
        raise HTTPException(422, f"{name}: not a predictions file (an object keyed by model id)")
    task = "saliency" if isinstance(next(iter(raw.values())), list) else "correspondence"
    try:
        return score_predictions(request, category or _category_of(request, list(raw)), task, raw, name)
    except DataError as exc:
        raise HTTPException(422, str(exc)) from exc
