"""Tables of the knowledge store.

Raw annotations are what one annotator clicked on one model (their own numbering, up to
24 points); aggregated keypoints are the consensus of a category (semantic ids, as in the
official KeypointNet files) and are what import/export round-trips. Coordinates are
stored as double precision floats, which both SQLite and PostgreSQL keep bit for bit, so
an imported ``xyz`` comes back as the same Python float. Fields of the official format
that kpengine does not model are kept in ``extra`` JSON columns (lossless round trip).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from kpengine.io.clicks import MAX_KEYPOINTS  # noqa: F401 - re-exported: the store's limit is the format's

ROLES = ("admin", "annotator")
#: "pending": proposed by ``kpengine aggregate --db`` and not yet looked at by a person.
VERIFICATION = ("unverified", "verified", "rejected", "pending")
SYMMETRY_KINDS = ("reflection", "rotation")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    synset: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)

    models: Mapped[list[Model]] = relationship(back_populates="category")


class Model(Base):
    """A 3D model: where its geometry lies on the server (never given by a client), a
    content hash of that geometry, and its canonical orientation (row-major 3x3 rotation
    into the ShapeNetCore.v2 frame; identity for ShapeNet models)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("category_id", "model_id", name="uq_models_category_model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(128))
    split: Mapped[str | None] = mapped_column(String(16))
    mesh_path: Mapped[str | None] = mapped_column(String(1024))
    pcd_path: Mapped[str | None] = mapped_column(String(1024))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    orientation: Mapped[list[Any]] = mapped_column(default=lambda: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    #: unknown top-level fields of the model's element in the annotation file
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: unknown fields of its "symmetries" object
    symmetries_extra: Mapped[dict[str, Any]] = mapped_column(default=dict)

    category: Mapped[Category] = relationship(back_populates="models")


class Annotator(Base):
    """A person with a token. Only the SHA-256 of the token is stored."""

    __tablename__ = "annotators"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AnnotationRevision(Base):
    """One row per (model, annotator) that has saved: the revision number of their current
    keypoint set. A save bumps it in the same transaction that replaces the raw rows, so it
    doubles as the row lock that serialises two saves of the same set."""

    __tablename__ = "annotation_revisions"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RawAnnotation(Base):
    """One click: the annotator's own keypoint index, the surface point, the triangle it
    lies on with barycentric weights (when the model has a mesh) and the nearest point of
    the model's cloud (when it has one)."""

    __tablename__ = "raw_annotations"
    __table_args__ = (
        UniqueConstraint("model_id", "annotator_id", "kp_index", name="uq_raw_model_annotator_index"),
        Index("ix_raw_annotator_model", "annotator_id", "model_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"))
    kp_index: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Double())
    y: Mapped[float] = mapped_column(Double())
    z: Mapped[float] = mapped_column(Double())
    face_index: Mapped[int | None] = mapped_column(Integer)
    u: Mapped[float | None] = mapped_column(Double())
    v: Mapped[float | None] = mapped_column(Double())
    w: Mapped[float | None] = mapped_column(Double())
    point_index: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AggregatedKeypoint(Base):
    """A keypoint of the category's consensus on one model, as in the official files.

    ``ordinal`` keeps the order of the model's keypoint list, which symmetry groups index.
    """

    __tablename__ = "aggregated_keypoints"
    __table_args__ = (UniqueConstraint("model_id", "ordinal", name="uq_agg_model_ordinal"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    semantic_id: Mapped[int] = mapped_column(Integer)
    x: Mapped[float | None] = mapped_column(Double())
    y: Mapped[float | None] = mapped_column(Double())
    z: Mapped[float | None] = mapped_column(Double())
    rgb: Mapped[list[Any] | None] = mapped_column(JSON)
    point_index: Mapped[int | None] = mapped_column(Integer)
    face_index: Mapped[int | None] = mapped_column(Integer)
    face_uv: Mapped[list[Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="verified")
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)


class SemanticLabel(Base):
    """A human name for a semantic id of a category ("seat corner, front left")."""

    __tablename__ = "semantic_labels"

    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True)
    semantic_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256))


class SymmetryGroup(Base):
    """A reflection or rotation group of one model; ``kp_indexes`` index the model's
    aggregated keypoint list (by ``ordinal``), as in the official files."""

    __tablename__ = "symmetry_groups"
    __table_args__ = (UniqueConstraint("model_id", "kind", "ordinal", name="uq_sym_model_kind_ordinal"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    ordinal: Mapped[int] = mapped_column(Integer)
    kp_indexes: Mapped[list[Any]] = mapped_column(JSON)
    is_circle: Mapped[bool] = mapped_column(Boolean, default=False)
    circle: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AggregationRun(Base):
    """One ``kpengine aggregate --db`` of a category: its report (clusters, noise, timings).

    Kept so the verification page can show what the pending keypoints came from; a new run
    of the category replaces the older runs (and their candidates)."""

    __tablename__ = "aggregation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AggregationCandidate(Base):
    """A candidate keypoint of a run: its t-SNE position and cluster (-1: noise), for the
    verification page's scatter plot. ``keypoint_id`` links the candidate that became an
    aggregated keypoint (the others were noise or duplicates); ``cluster`` follows that
    keypoint's semantic id through merges and splits."""

    __tablename__ = "aggregation_candidates"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("aggregation_runs.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    point_index: Mapped[int] = mapped_column(Integer)
    error: Mapped[float] = mapped_column(Double())
    tsne_x: Mapped[float] = mapped_column(Double())
    tsne_y: Mapped[float] = mapped_column(Double())
    cluster: Mapped[int] = mapped_column(Integer)
    keypoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("aggregated_keypoints.id", ondelete="SET NULL"), index=True
    )
