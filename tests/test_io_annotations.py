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
    parsed = parse_model(json.loads(json.dumps(obj)))
    assert parsed.class_id == "1" and parsed.model_id == "m"
    # the locators are parsed, not kept twice: only the unknown fields stay in the sections
    assert parsed.keypoints[0].point_index == 7 and parsed.keypoints[0].face_index == 2
    assert parsed.keypoints[0].extra["pcd_info"] == {"normal": [0.0, 1.0, 0.0]}
    assert parsed.keypoints[0].extra["mesh_info"] == {"material": "seat"}
    back = model_to_json(parsed)["keypoints"][0]
    assert back == kp
    assert list(back) == list(kp)  # and in the file's order of sections
    plain = {"xyz": [0.0, 0.0, 0.0], "semantic_id": 0}
    assert model_to_json(parse_model({"class_id": "1", "model_id": "p", "keypoints": [plain]}))["keypoints"][0] == plain


def _model(keypoints=None, **kw):  # noqa: ANN001, ANN202
    kps = (
        [{"xyz": [0, 0, 0], "semantic_id": 0}, {"xyz": [1, 0, 0], "semantic_id": 1}] if keypoints is None else keypoints
    )
    return {"class_id": "1", "model_id": "m", "keypoints": kps, **kw}


_KP = {"xyz": [0, 0, 0], "semantic_id": 0}
REFUSALS = [
    ([1], "expected an object per model, got list"),
    ({"model_id": "m", "keypoints": []}, "missing field 'class_id'"),
    ({"class_id": "1", "keypoints": []}, "missing field 'model_id'"),
    ({"class_id": "1", "model_id": "m"}, "missing field 'keypoints'"),
    (_model({"a": 1}), "'keypoints' must be a list"),
    (_model([_KP, 3]), "keypoints[1] must be an object"),
    (_model([_KP, {"xyz": [0, 0, 0]}]), "keypoints[1] needs 'semantic_id'"),
    (_model([_KP, {"semantic_id": 0}]), "keypoints[1] needs a position: 'xyz', 'pcd_info' or 'mesh_info'"),
    (_model([{"xyz": [1, 2], "semantic_id": 0}]), "keypoints[0].xyz must be a list of 3 numbers, got [1, 2]"),
    (_model([{"xyz": "abc", "semantic_id": 0}]), "keypoints[0].xyz must be a list of 3 numbers, got 'abc'"),
    (_model([{"xyz": [1, "2", 3], "semantic_id": 0}]), "keypoints[0].xyz must hold numbers, got [1, '2', 3]"),
    (_model([{"xyz": [True, 0, 0], "semantic_id": 0}]), "keypoints[0].xyz must hold numbers, got [True, 0, 0]"),
    (_model([{"xyz": [float("inf"), 0, 0], "semantic_id": 0}]), "keypoints[0].xyz is not finite: [inf, 0, 0]"),
    (_model([{"xyz": [0, 0, 0], "semantic_id": -1}]), "keypoints[0].semantic_id must be an integer >= 0, got -1"),
    (_model([{"xyz": [0, 0, 0], "semantic_id": True}]), "keypoints[0].semantic_id must be an integer >= 0, got True"),
    (_model([{"xyz": [0, 0, 0], "semantic_id": 1.0}]), "keypoints[0].semantic_id must be an integer >= 0, got 1.0"),
    (
        _model([{"xyz": [0, 0, 0], "semantic_id": 0, "rgb": [1]}]),
        "keypoints[0].rgb must be a list of 3 numbers, got [1]",
    ),
    (
        _model([{"semantic_id": 0, "pcd_info": {"normal": 1}}]),
        "keypoints[0].pcd_info.point_index must be an integer >= 0, got None",
    ),
    (
        _model([{"semantic_id": 0, "mesh_info": {"face_index": 3}}]),
        "keypoints[0].mesh_info.face_uv must be a list of 3 numbers, got None",
    ),
    (
        _model([{"semantic_id": 0, "mesh_info": {"face_index": -2, "face_uv": [1, 0, 0]}}]),
        "keypoints[0].mesh_info.face_index must be an integer >= 0, got -2",
    ),
    (_model(symmetries=[]), "symmetries must be an object"),
    (_model(symmetries={"reflection": [{"kp_indexes": 1}]}), "symmetries.reflection[0].kp_indexes must be a list"),
    (_model(symmetries={"reflection": ["x"]}), "symmetries.reflection[0].kp_indexes must be a list"),
    (
        _model(symmetries={"reflection": [{"kp_indexes": [0, 1]}, {"kp_indexes": [1, 2]}]}),
        "symmetries.reflection[1].kp_indexes names keypoint 2 but the model has 2",
    ),
    (
        _model(symmetries={"reflection": [{"kp_indexes": [-1, 0]}]}),
        "symmetries.reflection[0].kp_indexes must be an integer >= 0, got -1",
    ),
    (
        _model(symmetries={"rotation": [{"kp_indexes": [0, 1], "circle": {"radius": 1.0}}]}),
        "symmetries.rotation[0].circle.center must be a list of 3 numbers, got None",
    ),
    (
        _model(symmetries={"rotation": [{"kp_indexes": [0], "circle": {"center": [0, 0, 0], "radius": 1}}]}),
        "symmetries.rotation[0].circle.normal must be a list of 3 numbers, got None",
    ),
    (
        _model(symmetries={"rotation": [{"kp_indexes": [0, 5]}]}),
        "symmetries.rotation[0].kp_indexes names keypoint 5 but the model has 2",
    ),
]


