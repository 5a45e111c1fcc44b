"""Queries and writes on the store, each taking an open :class:`~sqlalchemy.orm.Session`.

The caller owns the transaction (``with store.session() as s``), so a save is exactly one
transaction however many rows it touches. :func:`save_raw_annotation` replaces an
annotator's whole keypoint set for a model: the set is what the annotator sees and
revises in the tool, and replacing it atomically means a reader never sees half of one
save and half of another.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, contains_eager, joinedload

from kpengine.io.clicks import MAX_KEYPOINTS, Click
from kpengine.store.schema import (
    ROLES,
    AggregatedKeypoint,
    AnnotationRevision,
    Annotator,
    Category,
    Model,
    RawAnnotation,
    SemanticLabel,
    utcnow,
)


class StoreError(ValueError):
    """A request the store refuses; the message says why."""


class RevisionConflict(StoreError):
    """The client edited an older revision than the one stored (another tab or device saved)."""

    def __init__(self, stored: int, base: int):
        super().__init__(f"your keypoints are based on revision {base} but revision {stored} is stored; reload first")
        self.stored = stored
        self.base = base


# --------------------------------------------------------------------------- annotators


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_annotator(session: Session, name: str, role: str = "annotator") -> tuple[Annotator, str]:
    """Invite someone: returns the annotator and their token (shown once; only its hash is kept)."""
    if role not in ROLES:
        raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not name or len(name) > 128:
        raise StoreError("an annotator needs a name of 1 to 128 characters")
    if session.scalar(select(Annotator.id).where(Annotator.name == name)) is not None:
        raise StoreError(f"an annotator called {name!r} exists already")
    token = secrets.token_urlsafe(24)
    annotator = Annotator(name=name, role=role, token_hash=hash_token(token))
    session.add(annotator)
    session.flush()
    return annotator, token


def annotator_by_token(session: Session, token: str) -> Annotator | None:
    return session.scalar(select(Annotator).where(Annotator.token_hash == hash_token(token)))


# --------------------------------------------------------------------------- catalogue


def get_category(session: Session, name_or_synset: str) -> Category | None:
    return session.scalar(
        select(Category).where((Category.name == name_or_synset) | (Category.synset == name_or_synset))
    )


def get_model(session: Session, category: str, model_id: str) -> Model | None:
    """The model ``model_id`` of a category given by name or synset, its ``category`` loaded by
    the same query (routes read ``model.category.name``: a lazy load was a second query)."""
    return session.scalar(
        select(Model)
        .join(Model.category)
        .options(contains_eager(Model.category))
        .where((Category.name == category) | (Category.synset == category), Model.model_id == model_id)
    )


def list_categories(session: Session) -> list[dict]:
    """Every category with its model count and semantic labels."""
    counts = dict(session.execute(select(Model.category_id, func.count()).group_by(Model.category_id)).all())
    labels: dict[int, dict[int, str]] = {}
    for lab in session.scalars(select(SemanticLabel)):
        labels.setdefault(lab.category_id, {})[lab.semantic_id] = lab.name
    return [
        {
            "name": c.name,
            "synset": c.synset,
            "n_models": counts.get(c.id, 0),
            "labels": {str(k): v for k, v in sorted(labels.get(c.id, {}).items())},
        }
        for c in session.scalars(select(Category).order_by(Category.name))
    ]


def semantic_labels(session: Session, category_id: int) -> dict[str, str]:
    """Names of one category's semantic ids, keyed by the id as a string (as in the API)."""
    rows = session.execute(
        select(SemanticLabel.semantic_id, SemanticLabel.name).where(SemanticLabel.category_id == category_id)
    )
    return {str(sid): name for sid, name in rows}


def list_models(session: Session, category: Category, split: str | None = None) -> list[dict]:
    """Models of a category (optionally one split) with their aggregated keypoint count."""
    n_kp = select(AggregatedKeypoint.model_id, func.count().label("n")).group_by(AggregatedKeypoint.model_id).subquery()
    query = (
        select(Model, func.coalesce(n_kp.c.n, 0))
        .outerjoin(n_kp, n_kp.c.model_id == Model.id)
        .where(Model.category_id == category.id)
        .order_by(Model.id)
    )
    if split:
        query = query.where(Model.split == split)
    return [
        {
            "model_id": m.model_id,
            "split": m.split,
            "n_keypoints": n,
            "has_mesh": m.mesh_path is not None,
            "has_points": m.pcd_path is not None,
        }
        for m, n in session.execute(query)
    ]


def aggregated_keypoints(session: Session, model: Model) -> list[AggregatedKeypoint]:
    return list(
        session.scalars(
            select(AggregatedKeypoint)
            .where(AggregatedKeypoint.model_id == model.id)
            .order_by(AggregatedKeypoint.ordinal)
        )
    )


# --------------------------------------------------------------------------- raw annotations


def raw_keypoints(session: Session, model: Model, annotator: Annotator) -> tuple[int, list[RawAnnotation]]:
    """The annotator's current revision for the model (0 when never saved) and its keypoints."""
    revision = session.scalar(
        select(AnnotationRevision.revision).where(
            AnnotationRevision.model_id == model.id, AnnotationRevision.annotator_id == annotator.id
        )
    )
    rows = session.scalars(
        select(RawAnnotation)
        .where(RawAnnotation.model_id == model.id, RawAnnotation.annotator_id == annotator.id)
        .order_by(RawAnnotation.kp_index)
    )
    return revision or 0, list(rows)


