"""Aggregation results in the store, and the human verification of them.

:func:`save_aggregation` writes one :class:`~kpengine.aggregate.pipeline.AggregationResult`
as aggregated keypoints with status ``pending`` (in the caller's transaction, so the switch
from the old proposal to the new one is atomic), plus the run's candidates with their t-SNE
coordinates and DBSCAN clusters. Earlier *pending* keypoints of the category are replaced;
keypoints a person has already decided on (``verified``, ``rejected``, ``unverified`` from
an import) are kept, because a re-run must never undo human work.

The verification actions (accept/reject a keypoint or a cluster, merge, split, name, add a
keypoint the crowd missed) each change only rows of one category and are meant to run in one
transaction each. A cluster
*is* a semantic id of the category: merging and splitting rewrite ``semantic_id`` of the
keypoints (and ``cluster`` of their candidates) so the official export picks them up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from kpengine.store.exchange import set_labels
from kpengine.store.repo import StoreError
from kpengine.store.schema import (
    AggregatedKeypoint,
    AggregationCandidate,
    AggregationRun,
    Category,
    Model,
    SemanticLabel,
    SymmetryGroup,
)

#: Statuses a person may set; "pending" puts a decision back.
DECISIONS = ("verified", "rejected", "pending")


def _category_keypoints(
    session: Session, category: Category, semantic_id: int | None = None
) -> list[AggregatedKeypoint]:
    """The category's aggregated keypoints (only those of ``semantic_id`` if given), in model order."""
    query = (
        select(AggregatedKeypoint)
        .join(Model, Model.id == AggregatedKeypoint.model_id)
        .where(Model.category_id == category.id)
    )
    if semantic_id is not None:
        query = query.where(AggregatedKeypoint.semantic_id == semantic_id)
    return list(session.scalars(query.order_by(AggregatedKeypoint.model_id, AggregatedKeypoint.ordinal)))


