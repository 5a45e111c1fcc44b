"""Import a KeypointNet-layout dataset into the store and export it back.

Import reads annotations with :func:`kpengine.io.annotations.load_annotations` (so the same
parser and the same checks as everywhere else), splits from ``splits/*.txt`` and locates
geometry with :mod:`kpengine.io.layout`; only server-side paths found this way are stored.
Export rebuilds :class:`~kpengine.io.annotations.ModelAnnotation` objects and writes them
with :func:`~kpengine.io.annotations.save_annotations`, so a dataset that went in comes out
with the same JSON values (aggregated keypoints, symmetries and unknown fields).
Re-importing a category replaces the aggregated keypoints of the models it lists and
never touches raw annotations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kpengine.categories import NAMES, resolve_category
from kpengine.errors import DataError, Problem
from kpengine.io import layout
from kpengine.io.annotations import (
    Circle,
    Keypoint,
    ModelAnnotation,
    ReflectionGroup,
    RotationGroup,
    Symmetries,
    load_annotations,
    model_to_json,
    save_annotations,
)
from kpengine.io.clicks import Click, clicks_to_json, save_clicks
from kpengine.io.splits import SPLITS, save_split, split_index
from kpengine.store.repo import StoreError, create_annotator, save_raw_annotation
from kpengine.store.schema import (
    AggregatedKeypoint,
    Annotator,
    Category,
    Model,
    RawAnnotation,
    SemanticLabel,
    SymmetryGroup,
)


@dataclass
class ImportSummary:
    """What an import did, per category, and the models it could not use."""

    models: dict[str, int] = field(default_factory=dict)
    keypoints: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        parts = ", ".join(f"{c} {n} models / {self.keypoints.get(c, 0)} keypoints" for c, n in self.models.items())
        return f"imported {parts or 'nothing'}" + (f"; {len(self.problems)} problems" if self.problems else "")


def _file_hash(path: Path | None) -> str | None:
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_category(session: Session, name: str, synset: str) -> Category:
    cat = session.scalar(select(Category).where(Category.synset == synset))
    if cat is None:
        cat = Category(name=name, synset=synset)
        session.add(cat)
        session.flush()
    return cat


def set_labels(session: Session, category: Category, labels: dict[int, str]) -> None:
    """Name semantic ids of a category (replacing earlier names of the same ids)."""
    for sid, name in labels.items():
        label = session.get(SemanticLabel, (category.id, sid))
        if label is None:
            session.add(SemanticLabel(category_id=category.id, semantic_id=sid, name=name))
        else:
            label.name = name
    session.flush()


def _keypoint_row(model_pk: int, ordinal: int, kp: Keypoint) -> AggregatedKeypoint:
    x, y, z = kp.xyz if kp.xyz is not None else (None, None, None)
    return AggregatedKeypoint(
        model_id=model_pk,
        ordinal=ordinal,
        semantic_id=kp.semantic_id,
        x=x,
        y=y,
        z=z,
        rgb=None if kp.rgb is None else list(kp.rgb),
        point_index=kp.point_index,
        face_index=kp.face_index,
        face_uv=None if kp.face_uv is None else list(kp.face_uv),
        status="verified",
        extra=kp.extra,
    )


def _symmetry_rows(model_pk: int, sym: Symmetries) -> list[SymmetryGroup]:
    rows = [
        SymmetryGroup(model_id=model_pk, kind="reflection", ordinal=i, kp_indexes=g.kp_indexes, extra=g.extra)
        for i, g in enumerate(sym.reflection)
    ]
    for i, g in enumerate(sym.rotation):
        circle = None
        if g.circle is not None:
            circle = {"center": list(g.circle.center), "radius": g.circle.radius, "normal": list(g.circle.normal)}
        rows.append(
            SymmetryGroup(
                model_id=model_pk,
                kind="rotation",
                ordinal=i,
                kp_indexes=g.kp_indexes,
                is_circle=g.is_circle,
                circle=circle,
                extra=g.extra,
            )
        )
    return rows


def store_model_annotations(
    session: Session,
    category: Category,
    annotations: Iterable[ModelAnnotation],
    *,
    root: Path | None = None,
    splits: dict[str, str] | None = None,
    problems: list[Problem] | None = None,
) -> tuple[int, int]:
    """Upsert models and replace their aggregated keypoints and symmetry groups.

    ``root`` (a server-side dataset root) locates geometry; without it (an upload through
    the API) existing geometry paths are kept. Geometry found under ``root`` is read once
    here, and a file that cannot be read (a truncated GLB, a malformed PCD) is appended to
    ``problems`` with the reason; its path is still stored, so the API can tell annotators
    why the model cannot be shown, and a repaired file works without a new import.
    Returns (models, keypoints) written.
    """
    n_models = n_kp = 0
    existing = {m.model_id: m for m in session.scalars(select(Model).where(Model.category_id == category.id))}
    for ann in annotations:
        model = existing.get(ann.model_id)
        if model is None:
            model = Model(category_id=category.id, model_id=ann.model_id)
            session.add(model)
            existing[ann.model_id] = model
        if root is not None:
            mesh = layout.mesh_path(root, category.synset, ann.model_id)
            pcd = layout.pcd_path(root, category.synset, ann.model_id)
            pcd = pcd if pcd.is_file() else None
            model.mesh_path = None if mesh is None else str(mesh.resolve())
            model.pcd_path = None if pcd is None else str(pcd.resolve())
            model.content_hash = _file_hash(mesh or pcd)
            if problems is not None:
                problems += _geometry_problems(ann.model_id, mesh, pcd)
        if splits is not None:
            model.split = splits.get(ann.model_id, model.split)
        model.extra = ann.extra
        model.symmetries_extra = ann.symmetries.extra
        session.flush()
        session.execute(delete(AggregatedKeypoint).where(AggregatedKeypoint.model_id == model.id))
        session.execute(delete(SymmetryGroup).where(SymmetryGroup.model_id == model.id))
        session.add_all(_keypoint_row(model.id, i, kp) for i, kp in enumerate(ann.keypoints))
        session.add_all(_symmetry_rows(model.id, ann.symmetries))
        n_models += 1
        n_kp += len(ann.keypoints)
    session.flush()
    return n_models, n_kp


def _geometry_problems(model_id: str, mesh: Path | None, pcd: Path | None) -> list[Problem]:
    """Read the model's geometry files; one :class:`Problem` per file that cannot be used."""
    from kpengine.io.mesh import load_mesh
    from kpengine.io.pcd import load_pcd

    out = []
    for path, load in ((mesh, load_mesh), (pcd, load_pcd)):
        if path is None:
            continue
        try:
            load(path)
        except DataError as exc:
            out.append(Problem(model_id, exc.reason, str(path)))
        except OSError as exc:
            out.append(Problem(model_id, f"cannot read: {exc.strerror or exc}", str(path)))
    return out


