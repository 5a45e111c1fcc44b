"""Aggregation into the store and the verification API: every action, admin-only, and the
official export reflecting accept / reject / merge (names go to the semantic labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kpengine.cli.main import main
from kpengine.server import ServerConfig, create_app
from kpengine.store import repo
from kpengine.store.schema import AggregatedKeypoint, AggregationCandidate, AggregationRun
from kpengine.store.verify import save_aggregation
from test_store_support import db_url, postgres_server  # noqa: F401 - fixtures
from test_verify_support import N_MODELS, fill_store, truth_result


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _statuses(store) -> dict[str, int]:  # noqa: ANN001
    with store.session() as s:
        rows = s.execute(select(AggregatedKeypoint.status, func.count()).group_by(AggregatedKeypoint.status))
        return dict(rows.all())


def test_aggregate_from_store_keeps_verified_and_replaces_pending(tmp_path: Path, sample_root: Path) -> None:
    """The real pipeline, tiny: CLI ``aggregate --db`` then the admin endpoint; verified ground truth stays."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store, tokens, _ = fill_store(url, sample_root, keep_truth=True)
    verified = _statuses(store)["verified"]
    out = tmp_path / "out.json"
    args = ["aggregate", "--db", url, "--category", "chair", "--steps", "3", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    first = _statuses(store)
    assert first["verified"] == verified and first.get("pending", 0) > 0
    with store.session() as s:  # proposals never reuse an id a person verified
        top = s.scalar(select(func.max(AggregatedKeypoint.semantic_id)).where(AggregatedKeypoint.status == "verified"))
        low = s.scalar(select(func.min(AggregatedKeypoint.semantic_id)).where(AggregatedKeypoint.status == "pending"))
        assert low > top
    assert len(json.loads(out.read_text())) >= 2
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(AggregationCandidate)) >= first["pending"]
    client = TestClient(create_app(ServerConfig(store=store)))
    body = {"steps": 3, "seed": 1}
    assert client.post("/api/admin/aggregate/chair", json=body, headers=_bearer(tokens["annotator"])).status_code == 403
    r = client.post("/api/admin/aggregate/chair", json=body, headers=_bearer(tokens["admin"]))
    assert r.status_code == 200, r.text
    second = _statuses(store)
    assert second["verified"] == verified and second["pending"] == r.json()["keypoints"]
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(AggregationRun)) == 1  # the older run was replaced
    r = client.post("/api/admin/aggregate/nothing", json=body, headers=_bearer(tokens["admin"]))
    assert r.status_code == 422 and "no category" in r.json()["detail"]
    store.dispose()


@pytest.fixture
def verifying(db_url: str, sample_root: Path):  # noqa: ANN201, F811 - SQLite and PostgreSQL
    store, tokens, shapes = fill_store(db_url, sample_root)
    with store.session() as s:
        save_aggregation(s, repo.get_category(s, "chair"), truth_result(shapes))  # type: ignore[arg-type]
    client = TestClient(create_app(ServerConfig(store=store)))
    yield client, _bearer(tokens["admin"]), _bearer(tokens["annotator"]), shapes
    store.dispose()


def _kp(state: dict, model: str, sid: int) -> dict:
    return next(k for k in state["keypoints"] if k["model_id"] == model and k["semantic_id"] == sid)


def test_state_shows_run_clusters_candidates_and_pending_keypoints(verifying) -> None:  # noqa: ANN001
    client, admin, _, shapes = verifying
    r = client.get("/api/admin/verify/chair", headers=admin)
    assert r.status_code == 200, r.text
    st = r.json()
    true_ids = sorted({int(i) for s in shapes for i in s.semantic_ids})
    assert [c["id"] for c in st["clusters"]] == true_ids
    assert st["run"]["noise_candidates"] >= 1 and len(st["candidates"]) == st["run"]["candidates"]
    assert all(k["status"] == "pending" for k in st["keypoints"])
    assert sum(c["keypoint_id"] is not None for c in st["candidates"]) == len(st["keypoints"])
    assert all(len(c["xy"]) == 2 for c in st["candidates"])


