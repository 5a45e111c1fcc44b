"""The explorer's API (/api/explore): category summary and model list against the annotation
files, symmetry groups resolved to positions, the display mesh with its materials, and
predictions scored per model (checked against the pooled benchmark metric and against
hand-made perfect and shifted predictions)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import trimesh
from fastapi.testclient import TestClient

from kpengine.data import KeypointNetDataset
from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.io.annotations import load_annotations
from kpengine.metrics import THRESHOLDS
from kpengine.metrics.evaluate import evaluate_correspondence, evaluate_file
from kpengine.metrics.per_model import model_errors
from kpengine.server import ServerConfig, create_app
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.repo import get_model
from kpengine.store.schema import Model


@pytest.fixture(scope="module")
def client(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('explore') / 'store.db'}")
    with store.session() as s:
        import_dataset(s, sample_root, ["mug", "chair"], labels=KEYPOINT_NAMES)
    return TestClient(create_app(ServerConfig(store=store)))


def test_summary_and_models_match_the_annotation_file(client: TestClient, sample_root: Path) -> None:
    anns, _ = load_annotations(sample_root / "annotations" / "chair.json")
    per_id = Counter(sid for a in anns for sid in set(a.semantic_ids))
    summary = client.get("/api/explore/categories/chair/summary").json()
    assert summary["n_models"] == len(anns)
    assert {r["semantic_id"]: r["n_models"] for r in summary["semantic_ids"]} == dict(per_id)
    assert {r["semantic_id"]: r["name"] for r in summary["semantic_ids"]} == {
        sid: KEYPOINT_NAMES["chair"][sid] for sid in per_id
    }
    meshes = sum(1 for a in anns if (sample_root / "meshes" / a.class_id / a.model_id).is_dir())
    assert summary["n_with_mesh"] == meshes
    rows = client.get("/api/explore/categories/chair/models").json()
    assert {r["model_id"]: r["semantic_ids"] for r in rows} == {a.model_id: sorted(set(a.semantic_ids)) for a in anns}
    assert client.get("/api/explore/categories/nope/summary").status_code == 404


def test_symmetries_resolve_to_the_keypoints_they_index(client: TestClient, sample_root: Path) -> None:
    anns, _ = load_annotations(sample_root / "annotations" / "mug.json")
    ann = next(a for a in anns if a.symmetries.rotation and a.symmetries.reflection)
    groups = client.get(f"/api/explore/models/mug/{ann.model_id}/symmetries").json()
    expected = [("reflection", g.kp_indexes) for g in ann.symmetries.reflection] + [
        ("rotation", g.kp_indexes) for g in ann.symmetries.rotation
    ]
    assert [(g["kind"], g["kp_indexes"]) for g in groups] == expected
    for g in groups:
        assert g["semantic_ids"] == [ann.keypoints[i].semantic_id for i in g["kp_indexes"]]
        np.testing.assert_allclose(g["xyz"], [ann.keypoints[i].xyz for i in g["kp_indexes"]])
    circle = next(g for g in groups if g["is_circle"])
    assert circle["circle"]["radius"] == pytest.approx(ann.symmetries.rotation[0].circle.radius)  # type: ignore[union-attr]


def _glb_scene(data: bytes) -> trimesh.Scene:
    return trimesh.load(trimesh.util.wrap_as_stream(data), file_type="glb", force="scene")


def test_display_mesh_keeps_mtl_colours_and_textures_inside_the_model_folder(tmp_path: Path) -> None:
    """A ShapeNet-layout model (models/*.obj, images/*.png) gets its texture; an MTL naming a
    file outside the model folder does not get it read."""
    from PIL import Image

    from kpengine.server.explore import display_glb

    model = tmp_path / "m1"
    (model / "models").mkdir(parents=True)
    (model / "images").mkdir()
    Image.new("RGB", (4, 4), (200, 30, 40)).save(model / "images" / "t.png")
    Image.new("RGB", (4, 4), (0, 0, 255)).save(tmp_path / "secret.png")
    obj = model / "models" / "model_normalized.obj"
    obj.write_text(
        "mtllib model_normalized.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
        "usemtl tex\nf 1/1 2/2 3/3\nusemtl red\nf 1/1 3/3 4/4\n"
    )
    mtl = "newmtl tex\nKd 1 1 1\nmap_Kd ../images/t.png\nnewmtl red\nKd 0.8 0.1 0.1\n"
    (model / "models" / "model_normalized.mtl").write_text(mtl)
    scene = _glb_scene(display_glb(obj))
    mats = {
        tuple(np.round(np.asarray(g.visual.material.baseColorFactor)[:3] / 255, 1)): g.visual.material
        for g in scene.geometry.values()
    }
    assert (0.8, 0.1, 0.1) in mats  # the Kd colour
    textured = [m for m in mats.values() if m.baseColorTexture is not None]
    assert len(textured) == 1
    assert textured[0].baseColorTexture.convert("RGB").getpixel((1, 1)) == (200, 30, 40)
    np.testing.assert_allclose(scene.bounds, [[0, 0, 0], [1, 1, 0]])

    (model / "models" / "model_normalized.mtl").write_text(mtl.replace("../images/t.png", "../../secret.png"))
    scene = _glb_scene(display_glb(obj))
    assert all(g.visual.material.baseColorTexture is None for g in scene.geometry.values())


def test_display_mesh_endpoint(client: TestClient, sample_root: Path) -> None:
    rows = client.get("/api/explore/categories/chair/models").json()
    with_mesh = next(r for r in rows if r["has_mesh"])
    res = client.get(f"/api/explore/models/chair/{with_mesh['model_id']}/display.glb")
    assert res.status_code == 200 and res.headers["content-type"] == "model/gltf-binary"
    plain = client.get(f"/api/models/chair/{with_mesh['model_id']}/mesh.glb").content
    np.testing.assert_allclose(_glb_scene(res.content).bounds, _glb_scene(plain).bounds, atol=1e-6)
    assert client.get("/api/explore/models/chair/no-such-model/display.glb").status_code == 404


def _post(client: TestClient, category: str, task: str, body: object) -> dict:
    res = client.post(f"/api/explore/predictions/{category}?task={task}&name=p.json", content=json.dumps(body))
    assert res.status_code == 200, res.text
    return res.json()


def test_predictions_scored_per_model_agree_with_the_benchmark(client: TestClient, sample_root: Path) -> None:
    dataset = KeypointNetDataset(sample_root, "mug", "all")
    rng = np.random.default_rng(0)
    # correspondence: each id predicted at a random nearby point (some hits, some misses)
    preds: dict[str, dict[str, int]] = {}
    for shape in dataset:
        d = np.linalg.norm(shape.points[None] - shape.points[shape.point_indices][:, None], axis=2)
        preds[shape.model_id] = {
            str(sid): int(rng.choice(np.argsort(row)[:120])) for sid, row in zip(shape.semantic_ids, d)
        }
    out = _post(client, "mug", "correspondence", preds)
    assert out["thresholds"] == pytest.approx(list(THRESHOLDS))
    assert len(out["models"]) == len(dataset)
    pooled = evaluate_correspondence(dataset, {m: {int(k): v for k, v in p.items()} for m, p in preds.items()})
    per_model = np.mean([m["score"] for m in out["models"]], axis=0)
    np.testing.assert_allclose(per_model, pooled.metrics["pck"], atol=1e-6)
    # every pair joins the prediction of an id to the ground truth of that id
    first = next(m for m in out["models"])
    shape = dataset.by_id(first["model_id"])
    for p in first["pairs"]:
        k = list(shape.semantic_ids).index(p["semantic_id"])
        assert p["gt"] == shape.point_indices[k] and p["pred"] == preds[shape.model_id][str(p["semantic_id"])]
        np.testing.assert_allclose(p["gt_xyz"], shape.points[p["gt"]], atol=1e-6)


def test_saliency_perfect_and_shifted(client: TestClient, sample_root: Path) -> None:
    dataset = KeypointNetDataset(sample_root, "mug", "all")
    shape = dataset[0]
    perfect = {shape.model_id: [[int(i), 1.0] for i in shape.point_indices]}
    out = _post(client, "mug", "saliency", perfect)["models"][0]
    assert out["score"] == [1.0] * len(THRESHOLDS) and out["mean_error"] == 0.0
    assert all(p["distance"] == 0.0 for p in out["pairs"])
    # one keypoint replaced by the point farthest from every keypoint: one false positive, one miss
    far = int(np.argmax(np.linalg.norm(shape.points[:, None] - shape.points[shape.point_indices][None], axis=2).min(1)))
    shifted = {shape.model_id: perfect[shape.model_id][1:] + [[far, 0.5]]}
    out = _post(client, "mug", "saliency", shifted)["models"][0]
    g = len(set(shape.point_indices.tolist()))
    assert out["score"][5] == pytest.approx((g - 1) / (g + 1))  # IoU = TP / (TP + FP + FN)
    direct = model_errors(
        shape.model_id,
        shape.points,
        shape.point_indices,
        shape.semantic_ids,
        "saliency",
        np.array([p[0] for p in shifted[shape.model_id]]),
    )
    assert out["score"] == pytest.approx(direct.score) and out["mean_error"] == pytest.approx(
        direct.mean_error, abs=1e-6
    )
    missed = [x for x in out["gt"] if x["distance"] is None or x["distance"] > 0.05]
    assert [x["point"] for x in missed] == [int(shape.point_indices[0])]


def test_bad_predictions_are_refused_with_the_model_named(client: TestClient, sample_root: Path) -> None:
    mid = KeypointNetDataset(sample_root, "mug", "all").model_ids[0]
    res = client.post(
        "/api/explore/predictions/mug?task=saliency&name=bad.json", content=json.dumps({mid: [[99999, 1]]})
    )
    assert res.status_code == 422 and mid in res.json()["detail"] and "bad.json" in res.json()["detail"]
    res = client.post("/api/explore/predictions/mug?task=correspondence", content="[1, 2]")
    assert res.status_code == 422
    res = client.post("/api/explore/predictions/mug?task=correspondence", content="{not json")
    assert res.status_code == 422
    out = _post(client, "mug", "correspondence", {"not-a-model": {"0": 1}, mid: {}})
    assert any("not-a-model" in w for w in out["warnings"]) and [m["model_id"] for m in out["models"]] == [mid]


def test_models_without_a_cloud_are_reported_not_scored(client: TestClient, sample_root: Path) -> None:
    store = client.app.state.store  # type: ignore[attr-defined]
    mid = KeypointNetDataset(sample_root, "chair", "all").model_ids[0]
    with store.session() as s:
        model: Model = get_model(s, "chair", mid)  # type: ignore[assignment]
        saved, model.pcd_path = model.pcd_path, None
    try:
        out = _post(client, "chair", "correspondence", {mid: {"0": 0}})
        assert out["models"] == [] and "no point cloud" in out["warnings"][0]
    finally:
        with store.session() as s:
            get_model(s, "chair", mid).pcd_path = saved  # type: ignore[union-attr]


@pytest.mark.realdata
def test_template_baseline_per_model_matches_evaluate(keypointnet: Path, tmp_path: Path) -> None:
    """On real bathtubs: the template baseline's predictions, scored model by model by the
    explorer's endpoint, average to the PCK that `kpengine evaluate` reports."""
    from kpengine.learn.template import MeanPositionTemplate

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    with store.session() as s:
        import_dataset(s, keypointnet, ["bathtub"])
    client = TestClient(create_app(ServerConfig(store=store)))
    template = MeanPositionTemplate.fit(KeypointNetDataset(keypointnet, "bathtub", "train"))
    target = KeypointNetDataset(keypointnet, "bathtub", "test")
    preds = {s.model_id: {str(k): v for k, v in template.predict_correspondence(s).items()} for s in target}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(preds))
    out = _post(client, "bathtub", "correspondence", preds)
    expected = evaluate_file(keypointnet, "bathtub", "test", "correspondence", path).metrics["pck"]
    np.testing.assert_allclose(np.mean([m["score"] for m in out["models"]], axis=0), expected, atol=1e-6)
    assert len(out["models"]) == len(target)
    store.dispose()


def test_favicon(client: TestClient) -> None:
    from kpengine.server.pages import web_dist

    if not (web_dist() / "assets" / "favicon.svg").is_file():
        if os.environ.get("CI"):
            pytest.fail("web pages not built; CI builds them (scripts/setup_system.sh)")
        pytest.skip("web pages not built")
    res = client.get("/favicon.ico")
    assert res.status_code == 200 and res.headers["content-type"].startswith("image/svg+xml")


def test_runs_folder_predictions_by_name(client: TestClient, sample_root: Path, tmp_path: Path) -> None:
    config = client.app.state.config  # type: ignore[attr-defined]
    assert client.get("/api/explore/runs").status_code == 404  # no runs folder given
    dataset = KeypointNetDataset(sample_root, "mug", "all")
    preds = {s.model_id: {str(int(i)): int(p) for i, p in zip(s.semantic_ids, s.point_indices)} for s in dataset}
    (tmp_path / "run1" / "predictions").mkdir(parents=True)
    (tmp_path / "run1" / "predictions" / "test.json").write_text(json.dumps(preds))
    (tmp_path / "run1" / "config.json").write_text("{}")
    (tmp_path / "secret.json").write_text("{}")
    config.runs_dir = tmp_path / "run1"
    try:
        assert [f["name"] for f in client.get("/api/explore/runs").json()] == ["predictions/test.json"]
        out = client.get("/api/explore/runs/score", params={"name": "predictions/test.json"}).json()
        # the category and task come from the file; the ground truth itself scores 1 from 0.01 on
        # (PCK counts d < t, so nothing at t = 0)
        assert out["category"] == "mug" and out["task"] == "correspondence" and len(out["models"]) == len(dataset)
        assert all(m["score"] == [0.0] + [1.0] * (len(THRESHOLDS) - 1) for m in out["models"])
        assert out == _post(client, "mug", "correspondence", preds) | {"source": "predictions/test.json"}
        for name in ("../secret.json", "config.json", "/etc/passwd"):
            assert client.get("/api/explore/runs/score", params={"name": name}).status_code == 404
    finally:
        config.runs_dir = None


def test_symmetries_index_ordinals_not_list_positions(tmp_path: Path, sample_root: Path) -> None:
    """Groups name keypoints by ordinal. After a re-run that kept one verified keypoint of the
    first run (its highest ordinal), the new run's keypoints and groups start after it, so the
    model's ordinals have a gap and list positions no longer equal ordinals: the route must
    still give each group its own keypoints (here the run's two lowest ids, as proposed)."""
    from sqlalchemy import select as sql_select

    from kpengine.io.annotations import ReflectionGroup, Symmetries
    from kpengine.store import repo
    from kpengine.store.schema import AggregatedKeypoint
    from kpengine.store.verify import save_aggregation
    from test_verify_support import fill_store, truth_result

    store, _, shapes = fill_store(f"sqlite:///{tmp_path / 'store.db'}", sample_root)
    m0 = shapes[0].model_id
    with store.session() as s:
        save_aggregation(s, repo.get_category(s, "chair"), truth_result(shapes))  # type: ignore[arg-type]
        model = repo.get_model(s, "chair", m0)
        last = s.scalars(sql_select(AggregatedKeypoint).where(AggregatedKeypoint.model_id == model.id)
                         .order_by(AggregatedKeypoint.ordinal.desc())).first()  # type: ignore[union-attr]  # fmt: skip
        last.status = "verified"  # type: ignore[union-attr]
        kept_ordinal = last.ordinal  # type: ignore[union-attr]
    result = truth_result(shapes)
    for ann in result.annotations:
        ann.symmetries = Symmetries(reflection=[ReflectionGroup([0, 1])])
    with store.session() as s:
        offset = save_aggregation(s, repo.get_category(s, "chair"), result).report["id_offset"]  # type: ignore[arg-type]
    client = TestClient(create_app(ServerConfig(store=store)))
    groups = client.get(f"/api/explore/models/chair/{m0}/symmetries").json()
    ann0 = result.annotations[0]
    assert groups == [
        {
            "kind": "reflection",
            "kp_indexes": [kept_ordinal + 1, kept_ordinal + 2],
            "semantic_ids": [ann0.keypoints[0].semantic_id + offset, ann0.keypoints[1].semantic_id + offset],
            "xyz": [pytest.approx(list(ann0.keypoints[0].xyz)), pytest.approx(list(ann0.keypoints[1].xyz))],
            "is_circle": False,
            "circle": None,
        }
    ]
    store.dispose()
