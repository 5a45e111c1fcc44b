"""Keypoint suggestions for the annotation page (``/api/suggestions``, issue 16).

A suggestion file is any saliency-format predictions file under the server's ``--runs`` folder
(the explorer lists them at ``/api/explore/runs``); ``kpengine predict`` of an unsupervised run
writes one whose entry k is keypoint k. For one model the route returns those entries as
positions on its stored cloud, in file order, so the page can draw them faintly and turn one
into a keypoint with a click. Public and read-only like the catalogue: a request names a file
of the listing, never a path of its own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from kpengine.errors import DataError
from kpengine.io.predictions import parse_saliency_predictions
from kpengine.server.api import _geometry_paths, _unusable
from kpengine.server.explore import read_run_file

router = APIRouter(prefix="/api/suggestions", tags=["public"])


class Suggestion(BaseModel):
    index: int = Field(
        description="the entry's place in the file's list for the model (keypoint k of an unsupervised run)"
    )
    point_index: int = Field(description="the point of the model's stored cloud")
    xyz: tuple[float, float, float]
    score: float


class SuggestionsOut(BaseModel):
    name: str = Field(description="the predictions file (its path under the runs folder)")
    model_id: str
    keypoints: list[Suggestion] = Field(description="empty when the file has nothing for this model")


def _read_entry(request: Request, name: str, model_id: str) -> object | None:
    return read_run_file(request, name).get(model_id)


@router.get("/{category}/{model_id}")
def suggestions(
    request: Request, category: str, model_id: str, name: Annotated[str, Query(max_length=1024)]
) -> SuggestionsOut:
    """The entries of predictions file ``name`` for one model, as points of its stored cloud."""
    mesh_path, pcd_path = _geometry_paths(request, category, model_id)  # 404 for an unknown model
    entry = _read_entry(request, name, model_id)
    if entry is None:
        return SuggestionsOut(name=name, model_id=model_id, keypoints=[])
    if pcd_path is None:
        raise HTTPException(409, f"model {model_id} has no point cloud on this server; suggestions index its cloud")
    try:
        points = request.app.state.geometry.get(mesh_path, pcd_path).points
    except (OSError, DataError) as exc:
        raise _unusable(model_id, exc) from exc
    try:
        preds, _ = parse_saliency_predictions({model_id: entry}, {model_id: len(points)}, name)
    except DataError as exc:
        raise HTTPException(422, str(exc)) from exc
    idx, scores = preds[model_id]
    return SuggestionsOut(
        name=name,
        model_id=model_id,
        keypoints=[
            Suggestion(
                index=k,
                point_index=int(i),
                xyz=tuple(round(float(v), 7) for v in points[i]),
                score=float(s),
            )
            for k, (i, s) in enumerate(zip(idx, scores))
        ],
    )