def test_non_admin_and_missing_token_are_refused(verifying) -> None:  # noqa: ANN001
    client, admin, annotator, shapes = verifying
    kp = client.get("/api/admin/verify/chair", headers=admin).json()["keypoints"][0]
    calls = [
        ("get", "/api/admin/verify/chair", None),
        ("post", f"/api/admin/verify/chair/keypoints/{kp['id']}", {"status": "rejected"}),
        ("post", "/api/admin/verify/chair/clusters/0/status", {"status": "rejected"}),
        ("post", "/api/admin/verify/chair/merge", {"source": 1, "target": 0}),
        ("post", "/api/admin/verify/chair/clusters/0/split", {}),
        ("put", "/api/admin/verify/chair/labels/0", {"name": "x"}),
    ]
    for method, path, body in calls:
        kwargs = {} if body is None else {"json": body}
        assert getattr(client, method)(path, headers=annotator, **kwargs).status_code == 403, path
        assert getattr(client, method)(path, **kwargs).status_code == 401, path
    after = client.get("/api/admin/verify/chair", headers=admin).json()
    assert all(k["status"] == "pending" for k in after["keypoints"]) and after["labels"] == {}


def test_each_action(verifying) -> None:  # noqa: ANN001
    client, admin, _, shapes = verifying
    m0 = shapes[0].model_id
    base = "/api/admin/verify/chair"
    kp = _kp(client.get(base, headers=admin).json(), m0, 2)
    st = client.post(f"{base}/keypoints/{kp['id']}", json={"status": "rejected"}, headers=admin).json()
    assert _kp(st, m0, 2)["status"] == "rejected"
    st = client.post(f"{base}/keypoints/{kp['id']}", json={"status": "verified"}, headers=admin).json()
    assert _kp(st, m0, 2)["status"] == "verified"

    st = client.post(f"{base}/clusters/0/status", json={"status": "verified"}, headers=admin).json()
    assert st["result"]["changed"] == N_MODELS and {k["status"] for k in st["keypoints"] if k["semantic_id"] == 0} == {
        "verified"
    }
    st = client.post(f"{base}/clusters/5/status", json={"status": "rejected"}, headers=admin).json()
    assert next(c for c in st["clusters"] if c["id"] == 5)["rejected"] == N_MODELS

    # merge 1 into 0: every model had both, so one of each pair is rejected
    st = client.post(f"{base}/merge", json={"source": 1, "target": 0}, headers=admin).json()
    assert st["result"] == {"moved": N_MODELS, "rejected_duplicates": N_MODELS}
    assert 1 not in [c["id"] for c in st["clusters"]]
    assert all(c["cluster"] != 1 for c in st["candidates"])

    # split by chosen keypoints, then by 2-means on t-SNE
    three = [k["id"] for k in st["keypoints"] if k["semantic_id"] == 3][:2]
    st = client.post(f"{base}/clusters/3/split", json={"keypoint_ids": three}, headers=admin).json()
    new_id = st["result"]["new_id"]
    assert new_id > max(int(i) for s in shapes for i in s.semantic_ids)
    assert sorted(k["id"] for k in st["keypoints"] if k["semantic_id"] == new_id) == sorted(three)
    st = client.post(f"{base}/clusters/4/split", json={}, headers=admin).json()
    assert st["result"]["moved"] >= 1 and st["result"]["kept"] >= 1

    st = client.put(f"{base}/labels/0", json={"name": "back top, both"}, headers=admin).json()
    assert st["labels"]["0"] == "back top, both"
    assert next(c for c in st["clusters"] if c["id"] == 0)["name"] == "back top, both"

    # errors: unknown keypoint / cluster, bad status, merge into itself, split of everything
    assert client.post(f"{base}/keypoints/999999", json={"status": "verified"}, headers=admin).status_code == 404
    assert client.post(f"{base}/clusters/77/status", json={"status": "verified"}, headers=admin).status_code == 404
    assert client.post(f"{base}/clusters/0/status", json={"status": "maybe"}, headers=admin).status_code == 422
    assert client.post(f"{base}/merge", json={"source": 0, "target": 0}, headers=admin).status_code == 422
    all_six = [k["id"] for k in st["keypoints"] if k["semantic_id"] == 6]
    r = client.post(f"{base}/clusters/6/split", json={"keypoint_ids": all_six}, headers=admin)
    assert r.status_code == 422 and "not all" in r.json()["detail"]
    assert client.get("/api/admin/verify/nope", headers=admin).status_code == 404


