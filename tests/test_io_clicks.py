"""The one raw-click format: file round trip, validation, the old nested export, and the
store -> ``db export-raw`` -> ``aggregate --raw`` -> ``db import-raw`` round trip on a store
filled by real API saves."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kpengine.aggregate.crowd import CrowdModel, simulate_crowd
from kpengine.cli.main import main
from kpengine.data import KeypointNetDataset
from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.errors import DataError
from kpengine.io.clicks import MAX_KEYPOINTS, Click, load_clicks, save_clicks
from kpengine.server import ServerConfig, create_app
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.repo import create_annotator


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    clicks = [
        Click("m1", "alice", 0, (0.1, -0.2, 1 / 3)),
        Click("m1", "alice", 5, (0.0, 0.5, 0.25), point_index=7, face_index=3, face_uv=(0.2, 0.3, 0.5), time=1.5e9),
        Click("m2", "bob", 23, (1e-9, 2.0, -3.0), time=1700000000.123456, class_id="03001627"),
    ]
    path = tmp_path / "raw.json"
    save_clicks(path, clicks)
    loaded, problems = load_clicks(path)
    assert loaded == clicks and problems == []
    assert list(json.loads(path.read_text())[2]) == ["class_id", "model_id", "annotator", "kp_index", "xyz", "time"]
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_bad_clicks_are_reported_by_file_model_and_field(tmp_path: Path) -> None:
    good = {"model_id": "m1", "annotator": "a", "kp_index": 0, "xyz": [0, 0, 0]}
    path = tmp_path / "raw.json"
    bad = [{**good, "model_id": "m9", "face_uv": [1, 2]}, {**good, "time": "yesterday"}, {**good, "point_index": -1}]
    path.write_text(json.dumps([good, *bad]))
    clicks, problems = load_clicks(path)
    assert len(clicks) == 1 and len(problems) == 3 and all(p.fatal for p in problems)
    text = [str(p) for p in problems]
    assert "model m9" in text[0] and str(path) in text[0] and "'face_uv' must be a list of 3 numbers" in text[0]
    assert "'time' must be seconds since the epoch or ISO-8601" in text[1]
    assert "'point_index' must be an integer >= 0" in text[2]
    path.write_text('{"clicks": []}')
    with pytest.raises(DataError, match="expected a JSON list of clicks"):
        load_clicks(path)


def test_old_nested_export_reads_as_the_same_clicks_with_a_warning(tmp_path: Path) -> None:
    nested = [
        {
            "class_id": "03001627",
            "model_id": "m1",
            "annotator": "alice",
            "keypoints": [
                {"index": 2, "xyz": [0.1, 0.2, 0.3], "mesh_info": {"face_index": 4, "face_uv": [0.5, 0.25, 0.25]},
                 "pcd_info": {"point_index": 9}, "time": "2026-11-27T12:07:05.417500"},  # naive: UTC
                {"index": 3, "xyz": [0.0, 0.0, 0.0], "mesh_info": None, "pcd_info": None,
                 "time": "2026-11-27T12:07:06+00:00"},
                {"index": 4, "xyz": [0.0, 0.0]},
            ],
        }
    ]  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(nested))
    clicks, problems = load_clicks(path)
    t0 = datetime(2026, 11, 27, 12, 7, 5, 417500, tzinfo=UTC).timestamp()
    assert clicks == [
        Click("m1", "alice", 2, (0.1, 0.2, 0.3), 9, 4, (0.5, 0.25, 0.25), t0, "03001627"),
        Click("m1", "alice", 3, (0.0, 0.0, 0.0), time=t0 + 0.5825, class_id="03001627"),
    ]
    assert not problems[0].fatal and "old nested raw export" in problems[0].reason
    assert problems[1].fatal and "set 0, keypoint 2" in problems[1].reason and "'xyz'" in problems[1].reason


# --------------------------------------------------------------------------- store round trip


def _nested(flat: list[dict]) -> list[dict]:
    """What ``db export-raw`` wrote before the flat format: one set per model and annotator."""
    sets: dict[tuple[str, str], dict] = {}
    for c in flat:
        entry = sets.setdefault(
            (c["model_id"], c["annotator"]),
            {"class_id": c["class_id"], "model_id": c["model_id"], "annotator": c["annotator"], "keypoints": []},
        )
        when = datetime.fromtimestamp(c["time"], UTC).replace(tzinfo=None)  # SQLite gave naive UTC times
        entry["keypoints"].append(
            {
                "index": c["kp_index"],
                "xyz": c["xyz"],
                "mesh_info": {"face_index": c["face_index"], "face_uv": c["face_uv"]} if "face_index" in c else None,
                "pcd_info": {"point_index": c["point_index"]} if "point_index" in c else None,
                "time": when.isoformat(),
            }
        )
    return list(sets.values())


@pytest.fixture(scope="module")
def saved_by_api(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Click]]:
    """A store whose raw annotations were saved through ``PUT /api/annotations`` by simulated people."""
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'store.db'}"
    store = open_store(url)
    shapes = list(KeypointNetDataset(sample_root, "chair", "all"))
    clicks = simulate_crowd(shapes, CrowdModel(n_annotators=4, seed=1))
    with store.session() as s:
        import_dataset(s, sample_root, ["chair"], labels=KEYPOINT_NAMES)
        tokens = {a: create_annotator(s, a)[1] for a in sorted({c.annotator for c in clicks})}
    sets: dict[tuple[str, str], list[Click]] = {}
    for c in clicks:
        sets.setdefault((c.annotator, c.model_id), []).append(c)
    with TestClient(create_app(ServerConfig(store=store))) as client:
        assert (
            client.get("/api/me", headers={"Authorization": f"Bearer {tokens['sim000']}"}).json()["max_keypoints"]
            == MAX_KEYPOINTS
        )
        for (who, mid), cs in sets.items():
            body = {"keypoints": [{"index": c.kp_index, "xyz": list(c.xyz)} for c in cs]}
            reply = client.put(
                f"/api/annotations/chair/{mid}", json=body, headers={"Authorization": f"Bearer {tokens[who]}"}
            )
            assert reply.status_code == 200, reply.text
    store.dispose()
    return url, clicks


def test_export_raw_then_aggregate_raw_uses_every_saved_click(
    saved_by_api: tuple[str, list[Click]], sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url, clicks = saved_by_api
    raw = tmp_path / "raw.json"
    assert main(["db", "export-raw", "--db", url, "--category", "chair", "--out", str(raw)]) == 0
    flat = json.loads(raw.read_text())
    exported, problems = load_clicks(raw)
    assert problems == [] and len(exported) == len(clicks)
    # the server snapped each click to the surface and the cloud: same people, models and own numbers
    key = lambda c: (c.model_id, c.annotator, c.kp_index)  # noqa: E731
    assert sorted(map(key, exported)) == sorted(map(key, clicks))
    assert all(c.class_id == "03001627" and c.face_index is not None and c.time is not None for c in exported)

    old = tmp_path / "old.json"
    old.write_text(json.dumps(_nested(flat)))
    argv = ["aggregate", "--data", str(sample_root), "--category", "chair", "--steps", "20", "--figures", "0"]
    argv += ["--no-progress"]
    capsys.readouterr()
    assert main([*argv, "--raw", str(raw), "--out", str(tmp_path / "new_out.json")]) == 0
    new_err = capsys.readouterr().err
    report = json.loads((tmp_path / "new_out.report.json").read_text())
    assert report["clicks_used"] == len(clicks)
    assert "old nested" not in new_err
    assert main([*argv, "--raw", str(old), "--out", str(tmp_path / "old_out.json")]) == 0
    assert "old nested raw export" in capsys.readouterr().err
    # the nested file holds the same clicks, so the aggregation is the same
    assert (tmp_path / "old_out.json").read_text() == (tmp_path / "new_out.json").read_text()


def test_export_to_stdout_import_raw_into_a_fresh_store_round_trips(
    saved_by_api: tuple[str, list[Click]],
    sample_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, clicks = saved_by_api
    capsys.readouterr()
    assert main(["db", "export-raw", "--db", url, "--out", "-"]) == 0
    first = capsys.readouterr().out
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    store = open_store(fresh)
    with store.session() as s:
        import_dataset(s, sample_root, ["chair"])
        create_annotator(s, "sim000")  # exists already: gets the clicks, is not created again
    store.dispose()
    monkeypatch.setattr("sys.stdin", io.StringIO(first))
    assert main(["db", "import-raw", "--db", fresh, "--raw", "-"]) == 0
    out = capsys.readouterr().out
    assert f"({len(clicks)} clicks)" in out and "sim001, sim002, sim003" in out and "sim000," not in out
    assert main(["db", "export-raw", "--db", fresh, "--out", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(first)  # same clicks, same times


def test_import_raw_skips_unknown_models_and_oversized_sets(sample_root: Path, tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    with store.session() as s:
        import_dataset(s, sample_root, ["mug"])
    mid = json.loads((sample_root / "annotations" / "mug.json").read_text())[0]["model_id"]
    ok = [Click(mid, "ann", i, (0.0, 0.0, float(i)), class_id="mug") for i in range(3)]
    too_many = [Click(mid, "big", i, (0.0, 0.0, 0.0)) for i in range(MAX_KEYPOINTS + 1)]
    ghost = [Click("ghost", "ann", 0, (0.0, 0.0, 0.0))]
    raw = tmp_path / "raw.json"
    save_clicks(raw, [*ok, *too_many, *ghost])
    from kpengine.store.exchange import import_raw, raw_clicks

    with store.session() as s:
        summary = import_raw(s, load_clicks(raw)[0], category="mug")
    assert (summary.sets, summary.clicks, summary.new_annotators) == (1, 3, ["ann"])  # "big" rolled back
    text = "\n".join(map(str, summary.problems))
    assert f"at most {MAX_KEYPOINTS} keypoints" in text and "model ghost" in text and "not in category mug" in text
    with store.session() as s:
        back = raw_clicks(s, "mug")
    assert [replace(c, time=None, class_id=None) for c in back] == [replace(c, class_id=None) for c in ok]
    store.dispose()
