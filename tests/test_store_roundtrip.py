"""The store's schema, migrations, import/export round trip and one-transaction saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.io.annotations import load_annotations, model_to_json
from kpengine.io.clicks import Click
from kpengine.store import open_store
from kpengine.store.exchange import export_dataset, export_raw, import_dataset
from kpengine.store.repo import (
    RevisionConflict,
    StoreError,
    annotated_models,
    create_annotator,
    get_model,
    list_categories,
    list_models,
    next_model,
    progress,
    raw_keypoints,
    save_raw_annotation,
)
from kpengine.store.schema import Base, RawAnnotation
from test_store_support import db_url, postgres_server  # noqa: F401 - fixtures


def _as_json(path: Path) -> list[dict]:
    models, problems = load_annotations(path)
    assert not problems
    return [model_to_json(m) for m in models]


def test_migrations_match_the_models(db_url: str) -> None:  # noqa: F811
    """The shipped Alembic revision creates exactly the tables the ORM declares."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = open_store(db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    assert diff == []
    assert {"raw_annotations", "aggregated_keypoints", "semantic_labels", "symmetry_groups"} <= tables
    open_store(db_url).dispose()  # upgrading again is a no-op
    store.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.dispose()


def test_sample_round_trip_and_queries(db_url: str, sample_root: Path, tmp_path: Path) -> None:  # noqa: F811
    store = open_store(db_url)
    with store.session() as s:
        summary = import_dataset(s, sample_root, labels=KEYPOINT_NAMES)
    assert summary.models == {"chair": 12, "mug": 12, "table": 12}
    with store.session() as s:
        export_dataset(s, tmp_path / "out")
        cats = {c["name"]: c for c in list_categories(s)}
        assert cats["chair"]["labels"]["0"] == KEYPOINT_NAMES["chair"][0]
        chair = s.scalar(select(func.count()).select_from(RawAnnotation))
        assert chair == 0
    for cat in ("chair", "table", "mug"):
        assert _as_json(tmp_path / "out" / "annotations" / f"{cat}.json") == _as_json(
            sample_root / "annotations" / f"{cat}.json"
        )
    for split in ("train", "val", "test"):
        original = sorted((sample_root / "splits" / f"{split}.txt").read_text().split())
        assert sorted((tmp_path / "out" / "splits" / f"{split}.txt").read_text().split()) == original
    store.dispose()


def test_save_is_atomic_and_revisioned(db_url: str, sample_root: Path, tmp_path: Path) -> None:  # noqa: F811
    store = open_store(db_url)
    with store.session() as s:
        import_dataset(s, sample_root, ["mug"])
        alice, _ = create_annotator(s, "alice")
        bob, _ = create_annotator(s, "bob")
    with store.session() as s:
        model = next_model(s, alice)
        assert model is not None
        mid = model.model_id
        rev = save_raw_annotation(s, model, alice, [Click(mid, "alice", 0, (0.1, 0.2, 0.3), 7, 5, (0.2, 0.3, 0.5))])
        assert rev == 1
    with store.session() as s:  # bob's save never touches alice's set
        model = get_model(s, "mug", mid)
        save_raw_annotation(s, model, bob, [Click(mid, "bob", 3, (0.0, 0.0, 0.0))])
        assert save_raw_annotation(s, model, alice, [Click(mid, "alice", 1, (1.0, 2.0, 3.0))], base_revision=1) == 2
    with pytest.raises(RevisionConflict), store.session() as s:  # a stale base revision is refused...
        save_raw_annotation(
            s, get_model(s, "mug", mid), alice, [Click(mid, "alice", 9, (9.0, 9.0, 9.0))], base_revision=1
        )
    with pytest.raises(StoreError, match="at most 24"), store.session() as s:
        save_raw_annotation(
            s, get_model(s, "mug", mid), alice, [Click(mid, "alice", i, (0.0, 0.0, 0.0)) for i in range(25)]
        )
    with store.session() as s:  # ...and rolled back whole
        model = get_model(s, "mug", mid)
        rev, rows = raw_keypoints(s, model, alice)
        assert rev == 2 and [(r.kp_index, r.x, r.y, r.z) for r in rows] == [(1, 1.0, 2.0, 3.0)]
        assert [r.kp_index for r in raw_keypoints(s, model, bob)[1]] == [3]
        assert next_model(s, alice).model_id != mid  # fewest annotations first, never one already done
        assert [m.model_id for m, _, _ in annotated_models(s, alice)] == [mid]
        assert next(p for p in progress(s) if p["category"] == "mug")["annotation_sets"] == 2
        assert len(list_models(s, model.category, "train")) < 12
    with store.session() as s:
        assert export_raw(s, tmp_path / "raw.json") == 2
    raw = json.loads((tmp_path / "raw.json").read_text())
    assert {r["annotator"] for r in raw} == {"alice", "bob"}
    assert raw[0]["xyz"] in ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])  # one flat click per object
    store.dispose()


@pytest.mark.realdata
def test_keypointnet_bathtub_bed_round_trip(keypointnet: Path, tmp_path: Path) -> None:
    """Real KeypointNet files go in and come out as the same JSON values."""
    store = open_store(f"sqlite:///{tmp_path / 'kpn.db'}")
    with store.session() as s:
        summary = import_dataset(s, keypointnet, ["bathtub", "bed"])
    assert summary.models == {"bathtub": 492, "bed": 146}
    with store.session() as s:
        export_dataset(s, tmp_path / "out")
    for cat in ("bathtub", "bed"):
        exported = tmp_path / "out" / "annotations" / f"{cat}.json"
        assert _as_json(exported) == _as_json(keypointnet / "annotations" / f"{cat}.json")
        assert json.loads(exported.read_text()) == json.loads((keypointnet / "annotations" / f"{cat}.json").read_text())
    store.dispose()


@pytest.mark.realdata
def test_keypointnet_round_trip_on_postgres(keypointnet: Path, tmp_path: Path, postgres_server) -> None:  # noqa: F811, ANN001
    store = open_store(postgres_server.new_database())
    with store.session() as s:
        import_dataset(s, keypointnet, ["bed"])
    with store.session() as s:
        export_dataset(s, tmp_path / "out")
    assert _as_json(tmp_path / "out" / "annotations" / "bed.json") == _as_json(keypointnet / "annotations" / "bed.json")
    store.dispose()
