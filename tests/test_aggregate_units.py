"""Unit tests of the aggregation steps on hand-made cases (fast)."""

import json

import numpy as np
import pytest

from kpengine.aggregate.cluster import best_per_model, relabel_by_size
from kpengine.aggregate.fidelity import non_minimum_suppression
from kpengine.aggregate.raw import Click, check_clicks, load_clicks
from kpengine.aggregate.saliency import click_saliency, gaussian, saliency_map
from kpengine.aggregate.symmetry import detect_symmetries, model_reflection_pairs, model_rotation_orbits
from kpengine.errors import DataError
from kpengine.geometry.geodesic import GeodesicGraph


def _line(n=200, step=0.005):
    x = np.arange(n) * step
    return np.stack([x, np.zeros(n), np.zeros(n)], axis=1)


def test_gaussian_saliency_is_one_at_the_click_and_falls_off_geodesically():
    pts = _line()
    graph = GeodesicGraph(pts, k=4, protocol="strict")
    s = click_saliency(graph, np.array([100]), sigma=0.03)[0]
    assert s[100] == pytest.approx(1.0)
    assert s[106] == pytest.approx(np.exp(-0.5), rel=1e-6)  # 0.03 away = one sigma
    assert s[120] == 0.0  # 0.10 > 3 sigma: cut off
    assert gaussian(np.inf) == 0.0
    with pytest.raises(ValueError, match="strict"):
        click_saliency(GeodesicGraph(pts, k=4), np.array([1]))


def test_crowd_saliency_takes_each_annotators_best_click_then_averages():
    per_click = np.array([[1.0, 0.2], [0.5, 0.9], [0.0, 0.4]])
    assert saliency_map(per_click, np.array([0, 0, 1])).tolist() == pytest.approx([0.5, 0.65])


def test_non_minimum_suppression_keeps_local_minima_of_the_neighbourhood():
    pts = _line()
    graph = GeodesicGraph(pts, k=4, protocol="strict")
    f = np.cos(np.arange(200) / 200 * 4 * np.pi)  # minima at 50 and 150
    kept = non_minimum_suppression(graph, f, np.arange(200), neighbours=55, radius=0.5)
    assert kept.tolist() == [50, 150]
    kept = non_minimum_suppression(graph, f, np.arange(200), neighbours=5, radius=0.5)
    assert {50, 150} <= set(kept.tolist())  # small neighbourhoods also keep the ends
    assert non_minimum_suppression(graph, np.zeros(200), np.arange(3), neighbours=55).tolist() == [0]  # ties


def test_cluster_helpers():
    assert relabel_by_size(np.array([5, 5, -1, 2, 2, 2, 7])).tolist() == [1, 1, -1, 0, 0, 0, 2]
    keep = best_per_model(np.array([0, 0, 0, -1]), np.array([0, 0, 1, 0]), np.array([0.5, 0.2, 0.9, 0.0]))
    assert keep.tolist() == [False, True, True, False]


def test_reflection_and_rotation_on_hand_made_keypoints():
    centre = np.zeros(3)
    xyz = np.array([[-0.3, 0.1, 0.2], [0.3, 0.1, 0.2], [0.0, 0.5, 0.0]])
    assert model_reflection_pairs(xyz, centre, 0, 0.01) == [(0, 1)]
    square = np.array([[0.3, 0.0, 0.0], [0.0, 0.0, 0.3], [-0.3, 0.0, 0.0], [0.0, 0.0, -0.3]])
    assert model_rotation_orbits(square, centre, 4, 0.01) == [(0, 1, 2, 3)]
    assert model_rotation_orbits(square, centre, 2, 0.01) == [(0, 2), (1, 3)]
    # category level: 4 models of a square table (ids 0-3 at the corners) + a centre point id 4
    rng = np.random.default_rng(0)
    cloud = rng.uniform(-0.4, 0.4, (500, 3))
    cloud[:, 1] = 0
    kps = [np.vstack([square * (1 + 0.1 * i), [[0, 0.2, 0]]]) for i in range(4)]
    ids = [np.array([0, 1, 2, 3, 4])] * 4
    syms = detect_symmetries(kps, ids, [cloud] * 4)
    assert [g.kp_indexes for g in syms[0].rotation] == [[0, 1, 2, 3]]
    assert sorted(tuple(g.kp_indexes) for g in syms[0].reflection) == [(0, 2), (1, 3)]  # corners on the axes


def test_raw_file_validation_messages(tmp_path):
    good = {"model_id": "m1", "annotator": "a", "kp_index": 0, "xyz": [0, 0, 0]}
    path = tmp_path / "raw.json"
    path.write_text(json.dumps([good, {**good, "xyz": [0, 0]}, {**good, "kp_index": -1}, {"annotator": "b"}, 3]))
    clicks, problems = load_clicks(path)
    assert len(clicks) == 1
    text = "\n".join(str(p) for p in problems)
    assert "'xyz' must be a list of 3 numbers" in text
    assert "'kp_index' must be an integer >= 0" in text
    assert "missing field 'model_id'" in text and "expected an object" in text
    path.write_text("{}")
    with pytest.raises(DataError, match="expected a JSON list of clicks"):
        load_clicks(path)


def test_check_clicks_drops_unknown_models_duplicates_and_extra_points():
    c = [Click("m1", "a", k, (0.0, 0.0, float(k))) for k in range(26)]
    c += [Click("m1", "a", 0, (1.0, 1.0, 1.0)), Click("ghost", "a", 0, (0, 0, 0)), Click("m2", "b", 0, (0, 0, 0))]
    kept, problems = check_clicks(c, ["m1", "m2"])
    assert len(kept) == 25  # 24 of a on m1 + 1 of b on m2
    text = "\n".join(str(p) for p in problems)
    assert "model ghost" in text and "not in the dataset" in text
    assert "duplicate click" in text
    assert "more than 24 points" in text and "ignored 2" in text
    assert "annotator b annotated this model only" in text