def save_aggregation(session: Session, category: Category, result: Any) -> AggregationRun:  # noqa: ANN401
    """Store ``result`` (an ``AggregationResult`` of ``category``) as pending keypoints.

    Pending keypoints of earlier runs and the earlier runs' candidates are deleted; the
    run's semantic ids are shifted above those of the kept keypoints (``report["id_offset"]``); the
    symmetry groups of the result are stored with their indexes remapped to the new
    keypoints' ordinals (appended after the kept ones, so kept groups stay valid).
    """
    models = {m.model_id: m for m in session.scalars(select(Model).where(Model.category_id == category.id))}
    unknown = [m for m in result.model_ids if m not in models]
    if unknown:
        raise StoreError(f"aggregated models not in the store's {category.name}: {unknown[:5]}")
    model_pks = [m.id for m in models.values()]
    session.execute(delete(AggregationRun).where(AggregationRun.category_id == category.id))
    pending = select(AggregatedKeypoint.id).where(
        AggregatedKeypoint.model_id.in_(model_pks), AggregatedKeypoint.status == "pending"
    )
    session.execute(delete(AggregatedKeypoint).where(AggregatedKeypoint.id.in_(pending.scalar_subquery())))
    session.flush()
    # drop symmetry groups that referred to a deleted keypoint
    left: dict[int, set[int]] = {}
    for model_pk, ordinal in session.execute(
        select(AggregatedKeypoint.model_id, AggregatedKeypoint.ordinal).where(
            AggregatedKeypoint.model_id.in_(model_pks)
        )
    ):
        left.setdefault(model_pk, set()).add(ordinal)
    for g in session.scalars(select(SymmetryGroup).where(SymmetryGroup.model_id.in_(model_pks))):
        if not set(g.kp_indexes) <= left.get(g.model_id, set()):
            session.delete(g)
    session.flush()

    # a run numbers its clusters from 0, unrelated to the ids people already verified: new
    # ids start above the kept ones so a proposal never silently joins a verified id (an
    # admin merges them on the page when they are the same keypoint)
    top = session.scalar(
        select(func.max(AggregatedKeypoint.semantic_id)).where(AggregatedKeypoint.model_id.in_(model_pks))
    )
    offset = 0 if top is None else int(top) + 1
    run = AggregationRun(category_id=category.id, report=_jsonable({**result.report, "id_offset": offset}))
    session.add(run)
    session.flush()
    kp_rows: dict[tuple[int, int], AggregatedKeypoint] = {}  # (model index, point index) -> row
    for i, mid in enumerate(result.model_ids):
        model = models[mid]
        start = max(left.get(model.id, {-1}), default=-1) + 1
        ann = result.annotations[i]
        pred = result.predictions[mid]
        for k, (kp, p) in enumerate(zip(ann.keypoints, pred.point_index)):
            row = AggregatedKeypoint(
                model_id=model.id,
                ordinal=start + k,
                semantic_id=kp.semantic_id + offset,
                x=kp.xyz[0],
                y=kp.xyz[1],
                z=kp.xyz[2],
                point_index=kp.point_index,
                status="pending",
                extra={},
            )
            session.add(row)
            kp_rows[(i, int(p))] = row
        g0 = session.scalar(select(func.max(SymmetryGroup.ordinal)).where(SymmetryGroup.model_id == model.id))
        n_kept = {"reflection": -1 if g0 is None else g0, "rotation": -1 if g0 is None else g0}
        for kind, groups in (("reflection", ann.symmetries.reflection), ("rotation", ann.symmetries.rotation)):
            for g in groups:
                n_kept[kind] += 1
                circle = None
                if kind == "rotation" and g.circle is not None:
                    c = g.circle
                    circle = {"center": list(c.center), "radius": c.radius, "normal": list(c.normal)}
                session.add(
                    SymmetryGroup(
                        model_id=model.id,
                        kind=kind,
                        ordinal=n_kept[kind],
                        kp_indexes=[start + j for j in g.kp_indexes],
                        is_circle=bool(getattr(g, "is_circle", False)),
                        circle=circle,
                        extra={},
                    )
                )
    session.flush()
    cl = result.clustering
    session.add_all(
        AggregationCandidate(
            run_id=run.id,
            model_id=models[result.model_ids[int(m)]].id,
            point_index=int(p),
            error=float(e),
            tsne_x=float(xy[0]),
            tsne_y=float(xy[1]),
            cluster=int(lab) + offset if lab >= 0 else -1,
            keypoint_id=kp_rows[(int(m), int(p))].id if keep and (int(m), int(p)) in kp_rows else None,
        )
        for m, p, e, xy, lab, keep in zip(
            result.cand_model, result.cand_point, result.cand_error, cl.xy, cl.labels, cl.keep
        )
    )
    session.flush()
    return run


