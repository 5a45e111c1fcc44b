"""Admin endpoints for aggregation and human verification (the ``/verify`` page).

Every action is one transaction on the store (:mod:`kpengine.store.verify`) and answers
with the category's new verification state, so the page redraws from what was saved
rather than from what it guessed. All routes need an admin token: verification decides
what goes into the official export.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, StrictInt

from kpengine.errors import DataError
from kpengine.server.auth import AdminDep
from kpengine.server.geometry import OffSurface
from kpengine.server.guard import Text
from kpengine.server.schemas import Finite
from kpengine.store import repo
from kpengine.store import verify as ops

router = APIRouter(prefix="/api/admin", tags=["verification"])

Status = Literal["verified", "rejected", "pending"]


class StatusIn(BaseModel):
    status: Status = Field(description="verified (accept), rejected, or pending (undecided)")


class MergeIn(BaseModel):
    source: StrictInt = Field(ge=0, description="the semantic id (cluster) that disappears")
    target: StrictInt = Field(ge=0, description="the semantic id its keypoints join")


class SplitIn(BaseModel):
    keypoint_ids: list[StrictInt] | None = Field(
        None, max_length=100_000, description="keypoints to move to a new id; omitted: 2-means on t-SNE"
    )


class NameIn(BaseModel):
    name: Text = Field(min_length=1, max_length=256, description="e.g. 'seat corner, front left'")


class AddKeypointIn(BaseModel):
    semantic_id: StrictInt = Field(ge=0, description="an id the category already has (a cluster or a named id)")
    xyz: tuple[Finite, Finite, Finite] = Field(description="the clicked surface point, in the model's frame")


class AggregateIn(BaseModel):
    steps: StrictInt = Field(200, ge=1, le=100_000, description="embedding training steps per round")
    rounds: StrictInt = Field(1, ge=1, le=10)
    seed: StrictInt = 0


def _run(request: Request, category: str, action: Any) -> dict:  # noqa: ANN401 - callable
    """Apply ``action(session, category)`` in one transaction, then return the new state."""
    try:
        with request.app.state.store.session() as s:
            cat = repo.get_category(s, category)
            if cat is None:
                raise HTTPException(404, f"no category {category!r}")
            result = action(s, cat)
        with request.app.state.store.session() as s:
            state = ops.verification_state(s, repo.get_category(s, category))  # type: ignore[arg-type]
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    except repo.StoreError as exc:
        raise HTTPException(422, str(exc)) from exc
    state["result"] = result if isinstance(result, dict) else None
    return state


@router.get("/verify/{category}")
def state(request: Request, category: str, admin: AdminDep) -> dict:
    """The category's latest aggregation run, clusters, candidates (t-SNE) and keypoints."""
    return _run(request, category, lambda s, c: None)


@router.post("/verify/{category}/keypoints/{keypoint_id}")
def keypoint_status(request: Request, category: str, keypoint_id: int, body: StatusIn, admin: AdminDep) -> dict:
    """Accept or reject one keypoint."""
    return _run(request, category, lambda s, c: {"id": ops.set_keypoint_status(s, c, keypoint_id, body.status).id})


@router.post("/verify/{category}/clusters/{semantic_id}/status")
def cluster_status(request: Request, category: str, semantic_id: int, body: StatusIn, admin: AdminDep) -> dict:
    """Accept or reject every keypoint of a cluster (semantic id)."""
    return _run(request, category, lambda s, c: {"changed": ops.set_cluster_status(s, c, semantic_id, body.status)})


@router.post("/verify/{category}/merge")
def merge(request: Request, category: str, body: MergeIn, admin: AdminDep) -> dict:
    """Merge cluster ``source`` into ``target`` (duplicates on a model: the worse one is rejected)."""
    return _run(request, category, lambda s, c: ops.merge_clusters(s, c, body.source, body.target))


@router.post("/verify/{category}/clusters/{semantic_id}/split")
def split(request: Request, category: str, semantic_id: int, body: SplitIn, admin: AdminDep) -> dict:
    """Split off the chosen keypoints (or a 2-means half on t-SNE) into a new semantic id."""
    return _run(request, category, lambda s, c: ops.split_cluster(s, c, semantic_id, body.keypoint_ids))


@router.put("/verify/{category}/labels/{semantic_id}")
def name(request: Request, category: str, semantic_id: int, body: NameIn, admin: AdminDep) -> dict:
    """Name a semantic id (``semantic_labels``; shown in the explorer and on this page)."""
    return _run(request, category, lambda s, c: ops.name_semantic_id(s, c, semantic_id, body.name))