@pytest.mark.parametrize(("obj", "message"), REFUSALS, ids=[m[:40] for _, m in REFUSALS])
def test_each_malformed_field_is_named_exactly(obj, message):
    from kpengine.io.annotations import parse_model

    with pytest.raises(ValueError) as err:
        parse_model(obj)
    assert str(err.value) == message


def test_symmetries_and_colours_parsed_as_written():
    """What the official files hold: a reflection pair using the last keypoint (index n - 1 is
    allowed), a rotation group with ``"circle": {}`` (no circle, written back as it was) and
    one with a circle; colours as integers; fields of the model beyond the known ones kept."""
    from kpengine.io.annotations import parse_model

    obj = _model(
        [{"xyz": [0, 0, 0], "semantic_id": 0, "rgb": [10.0, 20, 30]}, {"xyz": [1, 0, 0], "semantic_id": 3}],
        symmetries={
            "reflection": [{"kp_indexes": [0, 1], "plane": "x"}],
            "rotation": [
                {"kp_indexes": [0], "is_circle": False, "circle": {}},
                {
                    "kp_indexes": [1],
                    "is_circle": True,
                    "circle": {"center": [0, 1, 0], "radius": 2, "normal": [0, 0, 1]},
                },
            ],
            "note": "kept",
        },
        source="crowd",
    )
    m = parse_model(obj)
    assert m.keypoints[0].rgb == (10, 20, 30) and all(isinstance(c, int) for c in m.keypoints[0].rgb)
    assert m.semantic_ids == [0, 3]
    (refl,) = m.symmetries.reflection
    assert refl.kp_indexes == [0, 1] and refl.extra == {"plane": "x"}
    assert m.keypoints[0].extra == {} and m.keypoints[1].extra == {}  # known fields are not extras
    plain, ring = m.symmetries.rotation
    assert plain.circle is None and plain.is_circle is False and plain.extra == {"circle": {}}
    assert ring.is_circle is True and ring.circle.center == (0, 1, 0) and ring.circle.radius == 2.0
    assert ring.circle.normal == (0, 0, 1) and ring.extra == {}
    only_reflection = parse_model(_model(symmetries={"reflection": [{"kp_indexes": [0, 1]}]})).symmetries
    assert only_reflection.rotation == [] and len(only_reflection.reflection) == 1
    kp = parse_model(
        _model(
            [{"semantic_id": 0, "pcd_info": {"point_index": 3}, "mesh_info": {"face_index": 1, "face_uv": [1, 0, 0]}}]
        )
    ).keypoints[0]
    assert kp.extra == {} and kp.point_index == 3 and kp.face_index == 1  # no empty extra sections
    assert m.extra == {"source": "crowd"} and m.symmetries.extra == {"note": "kept"}
    assert parse_model(_model(symmetries={"rotation": [{"kp_indexes": [0]}]})).symmetries.rotation[0].is_circle is False
    back = model_to_json(m)
    assert back["symmetries"]["rotation"][0]["circle"] == {} and back["source"] == "crowd"


def test_a_file_that_is_no_list_and_bad_elements_named_by_index(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"class_id": "1"}))
    with pytest.raises(DataError) as err:
        load_annotations(path)
    assert str(err.value) == f"{path}: expected a JSON list of models (the KeypointNet annotation format)"
    path.write_text(
        json.dumps([_model(), 7, _model([{"xyz": [0, 0, 0]}]), {"model_id": "q", "keypoints": []}, {"class_id": "1"}])
    )
    models, problems = load_annotations(path)
    assert [m.model_id for m in models] == ["m"]
    assert [(p.model_id, p.reason) for p in problems] == [
        ("#1", "element 1: expected an object per model, got int"),
        ("m", "element 2: keypoints[0] needs 'semantic_id'"),
        ("q", "element 3: missing field 'class_id'"),
        ("#4", "element 4: missing field 'model_id'"),
    ]
