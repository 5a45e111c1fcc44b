"""The JSON API.

Public (read-only, like the public KeypointNet explorer): categories, models, geometry,
aggregated keypoints. Annotator (token): their own raw annotations, the next model,
progress. Admin: invitations, import, export, everyone's raw annotations.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from kpengine.errors import DataError
from kpengine.io.annotations import parse_model
from kpengine.io.clicks import MAX_KEYPOINTS
from kpengine.server.auth import AdminDep, AnnotatorDep
from kpengine.server.geometry import OffSurface
from kpengine.server.guard import BadJSON, parse_json
from kpengine.server.schemas import (
    AnnotationIn,
    AnnotationOut,
    CategoryOut,
    Invitation,
    InvitationOut,
    KeypointOut,
    MeOut,
    ModelInfo,
    ModelRow,
    NextModelOut,
    PointCloudOut,
)
from kpengine.store import repo
from kpengine.store.exchange import official_json, raw_annotations_json, store_model_annotations
from kpengine.store.schema import Model, RawAnnotation

router = APIRouter(prefix="/api")


def _store(request: Request):  # noqa: ANN202
    return request.app.state.store


def _model_or_404(session, category: str, model_id: str) -> Model:  # noqa: ANN001
    model = repo.get_model(session, category, model_id)
    if model is None:
        raise HTTPException(404, f"no model {model_id!r} in category {category!r}")
    return model


def _keypoints_out(rows: list[RawAnnotation]) -> list[KeypointOut]:
    return [
        KeypointOut(
            index=r.kp_index,
            xyz=(r.x, r.y, r.z),
            face_index=r.face_index,
            barycentric=None if r.u is None else (r.u, r.v, r.w),  # type: ignore[arg-type]
            point_index=r.point_index,
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- public


@router.get("/health", tags=["public"])
def health(request: Request, response: Response) -> dict:
    """``ok`` only when the database answers and can commit a write now (503 otherwise, with why)."""
    probe = request.app.state.write_probe.check()
    if not probe.writable:
        response.status_code = 503
    return {"ok": probe.writable, "database": _store(request).dialect, "writable": probe.writable, "error": probe.error}


@router.get("/categories", tags=["public"])
def categories(request: Request) -> list[CategoryOut]:
    """Categories with model counts and semantic labels."""
    with _store(request).read() as s:
        return repo.list_categories(s)


@router.get("/categories/{category}/models", tags=["public"])
def models(
    request: Request, category: str, split: Annotated[str | None, Query(pattern="^(train|val|test)$")] = None
) -> list[ModelRow]:
    """Models of a category, optionally of one split."""
    with _store(request).read() as s:
        cat = repo.get_category(s, category)
        if cat is None:
            raise HTTPException(404, f"no category {category!r}")
        return repo.list_models(s, cat, split)


@router.get("/models/{category}/{model_id}", tags=["public"])
def model_info(request: Request, category: str, model_id: str) -> ModelInfo:
    """A model with its aggregated keypoints (semantic ids and their names) and symmetries."""
    with _store(request).read() as s:
        model = _model_or_404(s, category, model_id)
        labels = repo.semantic_labels(s, model.category_id)
        kps = repo.aggregated_keypoints(s, model)
        return {
            "category": model.category.name,
            "synset": model.category.synset,
            "model_id": model.model_id,
            "split": model.split,
            "has_mesh": model.mesh_path is not None,
            "has_points": model.pcd_path is not None,
            "content_hash": model.content_hash,
            "orientation": model.orientation,
            "keypoints": [
                {
                    "semantic_id": k.semantic_id,
                    "name": labels.get(str(k.semantic_id), f"keypoint {k.semantic_id}"),
                    "xyz": None if k.x is None else [k.x, k.y, k.z],
                    "point_index": k.point_index,
                    "face_index": k.face_index,
                    "status": k.status,
                }
                for k in kps
            ],
        }


def _unusable(model_id: str, exc: Exception, what: str = "shown") -> HTTPException:
    """409: the model exists but its geometry file on the server cannot be used (the reason)."""
    reason = exc.reason if isinstance(exc, DataError) else (getattr(exc, "strerror", None) or str(exc))
    return HTTPException(409, f"model {model_id} cannot be {what}: its geometry file is unusable: {reason}")


def _geometry_paths(request: Request, category: str, model_id: str) -> tuple[str | None, str | None]:
    with _store(request).read() as s:
        model = _model_or_404(s, category, model_id)
        return model.mesh_path, model.pcd_path


@router.get("/models/{category}/{model_id}/mesh.{fmt}", tags=["public"], response_class=Response)
async def mesh(request: Request, category: str, model_id: str, fmt: str) -> Response:
    """The model's triangle mesh as binary glTF (``glb``) or ``ply``, triangles in file order."""
    if fmt not in ("glb", "ply"):
        raise HTTPException(404, "mesh formats: glb, ply")
    mesh_path, pcd_path = await run_in_threadpool(_geometry_paths, request, category, model_id)
    if mesh_path is None:
        raise HTTPException(404, f"model {model_id} has no mesh; use its point cloud (/points)")
    try:
        data = await run_in_threadpool(request.app.state.geometry.encoded, mesh_path, fmt, pcd_path)
    except (OSError, DataError) as exc:
        raise _unusable(model_id, exc) from exc
    media = "model/gltf-binary" if fmt == "glb" else "application/octet-stream"
    return Response(data, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


@router.get("/models/{category}/{model_id}/points", tags=["public"])
def points(request: Request, category: str, model_id: str) -> PointCloudOut:
    """The model's point cloud: ``points`` flat [x0, y0, z0, x1, ...], ``colors`` flat 0-255 or null."""
    mesh_path, pcd_path = _geometry_paths(request, category, model_id)
    if pcd_path is None:
        raise HTTPException(404, f"model {model_id} has no point cloud")
    try:
        geometry = request.app.state.geometry.get(mesh_path, pcd_path)
    except (OSError, DataError) as exc:
        raise _unusable(model_id, exc) from exc
    return {
        "points": [round(float(v), 7) for v in geometry.points.ravel()],
        "colors": None if geometry.colors is None else geometry.colors.ravel().tolist(),
    }


# --------------------------------------------------------------------------- annotators


@router.get("/me", tags=["annotator"])
def me(annotator: AnnotatorDep) -> MeOut:
    return {"name": annotator.name, "role": annotator.role, "max_keypoints": MAX_KEYPOINTS}


@router.get("/annotations", tags=["annotator"])
def my_annotations(request: Request, annotator: AnnotatorDep) -> list[AnnotationOut]:
    """Every model you annotated, most recent first, with your keypoints (for the side panel)."""
    with _store(request).read() as s:
        return [
            AnnotationOut(category=m.category.name, model_id=m.model_id, revision=rev, keypoints=_keypoints_out(rows))
            for m, rev, rows in repo.annotated_models(s, annotator)
        ]


def _warm(request: Request, background: BackgroundTasks, model: Model) -> None:
    """Load the model's geometry after answering, while the annotator looks at the model: the
    first save then finds the mesh, cloud and search trees ready (a cold load is ~200 ms).
    A model already warm schedules nothing: the background task alone costs a thread hop."""
    cache = request.app.state.geometry
    if not cache.ready(model.mesh_path, model.pcd_path):
        background.add_task(cache.warm, model.mesh_path, model.pcd_path)


@router.get("/annotations/{category}/{model_id}", tags=["annotator"])
def my_annotation(
    request: Request, category: str, model_id: str, annotator: AnnotatorDep, background: BackgroundTasks
) -> AnnotationOut:
    """Your keypoints on one model (revision 0 and none when you have not saved it)."""
    with _store(request).read() as s:
        model = _model_or_404(s, category, model_id)
        revision, rows = repo.raw_keypoints(s, model, annotator)
        _warm(request, background, model)
        return AnnotationOut(
            category=model.category.name, model_id=model_id, revision=revision, keypoints=_keypoints_out(rows)
        )


@router.put("/annotations/{category}/{model_id}", tags=["annotator"])
def save_annotation(
    request: Request, category: str, model_id: str, body: AnnotationIn, annotator: AnnotatorDep
) -> AnnotationOut:
    """Save your whole keypoint set for a model in one transaction; the reply is the acknowledgement.

    Refused (nothing changes): more than 24 keypoints, repeated indices, a click off the
    surface, a stale ``base_revision`` (409).
    """
    if len(body.keypoints) > MAX_KEYPOINTS:
        raise HTTPException(
            422, f"at most {MAX_KEYPOINTS} keypoints per annotator per model; got {len(body.keypoints)}"
        )
    indices = [k.index for k in body.keypoints]
    if len(set(indices)) != len(indices):
        raise HTTPException(422, f"keypoint indices must be unique; got {indices}")
    if not all(math.isfinite(c) for k in body.keypoints for c in k.xyz):  # pydantic checks too; keep the rule here
        raise HTTPException(422, "keypoint coordinates must be finite numbers")
    mesh_path, pcd_path = _geometry_paths(request, category, model_id)
    try:
        geometry = request.app.state.geometry.get(mesh_path, pcd_path)
    except (OSError, DataError) as exc:
        raise _unusable(model_id, exc, "annotated") from exc
    tolerance = request.app.state.config.tolerance
    try:
        clicks = geometry.locate(
            model_id, annotator.name, [k.index for k in body.keypoints], [k.xyz for k in body.keypoints], tolerance
        )
    except OffSurface as exc:
        raise HTTPException(422, str(exc)) from exc
    try:
        with _store(request).session() as s:
            model = _model_or_404(s, category, model_id)
            revision = repo.save_raw_annotation(s, model, annotator, clicks, base_revision=body.base_revision)
    except repo.RevisionConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    except repo.StoreError as exc:
        raise HTTPException(422, str(exc)) from exc
    request.app.state.write_probe.succeeded()  # committed: a storage fault told before is over
    return AnnotationOut(
        category=category,
        model_id=model_id,
        revision=revision,
        keypoints=[
            KeypointOut(
                index=c.kp_index,
                xyz=c.xyz,
                face_index=c.face_index,
                barycentric=c.face_uv,
                point_index=c.point_index,
            )
            for c in sorted(clicks, key=lambda c: c.kp_index)
        ],
    )


@router.get("/next", tags=["annotator"])
def next_model(
    request: Request, annotator: AnnotatorDep, background: BackgroundTasks, category: str | None = None
) -> NextModelOut:
    """The next model for you: one you have not annotated, with the fewest annotators first."""
    with _store(request).read() as s:
        cat = None
        if category:
            cat = repo.get_category(s, category)
            if cat is None:
                raise HTTPException(404, f"no category {category!r}")
        model = repo.next_model(s, annotator, cat)
        if model is None:
            raise HTTPException(404, "you have annotated every model" + (f" of {category}" if category else ""))
        _warm(request, background, model)
        return {"category": model.category.name, "model_id": model.model_id}


@router.get("/progress", tags=["annotator"])
def progress(request: Request, annotator: AnnotatorDep) -> list[dict]:
    """Per category: models, models annotated by anyone, keypoint sets saved."""
    with _store(request).read() as s:
        return repo.progress(s)


# --------------------------------------------------------------------------- admin


@router.post("/admin/invitations", tags=["admin"], status_code=201)
def invite(request: Request, body: Invitation, admin: AdminDep) -> InvitationOut:
    """Create an annotator (or admin) and return their token; it is shown only this once."""
    try:
        with _store(request).session() as s:
            annotator, token = repo.create_annotator(s, body.name, body.role)
    except repo.StoreError as exc:
        raise HTTPException(409, str(exc)) from exc
    return InvitationOut(name=annotator.name, role=annotator.role, token=token)


@router.post("/admin/import/{category}", tags=["admin"])
async def import_annotations(request: Request, category: str, admin: AdminDep) -> dict:
    """Import aggregated keypoints for models of a known category: the body is an official
    annotation file (a JSON list). Geometry is never uploaded; it comes from ``kpengine db import``."""
    try:
        data = parse_json(await request.body())
    except BadJSON as exc:
        raise HTTPException(422, str(exc)) from exc
    if not isinstance(data, list):
        raise HTTPException(422, "expected a JSON list of models (the KeypointNet annotation format)")
    try:
        anns = [parse_model(obj) for obj in data]
    except (ValueError, TypeError, AttributeError) as exc:
        raise HTTPException(422, f"not in the KeypointNet annotation format: {exc}") from exc

    def write() -> tuple[int, int]:
        with _store(request).session() as s:
            cat = repo.get_category(s, category)
            if cat is None:
                raise HTTPException(404, f"no category {category!r}")
            wrong = [a.model_id for a in anns if a.class_id != cat.synset]
            if wrong:
                raise HTTPException(422, f"models {wrong[:5]} have a class_id other than {cat.synset}")
            return store_model_annotations(s, cat, anns)

    n_models, n_kp = await run_in_threadpool(write)
    return {"models": n_models, "keypoints": n_kp}


@router.get("/admin/export/{category}", tags=["admin"], response_class=Response)
def export_annotations(request: Request, category: str, admin: AdminDep) -> Response:
    """The category's aggregated keypoints as an official KeypointNet annotation file."""
    with _store(request).read() as s:
        cat = repo.get_category(s, category)
        if cat is None:
            raise HTTPException(404, f"no category {category!r}")
        return Response(official_json(s, cat), media_type="application/json")


@router.get("/admin/raw", tags=["admin"])
def export_raw(request: Request, admin: AdminDep, category: str | None = None) -> list[dict]:
    """Every annotator's raw clicks, one flat object per click (the raw-click format of
    ``kpengine db export-raw``, read by ``kpengine aggregate --raw`` and ``db import-raw``)."""
    with _store(request).read() as s:
        return raw_annotations_json(s, category)