def _category_names(root: Path) -> list[str]:
    """Categories with an annotation file under ``root`` (``all.json`` expands to its classes)."""
    folder = root / "annotations"
    if not folder.is_dir():
        raise DataError("no annotations/ folder", path=root)
    names = sorted(p.stem for p in folder.glob("*.json") if p.stem != "all")
    if not names and (folder / "all.json").is_file():
        models, _ = load_annotations(folder / "all.json")
        names = sorted({NAMES.get(m.class_id, m.class_id) for m in models})
    return names


def import_dataset(
    session: Session,
    root: str | Path,
    categories: Sequence[str] | None = None,
    *,
    labels: dict[str, dict[int, str]] | None = None,
) -> ImportSummary:
    """Import categories (default: all with an annotation file) of a KeypointNet-layout root.

    ``labels`` maps a category name to names of its semantic ids; kpengine's sample data
    ships its own (:data:`kpengine.data.sample.KEYPOINT_NAMES`) and they are used for it.
    """
    root = Path(root).resolve()
    summary = ImportSummary()
    split_of = split_index(root)
    for name in categories or _category_names(root):
        cat_info = resolve_category(name)
        path = layout.annotation_path(root, cat_info.name)
        if path is None:
            raise DataError(f"no annotations for {cat_info.name}", path=root / "annotations")
        models, problems = load_annotations(path)
        summary.problems += problems
        models = [m for m in models if m.class_id == cat_info.synset]
        category = ensure_category(session, cat_info.name, cat_info.synset)
        splits = {mid: s for (syn, mid), s in split_of.items() if syn == cat_info.synset}
        n_models, n_kp = store_model_annotations(
            session, category, models, root=root, splits=splits, problems=summary.problems
        )
        if labels and cat_info.name in labels:
            set_labels(session, category, labels[cat_info.name])
        summary.models[cat_info.name] = n_models
        summary.keypoints[cat_info.name] = n_kp
    return summary


# --------------------------------------------------------------------------- export


#: Statuses that go into the official export: imported keypoints ("verified"/"unverified")
#: and human-accepted ones. "pending" (an aggregation proposal nobody has looked at) and
#: "rejected" stay in the store only.
EXPORTED = ("verified", "unverified")