def test_export_reflects_accept_reject_merge_and_names(verifying) -> None:  # noqa: ANN001
    client, admin, _, shapes = verifying
    base = "/api/admin/verify/chair"
    m0 = shapes[0].model_id
    assert all(not m["keypoints"] for m in client.get("/api/admin/export/chair", headers=admin).json())  # all pending
    for sid in (0, 1, 2, 3, 4):
        client.post(f"{base}/clusters/{sid}/status", json={"status": "verified"}, headers=admin)
    st = client.get(base, headers=admin).json()
    client.post(f"{base}/keypoints/{_kp(st, m0, 2)['id']}", json={"status": "rejected"}, headers=admin)
    client.post(f"{base}/merge", json={"source": 4, "target": 3}, headers=admin)
    client.put(f"{base}/labels/3", json={"name": "seat corner, front"}, headers=admin)
    exported = {m["model_id"]: m for m in client.get("/api/admin/export/chair", headers=admin).json()}
    for shape in shapes:
        ids = [k["semantic_id"] for k in exported[shape.model_id]["keypoints"]]
        assert 4 not in ids and ids.count(3) == 1, ids  # merged, one per model
        assert 5 not in ids  # still pending: not exported
        assert (2 in ids) == (shape.model_id != m0)  # the rejected one is left out
        assert 0 in ids and 1 in ids
        for k in exported[shape.model_id]["keypoints"]:
            assert shape.points[k["pcd_info"]["point_index"]].tolist() == pytest.approx(k["xyz"])
    labels = next(c for c in client.get("/api/categories").json() if c["name"] == "chair")["labels"]
    assert labels["3"] == "seat corner, front"


def test_aggregation_runs_as_a_job_with_progress(tmp_path: Path, sample_root: Path) -> None:
    """POST .../jobs answers at once; polling sees the pipeline's stages in order, then the stored summary."""
    import time

    from kpengine.aggregate.pipeline import STAGES

    store, tokens, _ = fill_store(f"sqlite:///{tmp_path / 'store.db'}", sample_root, keep_truth=True)
    client = TestClient(create_app(ServerConfig(store=store)))
    admin, body = _bearer(tokens["admin"]), {"steps": 3, "seed": 1}
    assert (
        client.post("/api/admin/aggregate/chair/jobs", json=body, headers=_bearer(tokens["annotator"])).status_code
        == 403
    )
    assert client.post("/api/admin/aggregate/nothing/jobs", json=body, headers=admin).status_code == 404
    r = client.post("/api/admin/aggregate/chair/jobs", json=body, headers=admin)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "running" and job["category"] == "chair"
    seen = [job["fraction"]]
    deadline = time.monotonic() + 600
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/admin/aggregate/jobs/{job['job']}", headers=admin).json()
        seen.append(job["fraction"])
    assert job["state"] == "done", job
    assert job["stages"] == list(STAGES)  # one round: every stage once, in order
    assert seen == sorted(seen) and job["fraction"] == 1.0  # progress never goes back
    assert job["summary"]["keypoints"] == _statuses(store)["pending"] > 0
    assert client.get("/api/admin/aggregate/jobs/nope", headers=admin).status_code == 404
    store.dispose()