def _jsonable(obj: Any) -> Any:  # noqa: ANN401
    """The report as plain JSON values (numpy scalars and tuples converted)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------- reading


def verification_state(session: Session, category: Category) -> dict[str, Any]:
    """Everything the verification page draws: clusters, candidates, keypoints, labels, and the
    symmetry groups (reflection, rotation; the aggregation's or the import's) by keypoint id."""
    labels = {
        lab.semantic_id: lab.name
        for lab in session.scalars(select(SemanticLabel).where(SemanticLabel.category_id == category.id))
    }
    model_ids = dict(session.execute(select(Model.id, Model.model_id).where(Model.category_id == category.id)).all())
    kps = _category_keypoints(session, category)
    run = session.scalar(
        select(AggregationRun).where(AggregationRun.category_id == category.id).order_by(AggregationRun.id.desc())
    )
    candidates: list[AggregationCandidate] = []
    if run is not None:
        query = select(AggregationCandidate).where(AggregationCandidate.run_id == run.id)
        candidates = list(session.scalars(query.order_by(AggregationCandidate.id)))
    clusters: dict[int, dict[str, Any]] = {}
    for k in kps:
        c = clusters.setdefault(
            k.semantic_id,
            {"id": k.semantic_id, "name": labels.get(k.semantic_id), "pending": 0, "verified": 0, "rejected": 0},
        )
        c[k.status if k.status in ("pending", "verified", "rejected") else "verified"] += 1
    # symmetry groups index ordinals (which may have gaps after a re-run): resolved to keypoint ids
    by_ordinal = {(k.model_id, k.ordinal): k.id for k in kps}
    groups = session.scalars(
        select(SymmetryGroup)
        .where(SymmetryGroup.model_id.in_(list(model_ids)))
        .order_by(SymmetryGroup.model_id, SymmetryGroup.kind, SymmetryGroup.ordinal)
    )
    symmetries = [
        {
            "model_id": model_ids[g.model_id],
            "kind": g.kind,
            "keypoint_ids": [by_ordinal[(g.model_id, i)] for i in g.kp_indexes if (g.model_id, i) in by_ordinal],
            "is_circle": bool(g.is_circle),
            "circle": g.circle,
        }
        for g in groups
    ]
    return {
        "category": category.name,
        "synset": category.synset,
        "symmetries": symmetries,
        "run": None
        if run is None
        else {
            "id": run.id,
            "created_at": run.created_at.isoformat(),
            "clusters": len(run.report.get("clusters", {})),
            "noise_candidates": run.report.get("noise_candidates"),
            "candidates": run.report.get("candidates"),
        },
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "clusters": [clusters[k] for k in sorted(clusters)],
        "candidates": [
            {
                "id": c.id,
                "model_id": model_ids[c.model_id],
                "xy": [c.tsne_x, c.tsne_y],
                "cluster": c.cluster,
                "error": c.error,
                "keypoint_id": c.keypoint_id,
            }
            for c in candidates
        ],
        "keypoints": [
            {
                "id": k.id,
                "model_id": model_ids[k.model_id],
                "ordinal": k.ordinal,
                "semantic_id": k.semantic_id,
                "xyz": None if k.x is None else [k.x, k.y, k.z],
                "status": k.status,
            }
            for k in kps
        ],
    }


# --------------------------------------------------------------------------- actions


def _check_status(status: str) -> None:
    if status not in DECISIONS:
        raise StoreError(f"status must be one of {', '.join(DECISIONS)}, got {status!r}")


def _keypoint_in(session: Session, category: Category, keypoint_id: int) -> AggregatedKeypoint:
    kp = session.get(AggregatedKeypoint, keypoint_id)
    if kp is None or session.get(Model, kp.model_id).category_id != category.id:  # type: ignore[union-attr]
        raise LookupError(f"no keypoint {keypoint_id} in {category.name}")
    return kp


def _cluster_keypoints(session: Session, category: Category, semantic_id: int) -> list[AggregatedKeypoint]:
    rows = _category_keypoints(session, category, semantic_id)
    if not rows:
        raise LookupError(f"no cluster (semantic id) {semantic_id} in {category.name}")
    return rows


def _live_twin(session: Session, kp: AggregatedKeypoint) -> AggregatedKeypoint | None:
    """Another non-rejected keypoint of ``kp``'s model with ``kp``'s semantic id, if any.

    A semantic id names at most one point per model, so a rejected keypoint may not come
    back while such a twin (typically an expert's replacement) lives."""
    return session.scalar(
        select(AggregatedKeypoint).where(
            AggregatedKeypoint.model_id == kp.model_id,
            AggregatedKeypoint.semantic_id == kp.semantic_id,
            AggregatedKeypoint.id != kp.id,
            AggregatedKeypoint.status != "rejected",
        )
    )


def set_keypoint_status(session: Session, category: Category, keypoint_id: int, status: str) -> AggregatedKeypoint:
    """Accept (``verified``), reject or reset one keypoint.

    Taking a rejected keypoint back (to ``verified`` or ``pending``) is refused while its model
    has another live keypoint of the same id: reject that one first."""
    _check_status(status)
    kp = _keypoint_in(session, category, keypoint_id)
    if kp.status == "rejected" and status != "rejected":
        twin = _live_twin(session, kp)
        if twin is not None:
            raise StoreError(
                f"model's semantic id {kp.semantic_id} is already given by keypoint {twin.id} ({twin.status}); "
                f"reject it first to take keypoint {kp.id} back"
            )
    kp.status = status
    session.flush()
    return kp


def set_cluster_status(session: Session, category: Category, semantic_id: int, status: str) -> int:
    """Accept, reject or reset the keypoints of a semantic id; returns how many changed.

    "Accept all" accepts the undecided keypoints (pending, or unverified from an import):
    a keypoint a person rejected stays rejected, because accepting it again would undo that
    decision and, where an expert added a replacement, give the model two keypoints of one
    id. A reset ("pending") puts back rejected keypoints only where the model has no other
    live keypoint of the id. Rejecting rejects every keypoint of the id."""
    _check_status(status)
    rows = _cluster_keypoints(session, category, semantic_id)
    changed = 0
    for k in rows:
        if k.status == status:
            continue
        if k.status == "rejected" and (status == "verified" or _live_twin(session, k) is not None):
            continue
        k.status = status
        changed += 1
        session.flush()  # the next row's twin check sees this one
    return changed


def _candidate_error(session: Session, ids: Sequence[int]) -> dict[int, float]:
    if not ids:
        return {}
    return dict(
        session.execute(
            select(AggregationCandidate.keypoint_id, AggregationCandidate.error).where(
                AggregationCandidate.keypoint_id.in_(ids)
            )
        ).all()
    )


def merge_clusters(session: Session, category: Category, source: int, target: int) -> dict[str, int]:
    """Give the keypoints of semantic id ``source`` the id ``target``.

    A model that then has two keypoints of ``target`` keeps the one with the lower
    fidelity error (an imported keypoint, which has none, counts as best) and the other
    is rejected, because a semantic id names at most one point per model.
    """
    if source == target:
        raise StoreError("merging a cluster into itself changes nothing")
    moved = _cluster_keypoints(session, category, source)
    into = _cluster_keypoints(session, category, target)
    errors = _candidate_error(session, [k.id for k in moved + into])
    for k in moved:
        k.semantic_id = target
    session.execute(
        AggregationCandidate.__table__.update()
        .where(AggregationCandidate.cluster == source)
        .where(AggregationCandidate.model_id.in_(select(Model.id).where(Model.category_id == category.id)))
        .values(cluster=target)
    )
    rejected = 0
    by_model: dict[int, list[AggregatedKeypoint]] = {}
    for k in moved + into:
        if k.status != "rejected":
            by_model.setdefault(k.model_id, []).append(k)
    for rows in by_model.values():
        rows.sort(key=lambda k: errors.get(k.id, float("-inf")))
        for k in rows[1:]:
            k.status = "rejected"
            rejected += 1
    label = session.get(SemanticLabel, (category.id, source))
    if label is not None and session.get(SemanticLabel, (category.id, target)) is None:
        set_labels(session, category, {target: label.name})
    if label is not None:
        session.delete(label)
    session.flush()
    return {"moved": len(moved), "rejected_duplicates": rejected}


def split_cluster(
    session: Session, category: Category, semantic_id: int, keypoint_ids: Sequence[int] | None = None
) -> dict[str, int]:
    """Move part of a cluster to a new semantic id (one above the category's largest).

    ``keypoint_ids`` chooses the part; without it the cluster is cut in two by 2-means on
    the t-SNE coordinates of its keypoints' candidates (the aggregation's own deterministic
    :func:`~kpengine.aggregate.cluster.two_means`), the split a person would draw on the scatter plot.
    """
    rows = _cluster_keypoints(session, category, semantic_id)
    if keypoint_ids is None:
        from kpengine.aggregate.cluster import two_means  # scikit-learn: not at server start-up

        cands = {
            c.keypoint_id: (c.tsne_x, c.tsne_y)
            for c in session.scalars(
                select(AggregationCandidate).where(AggregationCandidate.keypoint_id.in_([k.id for k in rows]))
            )
        }
        ids = [k.id for k in rows if k.id in cands]
        if len(ids) < 2:
            raise StoreError(f"cluster {semantic_id} has fewer than 2 keypoints with t-SNE positions; choose them")
        xy = np.array([cands[i] for i in ids], dtype=np.float64)
        part = two_means(xy)
        keypoint_ids = [i for i, p in zip(ids, part) if p]
    chosen = set(keypoint_ids)
    if not chosen or not chosen < {k.id for k in rows}:
        raise StoreError(f"choose some but not all keypoints of cluster {semantic_id} to split off")
    new_id = int(session.scalar(select(func.max(AggregatedKeypoint.semantic_id)).join(Model).where(
        Model.category_id == category.id)) or 0) + 1  # fmt: skip
    for k in rows:
        if k.id in chosen:
            k.semantic_id = new_id
    session.execute(
        AggregationCandidate.__table__.update()
        .where(AggregationCandidate.keypoint_id.in_(chosen))
        .values(cluster=new_id)
    )
    session.flush()
    return {"new_id": new_id, "moved": len(chosen), "kept": len(rows) - len(chosen)}


def add_keypoint(  # noqa: PLR0913 - one action, its whole input
    session: Session,
    category: Category,
    model_id: str,
    semantic_id: int,
    click: Any,  # noqa: ANN401 - kpengine.io.clicks.Click (io is below store; kept loose like save_aggregation)
    added_by: str,
) -> AggregatedKeypoint:
    """Add a keypoint the crowd missed: an expert's click (``click``, a :class:`kpengine.io.clicks.Click`
    already put on the surface by the server) given an existing semantic id.

    As the paper's experts restore omitted keypoints, the new keypoint is ``verified`` at once.
    Refused (:class:`StoreError`): an id the category does not know (no keypoint has it and it
    has no name), an id the model already has (a non-rejected keypoint; a semantic id names at
    most one point per model). Its ordinal follows the model's last, so symmetry groups, which
    index ordinals, stay valid.
    """
    model = session.scalar(select(Model).where(Model.category_id == category.id, Model.model_id == model_id))
    if model is None:
        raise LookupError(f"no model {model_id!r} in {category.name}")
    known = {k.semantic_id for k in _category_keypoints(session, category)} | set(
        session.scalars(select(SemanticLabel.semantic_id).where(SemanticLabel.category_id == category.id))
    )
    if semantic_id not in known:
        raise StoreError(f"semantic id {semantic_id} is not known in {category.name}: choose one of {sorted(known)}")
    rows = list(session.scalars(select(AggregatedKeypoint).where(AggregatedKeypoint.model_id == model.id)))
    taken = [k for k in rows if k.semantic_id == semantic_id and k.status != "rejected"]
    if taken:
        raise StoreError(
            f"model {model_id} already has semantic id {semantic_id} (keypoint {taken[0].id}, {taken[0].status}); "
            "reject it first to move it"
        )
    x, y, z = (float(v) for v in click.xyz)
    row = AggregatedKeypoint(
        model_id=model.id,
        ordinal=max((k.ordinal for k in rows), default=-1) + 1,
        semantic_id=semantic_id,
        x=x,
        y=y,
        z=z,
        point_index=click.point_index,
        face_index=click.face_index,
        face_uv=None if click.face_uv is None else [float(v) for v in click.face_uv],
        status="verified",
        extra={"added_by": added_by},
    )
    session.add(row)
    session.flush()
    return row


def name_semantic_id(session: Session, category: Category, semantic_id: int, name: str) -> None:
    """Name a semantic id (shown in the explorer; ``semantic_labels``)."""
    name = name.strip()
    if not name or len(name) > 256:
        raise StoreError("a semantic name needs 1 to 256 characters")
    set_labels(session, category, {semantic_id: name})


__all__ = [
    "DECISIONS",
    "add_keypoint",
    "merge_clusters",
    "name_semantic_id",
    "save_aggregation",
    "set_cluster_status",
    "set_keypoint_status",
    "split_cluster",
    "verification_state",
]