@router.post("/verify/{category}/models/{model_id}/keypoints")
def add_keypoint(request: Request, category: str, model_id: str, body: AddKeypointIn, admin: AdminDep) -> dict:
    """Add a keypoint the crowd missed on one model, with an existing semantic id (saved as verified).

    Refused with 422, nothing saved: a click farther than the server's tolerance from the
    model's surface (as annotators' saves; the stored point is the nearest surface point), an
    unknown semantic id, an id the model already has (a non-rejected keypoint)."""
    with request.app.state.store.read() as s:
        model = repo.get_model(s, category, model_id)
        if model is None:
            raise HTTPException(404, f"no model {model_id!r} in category {category!r}")
        paths = (model.mesh_path, model.pcd_path)
    try:
        geometry = request.app.state.geometry.get(*paths)
    except (OSError, DataError) as exc:
        raise HTTPException(409, f"model {model_id} has no usable geometry on this server: {exc}") from exc
    try:
        (click,) = geometry.locate(
            model_id, admin.name, [body.semantic_id], [body.xyz], request.app.state.config.tolerance
        )
    except OffSurface as exc:
        raise HTTPException(422, str(exc)) from exc
    return _run(
        request,
        category,
        lambda s, c: {"id": ops.add_keypoint(s, c, model_id, body.semantic_id, click, admin.name).id},
    )


def _aggregate_config(body: AggregateIn) -> Any:  # noqa: ANN401 - AggregateConfig (imported lazily: torch)
    from kpengine.aggregate.pipeline import AggregateConfig

    cfg = AggregateConfig(rounds=body.rounds, progress=False)
    return replace(cfg, embedding=replace(cfg.embedding, steps=body.steps, seed=body.seed))


@router.post("/aggregate/{category}")
async def aggregate(request: Request, category: str, body: AggregateIn, admin: AdminDep) -> dict:
    """Aggregate the category's raw annotations now (blocks until done; ``POST .../jobs`` runs it in
    the background with progress, the CLI ``kpengine aggregate --db`` too) and store pending keypoints."""
    from kpengine.store.aggregation import aggregate_category

    try:
        _, summary = await run_in_threadpool(
            aggregate_category, request.app.state.store, category, None, _aggregate_config(body)
        )
    except DataError as exc:
        raise HTTPException(422, str(exc)) from exc
    return summary


def _jobs(request: Request) -> tuple[dict[str, dict[str, Any]], threading.Lock]:
    """The app's aggregation jobs (in memory: a restart forgets them, the stored result stays) and their lock."""
    state = request.app.state
    if not hasattr(state, "aggregation_jobs"):
        state.aggregation_jobs, state.aggregation_lock = {}, threading.Lock()
    return state.aggregation_jobs, state.aggregation_lock


@router.post("/aggregate/{category}/jobs", status_code=202)
def start_aggregation(request: Request, category: str, body: AggregateIn, admin: AdminDep) -> dict:
    """Start aggregating the category in the background; poll ``GET /api/admin/aggregate/jobs/{job}``.

    One job per category at a time (409 while one runs). The job reports the pipeline's
    stage and the share of the work done (``kpengine.aggregate.pipeline.STAGES``), then the
    same summary as the blocking route, or the error.
    """
    from kpengine.store.aggregation import aggregate_category

    store = request.app.state.store
    with store.session() as s:
        if repo.get_category(s, category) is None:
            raise HTTPException(404, f"no category {category!r}")
    jobs, lock = _jobs(request)
    job: dict[str, Any] = {
        "job": uuid.uuid4().hex[:12],
        "category": category,
        "state": "running",
        "stage": "queued",
        "fraction": 0.0,
        "stages": [],
        "started": time.time(),
        "finished": None,
        "summary": None,
        "error": None,
    }
    with lock:
        if any(j["category"] == category and j["state"] == "running" for j in jobs.values()):
            raise HTTPException(409, f"an aggregation of {category!r} is already running")
        jobs[job["job"]] = job

    def on_stage(name: str, fraction: float) -> None:
        with lock:
            job.update(stage=name, fraction=round(float(fraction), 3))
            job["stages"].append(name)

    def work() -> None:
        try:
            _, summary = aggregate_category(store, category, None, _aggregate_config(body), on_stage=on_stage)
            update = {"state": "done", "summary": summary, "fraction": 1.0}
        except Exception as exc:  # noqa: BLE001 - the job reports any failure instead of dying silently
            update = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        with lock:
            job.update(update, finished=time.time())

    threading.Thread(target=work, name=f"aggregate-{category}", daemon=True).start()
    return _job_view(job, lock)


def _job_view(job: dict[str, Any], lock: threading.Lock) -> dict:
    with lock:
        return {**job, "stages": list(job["stages"])}


@router.get("/aggregate/jobs/{job_id}")
def aggregation_job(request: Request, job_id: str, admin: AdminDep) -> dict:
    """An aggregation job's state: running (stage, fraction), done (summary) or failed (error)."""
    jobs, lock = _jobs(request)
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no aggregation job {job_id!r}")
    return _job_view(job, lock)