def _bump_revision(session: Session, model: Model, annotator: Annotator) -> int:
    """Insert-or-increment the set's revision row and return the new number.

    One statement on both databases (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``);
    on PostgreSQL it also locks the row until commit, which queues concurrent saves of the
    same set; on SQLite ``BEGIN IMMEDIATE`` already serialises writers.
    """
    dialect = session.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    stmt = upsert(AnnotationRevision).values(model_id=model.id, annotator_id=annotator.id, revision=1, updated_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[AnnotationRevision.model_id, AnnotationRevision.annotator_id],
        set_={"revision": AnnotationRevision.revision + 1, "updated_at": now},
    ).returning(AnnotationRevision.revision)
    return int(session.execute(stmt).scalar_one())


def save_raw_annotation(
    session: Session,
    model: Model,
    annotator: Annotator,
    clicks: Sequence[Click],
    *,
    base_revision: int | None = None,
) -> int:
    """Replace the annotator's keypoints on ``model`` with ``clicks``; return the new revision.

    The clicks' own ``model_id`` and ``annotator`` are not consulted (``model`` and
    ``annotator`` say whose set this is); a click's ``time`` (seconds since the epoch, as in
    an imported raw file) is kept as its creation time, else the time of the save.

    ``base_revision`` (the revision the client started from) turns a stale save into a
    :class:`RevisionConflict` instead of silently overwriting a newer one. The caller's
    transaction makes the whole replacement atomic.
    """
    if len(clicks) > MAX_KEYPOINTS:
        raise StoreError(f"at most {MAX_KEYPOINTS} keypoints per annotator per model; got {len(clicks)}")
    indices = [c.kp_index for c in clicks]
    if len(set(indices)) != len(indices):
        raise StoreError(f"keypoint indices must be unique; got {sorted(indices)}")
    revision = _bump_revision(session, model, annotator)
    if base_revision is not None and base_revision != revision - 1:
        raise RevisionConflict(revision - 1, base_revision)
    session.execute(
        delete(RawAnnotation).where(RawAnnotation.model_id == model.id, RawAnnotation.annotator_id == annotator.id)
    )
    now = utcnow()
    if clicks:  # one executemany INSERT, not ORM objects: a third of a save's CPU time otherwise
        session.execute(
            insert(RawAnnotation),
            [
                {
                    "model_id": model.id,
                    "annotator_id": annotator.id,
                    "kp_index": c.kp_index,
                    "x": c.xyz[0],
                    "y": c.xyz[1],
                    "z": c.xyz[2],
                    "face_index": c.face_index,
                    "u": None if c.face_uv is None else c.face_uv[0],
                    "v": None if c.face_uv is None else c.face_uv[1],
                    "w": None if c.face_uv is None else c.face_uv[2],
                    "point_index": c.point_index,
                    "created_at": now if c.time is None else datetime.fromtimestamp(c.time, UTC),
                }
                for c in clicks
            ],
        )
    return revision


def annotated_models(session: Session, annotator: Annotator) -> list[tuple[Model, int, list[RawAnnotation]]]:
    """Every model the annotator has saved, most recent first, with revision and keypoints."""
    revs = session.execute(
        select(Model, AnnotationRevision.revision)
        .join(AnnotationRevision, AnnotationRevision.model_id == Model.id)
        .where(AnnotationRevision.annotator_id == annotator.id)
        .order_by(AnnotationRevision.updated_at.desc(), Model.id)
    ).all()
    rows: dict[int, list[RawAnnotation]] = {}
    for r in session.scalars(
        select(RawAnnotation).where(RawAnnotation.annotator_id == annotator.id).order_by(RawAnnotation.kp_index)
    ):
        rows.setdefault(r.model_id, []).append(r)
    return [(m, rev, rows.get(m.id, [])) for m, rev in revs]


def next_model(session: Session, annotator: Annotator, category: Category | None = None) -> Model | None:
    """A model the annotator has not annotated, the one with fewest annotators first (ties: import order)."""
    n_done = (
        select(AnnotationRevision.model_id, func.count().label("n")).group_by(AnnotationRevision.model_id).subquery()
    )
    mine = select(AnnotationRevision.model_id).where(AnnotationRevision.annotator_id == annotator.id)
    query = (
        select(Model)
        .options(joinedload(Model.category))  # the route names the category: same query, not a second
        .outerjoin(n_done, n_done.c.model_id == Model.id)
        .where(Model.id.not_in(mine), (Model.mesh_path.is_not(None)) | (Model.pcd_path.is_not(None)))
        .order_by(func.coalesce(n_done.c.n, 0), Model.id)
        .limit(1)
    )
    if category is not None:
        query = query.where(Model.category_id == category.id)
    return session.scalar(query)


def progress(session: Session) -> list[dict]:
    """Per category: models, models annotated by at least one person, and saved keypoint sets."""
    sets = dict(
        session.execute(
            select(Model.category_id, func.count())
            .join(AnnotationRevision, AnnotationRevision.model_id == Model.id)
            .group_by(Model.category_id)
        ).all()
    )
    touched = dict(
        session.execute(
            select(Model.category_id, func.count(func.distinct(AnnotationRevision.model_id)))
            .join(AnnotationRevision, AnnotationRevision.model_id == Model.id)
            .group_by(Model.category_id)
        ).all()
    )
    totals = dict(session.execute(select(Model.category_id, func.count()).group_by(Model.category_id)).all())
    return [
        {
            "category": c.name,
            "synset": c.synset,
            "models": totals.get(c.id, 0),
            "models_annotated": touched.get(c.id, 0),
            "annotation_sets": sets.get(c.id, 0),
        }
        for c in session.scalars(select(Category).order_by(Category.name))
    ]
