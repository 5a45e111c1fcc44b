"""Request and response bodies (pydantic), so the OpenAPI page documents them.

Only structure is checked here (types, finite numbers, index range); types are strict
(a coordinate given as the string ``"0.5"`` or an index given as ``true`` is refused, not
converted: the browser never sends them, so they are someone else's mistake to hear
about). The rules that need
the store or the geometry (at most 24 keypoints, on the surface) are checked in ``api``
with messages that say what was wrong.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, model_validator

from kpengine.io.clicks import MAX_KEYPOINTS
from kpengine.server.guard import Text

#: A JSON number (integers are numbers too), finite; strings and booleans are refused.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class KeypointIn(BaseModel):
    index: StrictInt = Field(
        ge=0, lt=MAX_KEYPOINTS, description=f"your own number for this keypoint (0-{MAX_KEYPOINTS - 1})"
    )
    xyz: tuple[Finite, Finite, Finite] = Field(description="the clicked surface point, in the model's frame")


class AnnotationIn(BaseModel):
    keypoints: list[KeypointIn] = Field(description=f"your whole keypoint set for the model (at most {MAX_KEYPOINTS})")
    base_revision: StrictInt | None = Field(
        None, ge=0, description="the revision these edits start from; a newer stored revision gives 409"
    )

    @model_validator(mode="before")
    @classmethod
    def _count_first(cls, data: Any) -> Any:
        """Say "too many keypoints" before complaining about the 25th one's index."""
        if (
            isinstance(data, dict)
            and isinstance(data.get("keypoints"), list)
            and len(data["keypoints"]) > MAX_KEYPOINTS
        ):
            raise ValueError(f"at most {MAX_KEYPOINTS} keypoints per annotator per model; got {len(data['keypoints'])}")
        return data


class KeypointOut(BaseModel):
    index: int
    xyz: tuple[float, float, float]
    face_index: int | None = None
    barycentric: tuple[float, float, float] | None = None
    point_index: int | None = None


class AnnotationOut(BaseModel):
    category: str
    model_id: str
    revision: int
    keypoints: list[KeypointOut]


class Invitation(BaseModel):
    name: Text = Field(min_length=1, max_length=128)
    role: Literal["admin", "annotator"] = "annotator"


class InvitationOut(BaseModel):
    name: str
    role: str
    token: str


# --------------------------------------------------------------------------- catalogue (public)
# Declared so that /openapi.json describes them: web/src/generated/api-types.ts is generated from it.


class CategoryOut(BaseModel):
    name: str
    synset: str
    n_models: int
    labels: dict[str, str] = Field(description="semantic id (as a string) -> name")


class ModelRow(BaseModel):
    model_id: str
    split: str | None
    n_keypoints: int = Field(description="aggregated keypoints stored for the model")
    has_mesh: bool
    has_points: bool


class ModelKeypoint(BaseModel):
    semantic_id: int
    name: str
    xyz: tuple[float, float, float] | None
    point_index: int | None
    face_index: int | None
    status: str


class ModelInfo(BaseModel):
    category: str
    synset: str
    model_id: str
    split: str | None
    has_mesh: bool
    has_points: bool
    content_hash: str | None
    orientation: list[float] = Field(description="row-major 3x3 rotation to the canonical frame")
    keypoints: list[ModelKeypoint]


class PointCloudOut(BaseModel):
    points: list[float] = Field(description="flat [x0, y0, z0, x1, ...]")
    colors: list[int] | None = Field(description="flat 0-255 RGB per point, or null")


# --------------------------------------------------------------------------- annotator


class MeOut(BaseModel):
    name: str
    role: str
    max_keypoints: int


class NextModelOut(BaseModel):
    category: str
    model_id: str
