"""Admin endpoints for aggregation and human verification (the ``/verify`` page).

Every action is one transaction on the store (:mod:`kpengine.store.verify`) and answers
with the category's new verification state, so the page redraws from what was saved
rather than from what it guessed. All routes need an admin token: verification decides
what goes into the official export.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, StrictInt

from kpengine.errors import DataError
from kpengine.server.auth import AdminDep
from kpengine.server.guard import Text
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


@router.post("/aggregate/{category}")
async def aggregate(request: Request, category: str, body: AggregateIn, admin: AdminDep) -> dict:
    """Aggregate the category's raw annotations now (blocks until done; the CLI
    ``kpengine aggregate --db`` does the same for large categories) and store pending keypoints."""
    from kpengine.aggregate.pipeline import AggregateConfig
    from kpengine.store.aggregation import aggregate_category

    cfg = AggregateConfig(rounds=body.rounds, progress=False)
    cfg = replace(cfg, embedding=replace(cfg.embedding, steps=body.steps, seed=body.seed))
    try:
        _, summary = await run_in_threadpool(aggregate_category, request.app.state.store, category, None, cfg)
    except DataError as exc:
        raise HTTPException(422, str(exc)) from exc
    return summary
