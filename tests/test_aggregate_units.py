"""Unit tests of the aggregation steps on hand-made cases (fast)."""

import json

import numpy as np
import pytest

from kpengine.aggregate.cluster import (
    assign_noise,
    best_per_model,
    project_tsne,
    relabel_by_size,
    split_by_position,
    split_dense,
    split_shared,
)
from kpengine.aggregate.fidelity import MISS_COST, fidelity_error, model_evidence, non_minimum_suppression
from kpengine.aggregate.raw import check_clicks
from kpengine.aggregate.saliency import click_saliency, gaussian, saliency_map
from kpengine.aggregate.symmetry import (
    SymmetryConfig,
    detect_symmetries,
    model_reflection_pairs,
    model_reflection_planes,
    model_rotation_orbits,
)
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


def test_cross_model_evidence_proposes_a_keypoint_this_models_annotators_missed():
    """Model A's annotators clicked only at 100; model B's two annotators also clicked at 150.

    Same embedding on both: with ``anywhere`` A gets support at 150 from B's annotators alone
    (through the transfer), where the near-click-only F is the miss cost."""
    pts = _line()
    graph = GeodesicGraph(pts, k=4, protocol="strict")
    emb = np.zeros((200, 8))
    emb[np.arange(200), (np.arange(200) // 25) % 8] = 1.0
    near = float(gaussian(2.5 * 0.03))
    a = model_evidence(click_saliency(graph, np.array([100, 101])), np.array([0, 1]), near)
    b = model_evidence(click_saliency(graph, np.array([100, 101, 150, 151])), np.array([0, 1, 0, 1]), near)
    a.click_emb, b.click_emb = emb[[100, 101]], emb[[100, 101, 150, 151]]
    only_near = fidelity_error(emb, a, [(emb, b)])
    assert only_near[150] == MISS_COST
    f, ref = fidelity_error(emb, a, [(emb, b)], anywhere=True)
    assert ref[150] < 0.3 * MISS_COST and f[150] < MISS_COST  # B's annotators support it
    assert f[0] == pytest.approx(MISS_COST)  # nobody clicked near 0 (other embedding block)
    assert np.array_equal(f[a.near], only_near[a.near])  # unchanged where A has clicks


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
    # a square has four mirror planes: the axis planes pair opposite corners, the diagonal
    # planes (vertical, at 45 degrees) pair neighbouring ones
    assert sorted(tuple(g.kp_indexes) for g in syms[0].reflection) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    axis_only = detect_symmetries(kps, ids, [cloud] * 4, SymmetryConfig(min_plane_pairs=99))
    assert sorted(tuple(g.kp_indexes) for g in axis_only[0].reflection) == [(0, 2), (1, 3)]  # corners on the axes


def _round_table(rng: np.random.Generator, radius: float = 0.4, n: int = 2048) -> np.ndarray:
    """A round table's surface: a top disc (y = 0.7) with its rim wall, and four square-placed legs."""
    k = n // 2
    r, a = radius * np.sqrt(rng.uniform(0, 1, k)), rng.uniform(0, 2 * np.pi, k)
    top = np.stack([r * np.cos(a), np.full(k, 0.7), r * np.sin(a)], axis=1)
    a = rng.uniform(0, 2 * np.pi, n // 4)
    rim = np.stack([radius * np.cos(a), rng.uniform(0.67, 0.7, len(a)), radius * np.sin(a)], axis=1)
    legs = []
    for x, z in [(0.2, 0.2), (-0.2, 0.2), (-0.2, -0.2), (0.2, -0.2)]:
        m = n // 16
        legs.append(np.stack([x + rng.normal(0, 0.01, m), rng.uniform(0, 0.7, m), z + rng.normal(0, 0.01, m)], 1))
    return np.concatenate([top, rim, *legs])


def test_round_table_top_keypoints_form_a_circle_its_legs_do_not():
    """KeypointNet §3.5: found from the keypoints (the whole cloud is not rotation invariant)."""
    rng = np.random.default_rng(0)
    kps, ids, clouds = [], [], []
    for i in range(4):
        cloud = _round_table(rng) + np.array([0.05 * i, 0.0, -0.03 * i])  # off-centre: axis from the keypoints
        angles = np.array([0.3, 1.4, 3.0, 4.6]) + 0.1 * i  # rim keypoints, not evenly spaced
        rim = np.stack([0.4 * np.cos(angles), np.full(4, 0.7), 0.4 * np.sin(angles)], axis=1)
        feet = np.array([[0.2, 0.0, 0.2], [-0.2, 0.0, 0.2], [-0.2, 0.0, -0.2], [0.2, 0.0, -0.2]])
        kps.append(np.vstack([rim, feet]) + np.array([0.05 * i, 0.0, -0.03 * i]))
        ids.append(np.arange(8))
        clouds.append(cloud)
    syms = detect_symmetries(kps, ids, clouds)
    for sym in syms:
        by_set = {tuple(sorted(g.kp_indexes)): g for g in sym.rotation}
        assert by_set[(0, 1, 2, 3)].is_circle
        assert abs(by_set[(0, 1, 2, 3)].circle.radius - 0.4) < 0.02
        assert by_set[(4, 5, 6, 7)].is_circle is False  # the feet: a 4-fold orbit, not a round surface


def test_reflection_plane_of_any_vertical_orientation():
    """Three pairs mirrored across a vertical plane at 30 degrees, off the bounding-box centre."""
    n = np.array([np.cos(np.pi / 6), 0.0, np.sin(np.pi / 6)])
    left = np.array([[0.3, 0.1, 0.0], [0.25, 0.5, 0.2], [0.4, 0.3, -0.25]])
    offset = -0.05
    right = left - 2 * (left @ n - offset)[:, None] * n
    xyz = np.vstack([left, right])
    planes = model_reflection_planes(xyz, np.zeros(3), SymmetryConfig(axes=()))
    assert any(sorted(p) == [(0, 3), (1, 4), (2, 5)] and abs(abs(normal @ n) - 1) < 1e-6 for normal, _, p in planes)
    # the axis planes through the centre (the only ones tried before) see none of these pairs
    assert (
        model_reflection_pairs(xyz, np.zeros(3), 0, 0.05) == []
        and model_reflection_pairs(xyz, np.zeros(3), 2, 0.05) == []
    )
    syms = detect_symmetries([xyz] * 3, [np.arange(6)] * 3, [xyz] * 3, SymmetryConfig(axes=()))
    assert sorted(tuple(g.kp_indexes) for g in syms[0].reflection) == [(0, 3), (1, 4), (2, 5)]


def test_split_by_position_separates_ids_the_embedding_merged():
    """One cluster, every model holds 4 candidates (a round rim's 4 points): split in 4 by position."""
    rng = np.random.default_rng(0)
    corners = np.array([[0.3, 0, 0], [-0.3, 0, 0], [0, 0, 0.3], [0, 0, -0.3]])
    pos = np.concatenate([corners + rng.normal(0, 0.02, (4, 3)) for _ in range(10)])
    models = np.repeat(np.arange(10), 4)
    truth = np.tile(np.arange(4), 10)
    out = split_by_position(pos, np.zeros(40, np.int64), models, min_size=4, rate=0.25)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, out) == 1.0
    # one candidate per model: nothing to split
    assert split_by_position(pos[::4], np.zeros(10, np.int64), models[::4], 4, 0.25).tolist() == [0] * 10


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


def test_crowd_problems_name_a_changing_numbering_a_single_click_and_a_skipped_id():
    from kpengine.aggregate.checks import crowd_problems

    kp = np.array([[0.0, 0, 0], [1.0, 0, 0]])  # id 0 at x=0, id 1 at x=1 on every model
    classes = np.array([[0, 0], [1, 0]])  # label 0: annotator "flip" number 0; label 1: "steady" number 0
    clicks, keypoints = [], []
    for m in range(12):
        flip_at = kp[m % 2]  # "flip" clicks id 0 on even models, id 1 on odd ones, always as number 0
        clicks.append((np.stack([flip_at, kp[0]]), np.array([0, 1]), np.array([0, 1])))
        keypoints.append((kp, np.array([0, 1])))
    clicks.append((kp[:1], np.array([1]), np.array([1])))  # model 12: one click
    keypoints.append((kp[:1], np.array([0])))  # ... and id 1, on every other model, missing
    names = [f"m{i}" for i in range(13)]
    probs = [str(p) for p in crowd_problems(names, clicks, keypoints, ["flip", "steady"], classes)]
    assert any("'flip'" in p and "changes meaning" in p for p in probs)
    assert not any("'steady'" in p for p in probs)
    assert any("m12" in p and "only one click" in p for p in probs)
    assert any("m12" in p and "[1]" in p and "nobody clicked" in p for p in probs)  # id 1: 12 of 13 models
    assert sum("nobody clicked" in p for p in probs) == 1


def test_split_dense_separates_chained_islands_of_several_ids():
    """Four t-SNE islands 1.5 apart, each holding one candidate of each of 10 models: one DBSCAN cluster at eps 1.6."""
    from sklearn.cluster import DBSCAN
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(1)
    xy = np.concatenate([rng.normal((1.5 * i, 0.0), 0.1, (10, 2)) for i in range(4)])
    models, truth = np.tile(np.arange(10), 4), np.repeat(np.arange(4), 10)
    chained = DBSCAN(eps=1.6, min_samples=4).fit_predict(xy)
    assert (chained == 0).all()  # what the fixed eps does
    assert adjusted_rand_score(truth, split_dense(xy, chained, models, 1.6, 4, 0.25)) == 1.0
    # one candidate per model in the cluster: no duplicates, left alone
    assert split_dense(xy[:10], chained[:10], np.arange(10), 1.6, 4, 0.25).tolist() == [0] * 10


def test_embedding_entropy_is_renyi_quadratic_entropy_of_unit_embeddings():
    """H_2 = -log mean_{i != j} exp(-t d_ij^2) on unit vectors, by hand (t = 2): one point
    repeated -> 0; two orthogonal -> 2t = 4; two opposite -> 4t = 8; two equal plus one
    opposite: ordered pairs 2 x exp(0) + 4 x exp(-8) over 6. Scale does not matter (unit
    vectors), and a gradient step on -H pushes two close embeddings apart."""
    import math

    import torch

    from kpengine.aggregate.embedding import EmbeddingConfig, embedding_entropy

    e = torch.eye(3)
    assert embedding_entropy(e[[0, 0, 0]]).item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_entropy(e[[0, 1]]).item() == pytest.approx(4.0, abs=1e-5)
    assert embedding_entropy(torch.stack([e[0], -e[0]])).item() == pytest.approx(8.0, abs=1e-5)
    three = torch.stack([e[0], 5 * e[0], -e[0]])
    assert embedding_entropy(three).item() == pytest.approx(-math.log((2 + 4 * math.exp(-8)) / 6), abs=1e-5)
    g = torch.tensor([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0]], requires_grad=True)
    (-embedding_entropy(g)).backward()
    with torch.no_grad():
        moved = g - 0.1 * g.grad
    before = torch.nn.functional.normalize(g.detach(), dim=1)
    after = torch.nn.functional.normalize(moved, dim=1)
    assert (after[0] - after[1]).norm() > (before[0] - before[1]).norm()
    with pytest.raises(ValueError, match="anti_collapse"):
        EmbeddingConfig(anti_collapse="hope")