def test_add_missed_keypoint(verifying) -> None:  # noqa: ANN001
    """An expert restores a keypoint: on the surface, an id the category knows, one per id per model.

    The click lands exactly on a cloud point of the model, so the stored keypoint must be that
    point (its index and coordinates), verified, after the model's last ordinal, and exported."""
    client, admin, annotator, shapes = verifying
    base = "/api/admin/verify/chair"
    shape = shapes[0]
    m0 = shape.model_id
    sid = int(shape.semantic_ids[0])
    old = _kp(client.get(base, headers=admin).json(), m0, sid)
    far = int(np.argmax(np.linalg.norm(shape.points - np.asarray(old["xyz"]), axis=1)))  # another point
    click = {"semantic_id": sid, "xyz": [float(v) for v in shape.points[far]]}
    url = f"{base}/models/{m0}/keypoints"

    r = client.post(url, json=click, headers=admin)  # the model still has this id (pending)
    assert r.status_code == 422 and "already has" in r.json()["detail"]
    client.post(f"{base}/keypoints/{old['id']}", json={"status": "rejected"}, headers=admin)
    assert client.post(url, json=click, headers=annotator).status_code == 403
    assert client.post(url, json=click).status_code == 401
    off = {"semantic_id": sid, "xyz": (shape.points.max(axis=0) + 0.5).tolist()}
    r = client.post(url, json=off, headers=admin)
    assert r.status_code == 422 and "surface" in r.json()["detail"]
    r = client.post(url, json={**click, "semantic_id": 999}, headers=admin)
    assert r.status_code == 422 and "not known" in r.json()["detail"]
    assert client.post(f"{base}/models/nope/keypoints", json=click, headers=admin).status_code == 404
    assert client.post(url, json={**click, "xyz": [0, "x", 0]}, headers=admin).status_code == 422

    ordinals = [k["ordinal"] for k in client.get(base, headers=admin).json()["keypoints"] if k["model_id"] == m0]
    r = client.post(url, json=click, headers=admin)
    assert r.status_code == 200, r.text
    st = r.json()
    new = next(k for k in st["keypoints"] if k["id"] == st["result"]["id"])
    assert new["model_id"] == m0 and new["semantic_id"] == sid and new["status"] == "verified"
    assert new["ordinal"] == max(ordinals) + 1
    assert new["xyz"] == pytest.approx(shape.points[far].tolist(), abs=1e-6)
    with verifying_store(client).session() as s:
        row = s.get(AggregatedKeypoint, new["id"])
        assert row.point_index == far and row.extra["added_by"] == "root"  # type: ignore[union-attr]
    r = client.post(url, json=click, headers=admin)  # now it has the id: a second one is refused
    assert r.status_code == 422 and "already has" in r.json()["detail"]

    # an id known only by its name (no keypoint has it yet) may be given too
    client.put(f"{base}/labels/40", json={"name": "armrest, new"}, headers=admin)
    r = client.post(url, json={"semantic_id": 40, "xyz": click["xyz"]}, headers=admin)
    assert r.status_code == 200, r.text

    exported = {m["model_id"]: m for m in client.get("/api/admin/export/chair", headers=admin).json()}
    mine = [k for k in exported[m0]["keypoints"] if k["semantic_id"] == sid]
    assert len(mine) == 1 and mine[0]["pcd_info"]["point_index"] == far


def verifying_store(client: TestClient):  # noqa: ANN201
    return client.app.state.store


def _group_ids(state: dict) -> dict[str, list[tuple[str, list[int]]]]:
    """model -> [(kind, semantic ids of the group's keypoints)], through the state's keypoint ids."""
    sid = {k["id"]: k["semantic_id"] for k in state["keypoints"]}
    out: dict[str, list[tuple[str, list[int]]]] = {}
    for g in state["symmetries"]:
        out.setdefault(g["model_id"], []).append((g["kind"], sorted(sid[i] for i in g["keypoint_ids"])))
    return out


def test_state_names_symmetry_groups_by_keypoint_id(tmp_path: Path, sample_root: Path) -> None:
    """Imported groups come back as the official files' groups (their semantic ids); a run's groups,
    stored after the kept keypoints' ordinals, resolve to the run's own keypoints, not by list position."""
    from kpengine.io.annotations import ReflectionGroup, Symmetries

    store, tokens, shapes = fill_store(f"sqlite:///{tmp_path / 'store.db'}", sample_root, keep_truth=True)
    client = TestClient(create_app(ServerConfig(store=store)))
    admin = _bearer(tokens["admin"])
    st = client.get("/api/admin/verify/chair", headers=admin).json()
    expected = {
        s.model_id: sorted(
            [
                ("reflection", sorted(s.annotation.keypoints[i].semantic_id for i in g.kp_indexes))
                for g in s.symmetries.reflection
            ]
            + [
                ("rotation", sorted(s.annotation.keypoints[i].semantic_id for i in g.kp_indexes))
                for g in s.symmetries.rotation
            ]
        )
        for s in shapes
    }
    assert sum(len(v) for v in expected.values()) > 0  # the sample chairs have official groups
    got = _group_ids(st)
    assert {m: sorted(got.get(m, [])) for m in expected} == expected

    # a run proposing one reflection pair (its two lowest ids) per model, stored after the kept keypoints
    result = truth_result(shapes)
    for ann in result.annotations:
        ann.symmetries = Symmetries(reflection=[ReflectionGroup([0, 1])])
    with store.session() as s:
        offset = save_aggregation(s, repo.get_category(s, "chair"), result).report["id_offset"]  # type: ignore[arg-type]
    got = _group_ids(client.get("/api/admin/verify/chair", headers=admin).json())
    for shape in shapes:
        low = sorted(int(i) for i in shape.semantic_ids)[:2]
        assert ("reflection", [low[0] + offset, low[1] + offset]) in got[shape.model_id]
        assert sorted(g for g in got[shape.model_id] if min(g[1]) < offset) == expected[shape.model_id]
    store.dispose()


