"""Unit tests of the aggregation steps on hand-made cases (fast)."""

import json

import numpy as np
import pytest

from kpengine.aggregate.cluster import assign_noise, best_per_model, project_tsne, relabel_by_size, split_shared
from kpengine.aggregate.fidelity import MISS_COST, fidelity_error, model_evidence, non_minimum_suppression
from kpengine.aggregate.raw import check_clicks
from kpengine.aggregate.saliency import click_saliency, gaussian, saliency_map
from kpengine.aggregate.symmetry import detect_symmetries, model_reflection_pairs, model_rotation_orbits
from kpengine.errors import DataError
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.io.clicks import Click, load_clicks


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
    # two minima 0.05 apart: the radius, not the 55 neighbours (0.14 on this line), decides
    g = np.ones(200)
    g[[60, 70]] = [0.0, 0.1]
    assert non_minimum_suppression(graph, g, np.arange(40, 100), neighbours=55, radius=0.02).tolist() == [60, 70]
    assert non_minimum_suppression(graph, g, np.arange(40, 100), neighbours=55, radius=0.1).tolist() == [60]


def test_fidelity_own_model_term_puts_the_minimum_on_the_clicks():
    """Two models on a line, same embedding; clicks of two annotators at 100 (and 140 by one only)."""
    pts = _line()
    graph = GeodesicGraph(pts, k=4, protocol="strict")
    emb = np.zeros((200, 8))
    emb[np.arange(200), (np.arange(200) // 25) % 8] = 1.0  # blocks of 25 points share an embedding
    clicks, ann = np.array([100, 102, 140]), np.array([0, 1, 0])
    ev = model_evidence(click_saliency(graph, clicks), ann, float(gaussian(2.5 * 0.03)))
    ev.click_emb = emb[clicks]
    f = fidelity_error(emb, ev, [(emb, ev)], self_weight=0.5)
    assert f[0] == MISS_COST  # far from every click
    assert np.argmin(f) in (100, 101, 102) and f[101] < f[140] < MISS_COST
    only_refs = fidelity_error(emb, ev, [(emb, ev)], self_weight=0.0)
    # without the own-model term F is flat over the embedding block 100-124: the minimum is not localised
    assert np.ptp(only_refs[100:115]) < 1e-9  # (points within the near-click set)


def test_fidelity_support_stays_in_unit_range_with_negative_features():
    """Opposite embeddings (cosine -1, distance 2, possible after DGCNN's LeakyReLU) cost no more than a miss."""
    pts = _line()
    graph = GeodesicGraph(pts, k=4, protocol="strict")
    clicks, ann = np.array([100, 102]), np.array([0, 1])
    ev = model_evidence(click_saliency(graph, clicks), ann, float(gaussian(2.5 * 0.03)))
    emb = np.zeros((200, 4))
    emb[:, 0] = 1.0
    ev.click_emb = -emb[clicks]  # every point's embedding opposite to the clicked ones
    f = fidelity_error(emb, ev, [], self_weight=1.0)
    assert f.max() <= MISS_COST + 1e-12  # uncapped, the clicked points themselves would score 2 > sqrt(2)
    assert np.allclose(f[ev.near], MISS_COST)
    support = 1.0 - f / MISS_COST
    assert support.min() >= -1e-12


def test_cluster_helpers():
    assert relabel_by_size(np.array([5, 5, -1, 2, 2, 2, 7])).tolist() == [1, 1, -1, 0, 0, 0, 2]
    keep = best_per_model(np.array([0, 0, 0, -1]), np.array([0, 0, 1, 0]), np.array([0.5, 0.2, 0.9, 0.0]))
    assert keep.tolist() == [False, True, True, False]
    xy = np.array([[0.0, 0.0], [0.1, 0.0], [0.3, 0.0], [5.0, 5.0]])
    assert assign_noise(xy, np.array([0, 0, -1, -1]), 0.5).tolist() == [0, 0, 0, -1]
    # one cluster holding two ids: every model has a candidate on the left and one on the right
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(0, 0.1, (10, 2)), rng.normal((2, 0), 0.1, (10, 2))])
    models = np.concatenate([np.arange(10), np.arange(10)])
    split = split_shared(xy, np.zeros(20, np.int64), models, min_size=4, rate=0.25)
    assert len(set(split[:10])) == 1 and len(set(split[10:])) == 1 and split[0] != split[10]
    assert split_shared(xy, np.zeros(20, np.int64), np.arange(20), 4, 0.25).tolist() == [0] * 20  # no duplicates


def test_tsne_separates_well_separated_classes_deterministically():
    from sklearn.cluster import DBSCAN
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 32))
    truth = rng.integers(0, 6, 120)
    emb = centres[truth] + 0.05 * rng.normal(size=(120, 32))
    xy = project_tsne(emb, iterations=400)
    assert xy.shape == (120, 2) and np.isfinite(xy).all()
    assert adjusted_rand_score(truth, DBSCAN(eps=2.0, min_samples=3).fit_predict(xy)) > 0.95
    assert np.array_equal(xy, project_tsne(emb, iterations=400))


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


def test_saliency_map_is_a_mean_over_all_the_models_annotators() -> None:
    """Annotator 0 clicked twice (max per point), annotator 1 once; 4 people saw the model, so the two
    who did not click count as zeros: (max(a, b) + c) / 4, worked by hand."""

    per_click = np.array([[1.0, 0.2, 0.0], [0.1, 0.6, 0.0], [0.0, 0.4, 0.8]])
    annotator = np.array([0, 0, 1])
    np.testing.assert_allclose(saliency_map(per_click, annotator, 4), [1.0 / 4, 1.0 / 4, 0.8 / 4])
    np.testing.assert_allclose(saliency_map(per_click, annotator), [1.0 / 2, 1.0 / 2, 0.8 / 2])


def test_non_minimum_suppression_neighbourhood_counts_the_neighbours_not_the_point() -> None:
    """40 points on a line 0.01 apart (geodesic = distance along it). Point 0 (value 0.5) has its
    3rd-nearest neighbour, point 3, lower (0.1): with 3 neighbours it is suppressed, with 2 kept."""

    pts = np.stack([np.arange(40) * 0.01, np.zeros(40), np.zeros(40)], axis=1)
    graph = GeodesicGraph(pts, protocol="strict")
    values = np.ones(40)
    values[0], values[3] = 0.5, 0.1
    assert non_minimum_suppression(graph, values, [0], neighbours=3, radius=0.06).tolist() == []
    assert non_minimum_suppression(graph, values, [0], neighbours=2, radius=0.06).tolist() == [0]
    assert non_minimum_suppression(graph, values, [0], neighbours=3, radius=0.025).tolist() == [0]  # 0.03 > radius