def _model_annotation(
    model: Model,
    synset: str,
    kps: list[AggregatedKeypoint],
    groups: list[SymmetryGroup],
    left_out: frozenset[int] = frozenset(),
):
    # symmetry groups index the model's keypoint list by ordinal; keypoints left out of the
    # export (ordinals in ``left_out``) shift the list, so indexes are remapped and groups that
    # lose a member are dropped; an index naming no keypoint at all is kept as it was imported
    position = {k.ordinal: i for i, k in enumerate(kps)}
    keypoints = [
        Keypoint(
            xyz=None if k.x is None else (k.x, k.y, k.z),  # type: ignore[arg-type]
            semantic_id=k.semantic_id,
            rgb=None if k.rgb is None else tuple(k.rgb),  # type: ignore[arg-type]
            point_index=k.point_index,
            face_index=k.face_index,
            face_uv=None if k.face_uv is None else tuple(k.face_uv),  # type: ignore[arg-type]
            extra=k.extra or {},
        )
        for k in kps
    ]
    sym = Symmetries(extra=model.symmetries_extra or {})
    for g in groups:
        if any(i in left_out for i in g.kp_indexes):
            continue
        indexes = [position.get(i, i) for i in g.kp_indexes]
        if g.kind == "reflection":
            sym.reflection.append(ReflectionGroup(indexes, g.extra or {}))
        else:
            circle = None
            if g.circle is not None:
                c = g.circle
                circle = Circle(tuple(c["center"]), c["radius"], tuple(c["normal"]))  # type: ignore[arg-type]
            sym.rotation.append(RotationGroup(indexes, g.is_circle, circle, g.extra or {}))
    return ModelAnnotation(synset, model.model_id, keypoints, sym, model.extra or {})


def category_annotations(session: Session, category: Category) -> list[ModelAnnotation]:
    """The category's aggregated keypoints as official-format objects, in import order.

    Only keypoints whose status is in :data:`EXPORTED` are written (no pending proposals,
    no rejected keypoints)."""
    models = list(session.scalars(select(Model).where(Model.category_id == category.id).order_by(Model.id)))
    ids = [m.id for m in models]
    kps: dict[int, list[AggregatedKeypoint]] = {i: [] for i in ids}
    left_out: dict[int, set[int]] = {i: set() for i in ids}
    for k in session.scalars(
        select(AggregatedKeypoint)
        .join(Model, Model.id == AggregatedKeypoint.model_id)
        .where(Model.category_id == category.id)
        .order_by(AggregatedKeypoint.model_id, AggregatedKeypoint.ordinal)
    ):
        if k.status in EXPORTED:
            kps[k.model_id].append(k)
        else:
            left_out[k.model_id].add(k.ordinal)
    groups: dict[int, list[SymmetryGroup]] = {i: [] for i in ids}
    for g in session.scalars(
        select(SymmetryGroup)
        .join(Model, Model.id == SymmetryGroup.model_id)
        .where(Model.category_id == category.id)
        .order_by(SymmetryGroup.model_id, SymmetryGroup.kind, SymmetryGroup.ordinal)
    ):
        groups[g.model_id].append(g)
    return [_model_annotation(m, category.synset, kps[m.id], groups[m.id], frozenset(left_out[m.id])) for m in models]


def export_dataset(session: Session, out: str | Path, categories: Sequence[str] | None = None) -> dict[str, int]:
    """Write ``OUT/annotations/<category>.json`` and ``OUT/splits/*.txt`` in the official layout."""
    out = Path(out)
    written: dict[str, int] = {}
    split_entries: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    query = select(Category).order_by(Category.name)
    for category in session.scalars(query):
        if categories and category.name not in categories and category.synset not in categories:
            continue
        anns = category_annotations(session, category)
        save_annotations(out / "annotations" / f"{category.name}.json", anns)
        written[category.name] = len(anns)
        for m in session.scalars(select(Model).where(Model.category_id == category.id).order_by(Model.id)):
            if m.split in split_entries:
                split_entries[m.split].append((category.synset, m.model_id))
    if any(split_entries.values()):
        for split, entries in split_entries.items():
            save_split(out / "splits" / f"{split}.txt", entries)
    return written


def raw_clicks(session: Session, category: str | None = None) -> list[Click]:
    """Every saved raw click (optionally of one category), by category, model, annotator, own index.

    The one query behind ``db export-raw``, ``GET /api/admin/raw`` and ``aggregate --db``, so
    what an admin downloads is exactly what gets aggregated. ``time`` is the click's save time.
    """
    query = (
        select(RawAnnotation, Model, Category, Annotator)
        .join(Model, Model.id == RawAnnotation.model_id)
        .join(Category, Category.id == Model.category_id)
        .join(Annotator, Annotator.id == RawAnnotation.annotator_id)
        .order_by(Category.name, Model.id, Annotator.name, RawAnnotation.kp_index)
    )
    if category:
        query = query.where((Category.name == category) | (Category.synset == category))
    clicks = []
    for raw, model, cat, annotator in session.execute(query):
        created = raw.created_at if raw.created_at.tzinfo else raw.created_at.replace(tzinfo=UTC)  # SQLite: naive UTC
        clicks.append(
            Click(
                model_id=model.model_id,
                annotator=annotator.name,
                kp_index=raw.kp_index,
                xyz=(raw.x, raw.y, raw.z),
                point_index=raw.point_index,
                face_index=raw.face_index,
                face_uv=None if raw.face_index is None else (raw.u, raw.v, raw.w),  # type: ignore[arg-type]
                time=created.timestamp(),
                class_id=cat.synset,
            )
        )
    return clicks


