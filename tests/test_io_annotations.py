import json

import pytest

from kpengine.errors import DataError
from kpengine.io.annotations import load_annotations, model_to_json, save_annotations


@pytest.mark.parametrize("category", ["bathtub", "bed", "chair", "table", "bottle"])
def test_real_annotations_round_trip_byte_identical(keypointnet, tmp_path, category):
    src = keypointnet / "annotations" / f"{category}.json"
    models, problems = load_annotations(src)
    assert problems == []
    out = tmp_path / f"{category}.json"
    save_annotations(out, models)
    assert out.read_bytes() == src.read_bytes()


def test_real_symmetries_parsed(keypointnet):
    models, _ = load_annotations(keypointnet / "annotations" / "bottle.json")
    circles = [g for m in models for g in m.symmetries.rotation if g.is_circle]
    assert circles and all(g.circle is not None and g.circle.radius > 0 for g in circles)
    for m in models:
        for g in m.symmetries.reflection + m.symmetries.rotation:
            assert all(0 <= k < len(m.keypoints) for k in g.kp_indexes)


def test_all_json_concatenation_reads_every_category(keypointnet, tmp_path):
    merged = []
    for cat in ("bathtub", "bed"):
        merged += json.loads((keypointnet / "annotations" / f"{cat}.json").read_text())
    (tmp_path / "all.json").write_text(json.dumps(merged))
    models, problems = load_annotations(tmp_path / "all.json")
    assert not problems
    assert {m.class_id for m in models} == {"02808440", "02818832"}
    assert len(models) == 492 + 146


def test_malformed_json_names_file_line_and_column(tmp_path):
    bad = tmp_path / "chair.json"
    bad.write_text('[{"class_id": "03001627",\n  "model_id": "x", "keypoints": [}]')
    with pytest.raises(DataError) as err:
        load_annotations(bad)
    assert str(bad) in str(err.value) and "line 2" in str(err.value) and "column" in str(err.value)


def test_bad_model_is_reported_and_others_load(tmp_path):
    good = {"class_id": "1", "model_id": "good", "keypoints": [{"xyz": [0, 0, 0], "semantic_id": 0}]}
    nan = {"class_id": "1", "model_id": "nan", "keypoints": [{"xyz": [0, float("nan"), 0], "semantic_id": 0}]}
    neg = {"class_id": "1", "model_id": "neg", "keypoints": [{"xyz": [0, 0, 0], "semantic_id": -1}]}
    sym = {"class_id": "1", "model_id": "sym", "keypoints": [], "symmetries": {"reflection": [{"kp_indexes": [0, 1]}]}}
    path = tmp_path / "a.json"
    path.write_text(json.dumps([good, nan, neg, sym]))
    models, problems = load_annotations(path)
    assert [m.model_id for m in models] == ["good"]
    by_id = {p.model_id: p.reason for p in problems}
    assert "not finite" in by_id["nan"] and "keypoints[0].xyz" in by_id["nan"]
    assert "semantic_id" in by_id["neg"]
    assert "kp_indexes" in by_id["sym"]
    assert all(p.path == str(path) for p in problems)


def test_keypoint_without_xyz_keeps_its_locators():
    from kpengine.io.annotations import parse_model

    m = parse_model(
        {"class_id": "1", "model_id": "m", "keypoints": [{"semantic_id": 3, "pcd_info": {"point_index": 7}}]}
    )
    assert m.keypoints[0].xyz is None and m.keypoints[0].point_index == 7
    assert model_to_json(m)["keypoints"][0] == {"semantic_id": 3, "pcd_info": {"point_index": 7}}


def test_unknown_fields_survive_a_round_trip_where_they_were():
    """Fields kpengine does not know stay where the file had them: inside ``pcd_info`` and
    ``mesh_info`` (next to the locators), and beside the keypoint; a keypoint written back is
    the same JSON (hand-built here: the real files have no such fields)."""
    from kpengine.io.annotations import parse_model

    kp = {
        "xyz": [0.1, 0.2, 0.3],
        "rgb": [1, 2, 3],
        "semantic_id": 4,
        "pcd_info": {"point_index": 7, "normal": [0.0, 1.0, 0.0]},
        "mesh_info": {"face_index": 2, "face_uv": [0.2, 0.3, 0.5], "material": "seat"},
        "confidence": 0.9,
        "annotator": "ann-3",
    }
    obj = {"class_id": "1", "model_id": "m", "keypoints": [kp]}
    back = model_to_json(parse_model(json.loads(json.dumps(obj))))["keypoints"][0]
    assert back == kp
    assert list(back) == list(kp)  # and in the file's order of sections
    plain = {"xyz": [0.0, 0.0, 0.0], "semantic_id": 0}
    assert model_to_json(parse_model({"class_id": "1", "model_id": "p", "keypoints": [plain]}))["keypoints"][0] == plain