def test_accept_all_leaves_rejected_keypoints_rejected(verifying) -> None:  # noqa: ANN001
    """A person rejects model m0's keypoint of an id and adds a replacement; "Accept all" on the
    cluster then accepts the undecided keypoints only: the rejected one stays rejected, so m0 has
    exactly one live keypoint of the id (before the fix it had two, and the export two of one id).
    Putting the rejected one back by hand while the replacement lives is refused (422)."""
    client, admin, _, shapes = verifying
    base = "/api/admin/verify/chair"
    shape = shapes[0]
    m0, sid = shape.model_id, int(shape.semantic_ids[0])
    old = _kp(client.get(base, headers=admin).json(), m0, sid)
    far = int(np.argmax(np.linalg.norm(shape.points - np.asarray(old["xyz"]), axis=1)))
    client.post(f"{base}/keypoints/{old['id']}", json={"status": "rejected"}, headers=admin)
    r = client.post(f"{base}/models/{m0}/keypoints", json={"semantic_id": sid, "xyz": shape.points[far].tolist()},
                    headers=admin)  # fmt: skip
    assert r.status_code == 200, r.text
    new_id = r.json()["result"]["id"]

    st = client.post(f"{base}/clusters/{sid}/status", json={"status": "verified"}, headers=admin).json()
    mine = {k["id"]: k["status"] for k in st["keypoints"] if k["model_id"] == m0 and k["semantic_id"] == sid}
    assert mine == {old["id"]: "rejected", new_id: "verified"}
    # the other models' keypoints of the id were pending: each accepted; m0's two were already decided
    assert st["result"]["changed"] == N_MODELS - 1
    others = [k for k in st["keypoints"] if k["semantic_id"] == sid and k["model_id"] != m0]
    assert len(others) == N_MODELS - 1 and {k["status"] for k in others} == {"verified"}
    exported = {m["model_id"]: m for m in client.get("/api/admin/export/chair", headers=admin).json()}
    assert [k["semantic_id"] for k in exported[m0]["keypoints"]].count(sid) == 1

    for status in ("verified", "pending"):  # reviving the rejected one would give m0 two of the id
        r = client.post(f"{base}/keypoints/{old['id']}", json={"status": status}, headers=admin)
        assert r.status_code == 422 and f"keypoint {new_id}" in r.json()["detail"], r.text
    # a cluster reset ("pending") puts back the undecided state but not m0's rejected duplicate
    st = client.post(f"{base}/clusters/{sid}/status", json={"status": "pending"}, headers=admin).json()
    mine = {k["id"]: k["status"] for k in st["keypoints"] if k["model_id"] == m0 and k["semantic_id"] == sid}
    assert mine == {old["id"]: "rejected", new_id: "pending"}
    # once the replacement is rejected, the old one may come back
    client.post(f"{base}/keypoints/{new_id}", json={"status": "rejected"}, headers=admin)
    r = client.post(f"{base}/keypoints/{old['id']}", json={"status": "verified"}, headers=admin)
    assert r.status_code == 200, r.text
    mine = {k["id"]: k["status"] for k in r.json()["keypoints"] if k["model_id"] == m0 and k["semantic_id"] == sid}
    assert mine == {old["id"]: "verified", new_id: "rejected"}
