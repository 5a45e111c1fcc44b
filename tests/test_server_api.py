"""The HTTP API against SQLite and a real PostgreSQL: browsing, annotating, admin, security."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.io.annotations import load_annotations, model_to_json
from kpengine.io.layout import mesh_path
from kpengine.io.mesh import load_mesh
from kpengine.server import ServerConfig, create_app
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.repo import create_annotator
from test_store_support import db_url, postgres_server  # noqa: F401 - fixtures

MUG = "03797390"


@dataclass
class Served:
    client: TestClient
    admin: dict[str, str]
    alice: dict[str, str]
    bob: dict[str, str]
    surface: list[list[float]]  # points on the first mug's surface (mesh vertices)
    model_id: str


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served(db_url: str, sample_root: Path) -> Served:  # noqa: F811
    store = open_store(db_url)
    with store.session() as s:
        import_dataset(s, sample_root, ["mug", "chair"], labels=KEYPOINT_NAMES)
        tokens = {
            name: create_annotator(s, name, "admin" if name == "admin" else "annotator")[1]
            for name in ("admin", "alice", "bob")
        }
    anns, _ = load_annotations(sample_root / "annotations" / "mug.json")
    mid = anns[0].model_id
    vertices = load_mesh(mesh_path(sample_root, MUG, mid)).vertices
    client = TestClient(create_app(ServerConfig(store=store)))
    yield Served(
        client,
        _bearer(tokens["admin"]),
        _bearer(tokens["alice"]),
        _bearer(tokens["bob"]),
        vertices[::7][:30].tolist(),
        mid,
    )
    client.close()
    store.dispose()


def _kps(points: list[list[float]]) -> dict:
    return {"keypoints": [{"index": i, "xyz": p} for i, p in enumerate(points)]}


def test_browse_public_catalogue(served: Served) -> None:
    c = served.client
    assert c.get("/api/health").json()["ok"]
    cats = {x["name"]: x for x in c.get("/api/categories").json()}
    assert cats["mug"]["n_models"] == 12 and cats["mug"]["labels"]["0"] == KEYPOINT_NAMES["mug"][0]
    models = c.get("/api/categories/mug/models", params={"split": "test"}).json()
    assert models and all(m["split"] == "test" for m in models)
    info = c.get(f"/api/models/mug/{served.model_id}").json()
    assert info["keypoints"][0]["name"] == KEYPOINT_NAMES["mug"][info["keypoints"][0]["semantic_id"]]
    glb = c.get(f"/api/models/{MUG}/{served.model_id}/mesh.glb")
    assert glb.status_code == 200 and glb.content[:4] == b"glTF"
    assert c.get(f"/api/models/mug/{served.model_id}/mesh.ply").content.startswith(b"ply")
    assert len(c.get(f"/api/models/mug/{served.model_id}/points").json()["points"]) == 2048 * 3
    assert c.get("/api/models/mug/nope").status_code == 404
    assert "/api/annotations/{category}/{model_id}" in c.get("/openapi.json").json()["paths"]


def test_annotate_revise_next_and_export(served: Served) -> None:
    c, mid = served.client, served.model_id
    url = f"/api/annotations/mug/{mid}"
    assert c.get(url, headers=served.alice).json() == {
        "category": "mug",
        "model_id": mid,
        "revision": 0,
        "keypoints": [],
    }
    r = c.put(url, json=_kps(served.surface[:3]), headers=served.alice)
    assert r.status_code == 200, r.text
    ack = r.json()
    assert ack["revision"] == 1 and [k["index"] for k in ack["keypoints"]] == [0, 1, 2]
    assert all(k["face_index"] is not None and abs(sum(k["barycentric"]) - 1) < 1e-9 for k in ack["keypoints"])
    assert all(math.dist(k["xyz"], p) < 1e-9 for k, p in zip(ack["keypoints"], served.surface))
    r = c.put(url, json={**_kps(served.surface[:2]), "base_revision": 1}, headers=served.alice)
    assert r.json()["revision"] == 2
    stale = c.put(url, json={**_kps(served.surface[:1]), "base_revision": 1}, headers=served.alice)
    assert stale.status_code == 409 and "revision" in stale.json()["detail"]
    assert c.get(url, headers=served.alice).json()["revision"] == 2
    assert c.get("/api/next", params={"category": "mug"}, headers=served.alice).json()["model_id"] != mid
    mine = c.get("/api/annotations", headers=served.alice).json()
    assert [(m["model_id"], len(m["keypoints"])) for m in mine] == [(mid, 2)]
    prog = {p["category"]: p for p in c.get("/api/progress", headers=served.alice).json()}
    assert prog["mug"]["models_annotated"] == 1
    raw = c.get("/api/admin/raw", headers=served.admin).json()
    assert [(r["annotator"], r["model_id"], r["kp_index"]) for r in raw] == [("alice", mid, 0), ("alice", mid, 1)]
    exported = c.get("/api/admin/export/mug", headers=served.admin).json()
    assert exported[0]["model_id"] == mid


def test_admin_invites_and_imports(served: Served, sample_root: Path) -> None:
    c = served.client
    r = c.post("/api/admin/invitations", json={"name": "carol"}, headers=served.admin)
    assert r.status_code == 201
    carol = _bearer(r.json()["token"])
    assert c.get("/api/me", headers=carol).json()["name"] == "carol"
    assert c.post("/api/admin/invitations", json={"name": "dave"}, headers=carol).status_code == 403
    original = json.loads((sample_root / "annotations" / "mug.json").read_text())
    original[0]["keypoints"] = original[0]["keypoints"][:2]
    original[0]["symmetries"] = {"reflection": [], "rotation": []}
    assert c.post("/api/admin/import/mug", json=original[:1], headers=served.admin).json() == {
        "models": 1,
        "keypoints": 2,
    }
    assert len(c.get(f"/api/models/mug/{served.model_id}").json()["keypoints"]) == 2
    back = c.get("/api/admin/export/mug", headers=served.admin).json()
    assert model_to_json(load_annotations_from(back[0])) == model_to_json(load_annotations_from(original[0]))
    assert c.post("/api/admin/import/mug", json=[{"model_id": "x"}], headers=served.admin).status_code == 422


def load_annotations_from(obj: dict):  # noqa: ANN201
    from kpengine.io.annotations import parse_model

    return parse_model(obj)


def _largest_face(sample_root: Path, model_id: str) -> tuple[int, list[float], list[float]]:
    """The largest triangle of the model: its index, centroid and unit normal (NumPy, by hand).

    On the sample mug it lies on the bounding box, so nothing else is within 0.01 of it outside."""
    mesh = load_mesh(mesh_path(sample_root, MUG, model_id))
    tri = mesh.vertices[mesh.faces]  # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face = int(np.argmax(np.linalg.norm(cross, axis=1)))
    normal = cross[face] / np.linalg.norm(cross[face])
    return face, tri[face].mean(axis=0).tolist(), normal.tolist()


def test_a_click_off_the_vertices_is_stored_as_its_surface_point(served: Served, sample_root: Path) -> None:
    """A click 0.003 above the centre of a triangle (within the documented 0.005) is kept as the
    centre itself: that triangle, barycentric weights (1/3, 1/3, 1/3), not the raw click."""
    face, centre, normal = _largest_face(sample_root, served.model_id)
    click = [c + 0.003 * n for c, n in zip(centre, normal)]
    url = f"/api/annotations/mug/{served.model_id}"
    r = served.client.put(url, json=_kps([click]), headers=served.alice)
    assert r.status_code == 200, r.text
    for kp in (r.json()["keypoints"][0], served.client.get(url, headers=served.alice).json()["keypoints"][0]):
        np.testing.assert_allclose(kp["xyz"], centre, atol=1e-9)
        assert kp["face_index"] == face
        np.testing.assert_allclose(kp["barycentric"], [1 / 3] * 3, atol=1e-9)


def test_surface_tolerance_is_five_thousandths(served: Served, sample_root: Path) -> None:
    """The documented tolerance (0.005 model units): 0.8 of it above the surface is accepted,
    1.3 of it is refused with the distance and the tolerance in the message, and nothing changes."""
    assert ServerConfig().tolerance == 0.005
    _, centre, normal = _largest_face(sample_root, served.model_id)
    url = f"/api/annotations/mug/{served.model_id}"
    near = [c + 0.004 * n for c, n in zip(centre, normal)]
    assert served.client.put(url, json=_kps([near]), headers=served.alice).status_code == 200
    far = [c + 0.0065 * n for c, n in zip(centre, normal)]
    r = served.client.put(url, json=_kps([far, served.surface[0]]), headers=served.alice)
    assert r.status_code == 422 and "0.0065" in r.json()["detail"] and "0.005" in r.json()["detail"]
    assert served.client.get(url, headers=served.alice).json()["revision"] == 1


def test_exactly_24_keypoints_are_saved_and_25_refused(served: Served) -> None:
    url = f"/api/annotations/mug/{served.model_id}"
    assert served.client.get("/api/me", headers=served.alice).json()["max_keypoints"] == 24
    r = served.client.put(url, json=_kps(served.surface[:24]), headers=served.alice)
    assert r.status_code == 200, r.text
    assert [k["index"] for k in r.json()["keypoints"]] == list(range(24))
    r = served.client.put(url, json=_kps(served.surface[:25]), headers=served.alice)
    assert r.status_code == 422 and "24" in r.text
    stored = served.client.get(url, headers=served.alice).json()
    assert stored["revision"] == 1 and len(stored["keypoints"]) == 24