def raw_annotations_json(session: Session, category: str | None = None) -> list[dict[str, Any]]:
    """:func:`raw_clicks` as JSON objects of the raw-click format (:mod:`kpengine.io.clicks`)."""
    return clicks_to_json(raw_clicks(session, category))


def export_raw(session: Session, path: str | Path, category: str | None = None) -> int:
    """Write :func:`raw_clicks` to ``path`` atomically; returns the number of keypoint sets
    (distinct model and annotator pairs)."""
    clicks = raw_clicks(session, category)
    save_clicks(path, clicks)
    return len({(c.class_id, c.model_id, c.annotator) for c in clicks})


@dataclass
class RawImportSummary:
    """What ``db import-raw`` did: sets saved, clicks in them, annotators created, problems."""

    sets: int = 0
    clicks: int = 0
    new_annotators: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        made = f"; created annotators {', '.join(self.new_annotators)}" if self.new_annotators else ""
        bad = f"; {len(self.problems)} problems" if self.problems else ""
        return f"imported {self.sets} keypoint sets ({self.clicks} clicks){made}{bad}"


def import_raw(session: Session, clicks: Sequence[Click], category: str | None = None) -> RawImportSummary:
    """Save raw clicks (e.g. from :func:`kpengine.io.clicks.load_clicks`) into the store.

    Clicks are grouped by (model, annotator); each group replaces that annotator's set on the
    model (:func:`~kpengine.store.repo.save_raw_annotation`, revision bumped), so importing
    an export into the store it came from changes nothing but revisions. A click finds its
    model by ``class_id`` (or ``category``) and ``model_id``; without either, by ``model_id``
    alone when exactly one category has it. Annotators missing from the store are created
    (role annotator; no token is shown: invite them under another name to let them log in).
    Sets whose model is unknown or that break the store's rules (more than
    :data:`~kpengine.io.clicks.MAX_KEYPOINTS` points, repeated indices) are skipped with a
    ``Problem``; the rest are saved in the caller's transaction. Clicks are not re-projected
    onto the geometry: they were located when first saved.
    """
    summary = RawImportSummary()
    sets: dict[tuple[str | None, str, str], list[Click]] = {}
    for c in clicks:
        sets.setdefault((c.class_id or category, c.model_id, c.annotator), []).append(c)
    models: dict[tuple[str | None, str], Model | None] = {}
    people = {a.name: a for a in session.scalars(select(Annotator))}
    for (cat, model_id, name), group in sets.items():
        if (cat, model_id) not in models:
            query = select(Model).join(Category, Category.id == Model.category_id).where(Model.model_id == model_id)
            if cat:
                query = query.where((Category.name == cat) | (Category.synset == cat))
            found = list(session.scalars(query.limit(2)))
            models[(cat, model_id)] = found[0] if len(found) == 1 else None
            if len(found) != 1:
                where = f"category {cat}" if cat else "the store"
                reason = "is not in" if not found else "is ambiguous in (give class_id)"
                summary.problems.append(Problem(model_id, f"model {reason} {where}; its raw clicks are skipped"))
        model = models[(cat, model_id)]
        if model is None:
            continue
        try:
            with session.begin_nested():  # a refused set rolls back alone, with the annotator it created
                annotator = people.get(name) or create_annotator(session, name)[0]
                save_raw_annotation(session, model, annotator, group)
        except StoreError as exc:
            summary.problems.append(Problem(model_id, f"annotator {name}: set skipped: {exc}"))
            continue
        if name not in people:
            people[name] = annotator
            summary.new_annotators.append(name)
        summary.sets += 1
        summary.clicks += len(group)
    return summary


def official_json(session: Session, category: Category) -> str:
    """The category's annotation file as a JSON string (for the export endpoint)."""
    return json.dumps([model_to_json(m) for m in category_annotations(session, category)])


__all__ = [
    "ImportSummary",
    "RawImportSummary",
    "category_annotations",
    "ensure_category",
    "export_dataset",
    "export_raw",
    "import_dataset",
    "official_json",
    "import_raw",
    "raw_annotations_json",
    "raw_clicks",
    "set_labels",
    "store_model_annotations",
]
