"""MvDeCor pieces (kpengine.image.multiview): matching, InfoNCE, regions, voting, bad input, a tiny run."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from kpengine.data.shots import draw_shots
from kpengine.errors import DataError
from kpengine.image.multiview.backproject import keypoints_from_probabilities, point_probabilities, vote
from kpengine.image.multiview.correspond import match_pixels
from kpengine.io.multiview import ShapeViews, load_shape_views, save_shape_views
from kpengine.learn.losses import info_nce
from kpengine.metrics.regions import region_iou, region_labels

FX = 30.0
H = W = 12


def plane_views(occluder_cols: tuple[int, int] | None = None) -> ShapeViews:
    """Two cameras looking along +z at the plane z = 2: A at the origin, B moved +0.2 in x.
    A pixel (i, j) of A sees X = ((j - cx) 2 / fx, (i - cy) 2 / fx, 2); B sees it at column
    fx (X_x - 0.2) / 2 + cx = j - 3 (fx = 30), same row. ``occluder_cols``: columns of B where a
    nearer surface (z = 1) hides the plane."""
    depth = np.full((2, H, W), 2.0, np.float32)
    if occluder_cols is not None:
        depth[1, :, occluder_cols[0] : occluder_cols[1]] = 1.0
    index = np.zeros((2, H, W), np.int16)
    return ShapeViews(
        model_id="plane",
        color=np.zeros((2, H, W, 3), np.uint8),
        normals=np.zeros((2, H, W, 3), np.float32),
        depth=depth,
        index=index,
        intrinsics=np.array([FX, FX, (W - 1) / 2, (H - 1) / 2]),
        R=np.stack([np.eye(3), np.eye(3)]),
        t=np.array([[0.0, 0.0, 0.0], [-0.2, 0.0, 0.0]]),
    )


def test_location_is_the_ray_plane_intersection() -> None:
    v = plane_views()
    cx = (W - 1) / 2
    loc = v.location(0)
    assert loc[4, 7] == pytest.approx([(7 - cx) * 2 / FX, (4 - cx) * 2 / FX, 2.0], abs=1e-6)
    # B's pixel (4, 4) sees x = (4 - cx) 2 / fx + 0.2 in the world
    assert v.location(1)[4, 4] == pytest.approx([(4 - cx) * 2 / FX + 0.2, (4 - cx) * 2 / FX, 2.0], abs=1e-6)


def test_matches_of_two_known_cameras_are_three_columns_apart() -> None:
    v = plane_views()
    pa, pb = match_pixels(v.location(0), v.mask[0], v.location(1), v.mask[1], max_distance=0.01)
    ia, ja = np.divmod(pa, W)
    ib, jb = np.divmod(pb, W)
    assert np.array_equal(ia, ib)
    assert np.array_equal(jb, ja - 3)
    # every pixel of A whose point B sees (columns 3..11), and no other
    assert sorted(set(ja.tolist())) == list(range(3, W))
    assert len(pa) == H * (W - 3)


def test_a_point_hidden_in_the_other_view_has_no_match() -> None:
    v = plane_views(occluder_cols=(5, 8))  # B's columns 5, 6, 7 see the occluder
    pa, pb = match_pixels(v.location(0), v.mask[0], v.location(1), v.mask[1], max_distance=0.01)
    ja = pa % W
    assert sorted(set(ja.tolist())) == [3, 4, 5, 6, 7, 11]  # A's columns 8, 9, 10 map to the hidden 5, 6, 7
    assert not np.isin(pb % W, [5, 6, 7]).any()


def test_info_nce_hand_computed() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits / T=0.5: row 0 [2, 1.2], row 1 [0, 1.6]
    expected = 0.5 * (math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(-1.6)))
    assert info_nce(a, p, 0.5).item() == pytest.approx(expected, rel=1e-6)
    assert info_nce(3 * a, 0.5 * p, 0.5).item() == pytest.approx(expected, rel=1e-6)  # unit-normalised inside
    # swapping the positives makes every positive a negative: a larger loss
    assert info_nce(a, p.flip(0), 0.5).item() > expected + 1.0


def test_info_nce_gradient_separates_the_positive_from_the_negative() -> None:
    a = torch.tensor([[1.0, 0.2], [0.1, 1.0]], requires_grad=True)
    p = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    info_nce(a, p, 0.1).backward()
    step = a - 0.01 * a.grad
    cos = torch.nn.functional.cosine_similarity

    def margin(x: torch.Tensor) -> torch.Tensor:  # own positive minus the other row's
        return cos(x, p) - cos(x, p.flip(0))

    assert (margin(step) > margin(a)).all()


def test_region_labels_on_a_line_hand_checked() -> None:
    pts = np.zeros((40, 3))
    step = 2.0**-7  # exact in binary: path lengths are sums of exact edge lengths
    pts[:, 0] = np.arange(40) * step  # geodesic = |i - j| * step along the line
    labels = region_labels(pts, np.array([0, 10]), np.array([3, 5]), background=9, radius=3.5 * step)
    expected = np.full(40, 9)
    expected[0:4] = 3
    expected[7:14] = 5
    assert np.array_equal(labels, expected)
    labels = region_labels(pts, np.array([0, 10]), np.array([3, 5]), background=9, radius=5 * step)
    assert labels[5] == 3  # equidistant (5 steps from both): the keypoint listed first
    from kpengine.metrics.regions import region_distances

    labels, dist = region_distances(pts, np.array([0, 10]), np.array([3, 5]), background=9, radius=3.5 * step)
    assert np.array_equal(labels, expected)
    assert dist[[0, 3, 7, 10, 13]] == pytest.approx(np.array([0, 3, 3, 0, 3]) * step)
    assert np.isinf(dist[[4, 6, 14, 39]]).all()
    assert region_iou(np.array([3, 3, 9, 5]), np.array([3, 9, 9, 5]), 9) == pytest.approx((0.5 + 1.0) / 2)


def test_voting_on_a_known_case() -> None:
    points = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0.9, 0.1, 0]])
    index = np.array([[[0, 1], [-1, 1]], [[0, 2], [2, -1]]])  # 2 views of 2 x 2; point 3 never seen
    probs = np.zeros((2, 2, 2, 2))
    probs[0, :, 0, 0] = [0.9, 0.1]  # view 0 pixel (0,0) -> point 0
    probs[0, :, 0, 1] = [0.2, 0.8]  # -> point 1
    probs[0, :, 1, 1] = [0.4, 0.6]  # -> point 1
    probs[1, :, 0, 0] = [0.7, 0.3]  # -> point 0
    probs[1, :, 0, 1] = [0.5, 0.5]  # -> point 2
    probs[1, :, 1, 0] = [0.1, 0.9]  # -> point 2
    probs[0, :, 1, 0] = [5.0, 5.0]  # off the object: must not count
    votes, counts = vote(index, probs, 4)
    assert counts.tolist() == [2, 2, 2, 0]
    assert votes == pytest.approx(np.array([[1.6, 0.4], [0.6, 1.4], [0.6, 1.4], [0.0, 0.0]]))
    p = point_probabilities(points, votes, counts)
    assert p[3] == pytest.approx(p[1])  # unseen point 3 copies its nearest seen point (1)
    # id 0: region {0}; id 1: region {1, 2, 3} with weights 0.7 each: centroid (0.633, 0.367) -> point 3
    assert keypoints_from_probabilities(points, p, 2) == {0: 0, 1: 3}


def test_a_one_sided_region_puts_its_keypoint_at_the_end_not_the_centroid() -> None:
    # points at x = 0, 0.01, ..., 0.10 on a line; the region of id 0 (p = 0.9) is x <= 0.04,
    # the half-ball of a keypoint at the end x = 0 (a corner). Balls of radius 0.045:
    # at x = 0 they hold the 5 region points: 5 (2 0.9 - 1) = 4.0; at x = 0.01 also x = 0.05
    # (p = 0, -1): 3.0; at x = 0.02: 2.0. The weighted centroid is x = 0.02 (point 2).
    points = np.zeros((11, 3))
    points[:, 0] = np.arange(11) * 0.01
    p = np.zeros((11, 3))
    p[:5] = [0.9, 0.05, 0.05]
    p[5:] = [0.0, 0.1, 0.9]
    assert keypoints_from_probabilities(points, p, 2, radius=0.045)[0] == 0
    assert keypoints_from_probabilities(points, p, 2)[0] == 2
    # id 1 has no region (label 1 nowhere): its most probable point, either way
    assert keypoints_from_probabilities(points, p, 2, radius=0.045)[1] == 5


def test_empty_renders_and_impossible_shots_are_refused(tmp_path) -> None:
    v = plane_views()
    v.index[1] = -1
    with pytest.raises(DataError, match=r"model plane.*views \[1\].*see nothing"):
        save_shape_views(tmp_path / "x.npz", v)
    with pytest.raises(DataError, match="no view sees any point"):
        point_probabilities(np.zeros((3, 3)), np.zeros((3, 2)), np.zeros(3), "m1")
    with pytest.raises(DataError, match="--shots 12 is larger than bed/train, which has 11 usable shapes"):
        draw_shots([f"m{i}" for i in range(11)], 12, 0, "bed/train")
    assert draw_shots([f"m{i}" for i in range(11)], 4, 3) == draw_shots([f"m{i}" for i in reversed(range(11))], 4, 3)


def test_view_file_round_trip_and_bad_fields(tmp_path) -> None:
    v = plane_views()
    save_shape_views(tmp_path / "p.npz", v)
    back = load_shape_views(tmp_path / "p.npz", n_points=1)
    assert back.model_id == "plane" and np.array_equal(back.depth, v.depth)
    with pytest.raises(DataError, match=r"field index out of range"):
        v.index[0, 0, 0] = 7
        save_shape_views(tmp_path / "q.npz", v)
        load_shape_views(tmp_path / "q.npz", n_points=5)
    np.savez(tmp_path / "bad.npz", color=np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="lacks field"):
        load_shape_views(tmp_path / "bad.npz")


def _need_gl() -> None:
    from kpengine.render.gl import INSTALL_HINT, gl_available

    if not gl_available():
        if os.environ.get("CI"):
            pytest.fail(f"no OpenGL context: {INSTALL_HINT}; CI must have it")
        pytest.skip(f"no OpenGL context: {INSTALL_HINT}")


def _tiny(task: str, root, category: str, views, **kw):
    from kpengine.image.multiview.training import MultiviewConfig
    from kpengine.image.tasks.multiview_fewshot import FewShotConfig

    cls = MultiviewConfig if task == "multiview_pretrain" else FewShotConfig
    common = dict(size=32, n_views=4, widths=[4, 8], embedding_dim=8, pixels=32, epochs=1, batch_size=4)
    return cls(task=task, data=str(root), category=category, views=str(views), **common, **kw)


def test_tiny_pretrain_fewshot_predict_and_a_run_of_another_category(sample_root, tmp_path) -> None:
    _need_gl()
    from kpengine.image.tasks.multiview_fewshot import MultiviewFewShotTask
    from kpengine.image.tasks.multiview_pretrain import MultiviewPretrainTask
    from kpengine.learn.inference import load_run
    from kpengine.learn.predict import predict_split
    from kpengine.learn.runs import train_run

    for cat in ("mug", "chair"):
        cfg = _tiny("multiview_pretrain", sample_root, cat, tmp_path / f"views-{cat}")
        summary = train_run(MultiviewPretrainTask(cfg), tmp_path / f"pre-{cat}", progress=False)
        assert summary["epochs"] == 1 and np.isfinite(summary["best_val_loss"])
    meta = json.loads((tmp_path / "views-mug" / "meta.json").read_text())
    assert meta["size"] == 32 and meta["n_views"] == 4

    wrong = _tiny(
        "multiview_fewshot", sample_root, "mug", tmp_path / "views-mug", shots=2, init=str(tmp_path / "pre-chair")
    )
    with pytest.raises(DataError, match="pretraining run is of category 'chair'; this run is 'mug'"):
        train_run(MultiviewFewShotTask(wrong), tmp_path / "fs-wrong", progress=False)
    too_many = _tiny("multiview_fewshot", sample_root, "mug", tmp_path / "views-mug", shots=500)
    with pytest.raises(DataError, match="--shots 500 is larger than"):
        train_run(MultiviewFewShotTask(too_many), tmp_path / "fs-many", progress=False)

    cfg = _tiny(
        "multiview_fewshot", sample_root, "mug", tmp_path / "views-mug", shots=2, init=str(tmp_path / "pre-mug")
    )
    train_run(MultiviewFewShotTask(cfg), tmp_path / "fs", progress=False)
    _, state = load_run(tmp_path / "fs")
    assert len(state["shots_ids"]) == 2
    task, preds = predict_split(tmp_path / "fs", sample_root, "mug", "test")
    assert task == "correspondence" and preds
    n_classes = state["n_classes"]
    for ids in preds.values():
        assert sorted(int(s) for s in ids) == list(range(n_classes))
        assert all(0 <= i < 2048 for i in ids.values())

    # the distance head (on by default): one more output channel; without it, the labels only
    model, _ = load_run(tmp_path / "fs")
    assert model.head.out_channels == n_classes + 2
    cfg = _tiny("multiview_fewshot", sample_root, "mug", tmp_path / "views-mug", shots=2, distance_weight=0.0)
    train_run(MultiviewFewShotTask(cfg), tmp_path / "fs-nodist", progress=False)
    model, state = load_run(tmp_path / "fs-nodist")
    assert model.head.out_channels == n_classes + 1
    task, preds = predict_split(tmp_path / "fs-nodist", sample_root, "mug", "test")
    assert all(sorted(int(s) for s in ids) == list(range(n_classes)) for ids in preds.values())


def test_the_distance_decoder_takes_the_region_point_of_least_predicted_distance() -> None:
    # a line of 6 points; id 0's region is points 1..4 (p 0.9); predicted distances put the
    # keypoint at point 3 although the region's ball centre would be 2 or 3; point 5, outside
    # the region, has the smallest distance of all and must not be taken
    points = np.zeros((6, 3))
    points[:, 0] = np.arange(6) * 0.01
    p = np.array([[0.1, 0.9], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    distance = np.array([0.9, 0.6, 0.3, 0.1, 0.4, 0.0])
    assert keypoints_from_probabilities(points, p, 1, radius=0.025, distance=distance) == {0: 3}


def test_point_task_shots_train_on_the_drawn_subset_without_validation(sample_root) -> None:
    from kpengine.data.dataset import KeypointNetDataset
    from kpengine.learn.config import TrainConfig
    from kpengine.learn.tasks.correspondence import CorrespondenceTask

    cfg = TrainConfig(task="correspondence", data=str(sample_root), category="mug", shots=3, seed=4)
    data = CorrespondenceTask(cfg).data()
    ids = KeypointNetDataset(sample_root, "mug", "train").model_ids
    assert sorted(s.model_id for s in data.train.shapes) == draw_shots(ids, 3, 4)
    assert data.val is None
    with pytest.raises(DataError, match=f"--shots 99 is larger than mug/train, which has {len(ids)} usable shapes"):
        CorrespondenceTask(TrainConfig(task="correspondence", data=str(sample_root), category="mug", shots=99)).data()


def test_nearest_embedding_labels_and_prototype_keypoints_hand_checked() -> None:
    from kpengine.image.multiview.transfer import nearest_labels, prototype_keypoints

    bank = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    labels = np.array([0, 0, 2, 2, 1])
    query = np.array([[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8]])
    # query 2 = (-0.6, 0.8): cosines -0.6, 0, 0.8, 0.28, 0.6 with the bank; its 2 nearest are
    # bank 2 (label 2, 0.8) and bank 4 (label 1, 0.6): label 2
    assert nearest_labels(query, bank, labels, k=2).tolist() == [0, 2, 2]
    assert nearest_labels(query[:1], bank, labels, k=1).tolist() == [0]
    assert prototype_keypoints(query, {5: np.array([0.0, 1.0]), 7: np.array([-1.0, 0.0])}) == {5: 1, 7: 2}


def test_widened_input_leaves_the_output_unchanged_and_learns_the_new_channels() -> None:
    from kpengine.image.multiview.unet import UNet, widen_input

    torch.manual_seed(0)
    net = UNet(7, (4, 8), 6).eval()
    x = torch.randn(2, 7, 16, 16)
    before = net(x).detach()
    widen_input(net, 3)
    assert net.down[0][0].weight.shape == (4, 10, 3, 3)
    # the new channels hold anything (here large values): zero weights ignore them
    after = net(torch.cat([x, 50 * torch.randn(2, 3, 16, 16)], dim=1))
    assert torch.allclose(after, before, atol=1e-6)
    after.square().sum().backward()
    assert net.down[0][0].weight.grad[:, 7:].abs().sum() > 0  # and fine-tuning can use them


def test_position_channels_are_the_world_points_of_the_pixels() -> None:
    from kpengine.image.multiview.unet import position_inputs

    v = plane_views()
    pos = position_inputs(v, [1, 0])
    assert pos.shape == (2, 3, H, W)
    c = (W - 1) / 2
    # view 0 (listed second) pixel (row 4, col 7) sees ((7 - c) 2 / fx, (4 - c) 2 / fx, 2); view 1
    # is moved +0.2 in x, so its pixel sees 0.2 further along x
    assert pos[1, :, 4, 7] == pytest.approx([(7 - c) * 2 / FX, (4 - c) * 2 / FX, 2.0], abs=1e-6)
    assert pos[0, :, 4, 7] == pytest.approx([(7 - c) * 2 / FX + 0.2, (4 - c) * 2 / FX, 2.0], abs=1e-6)


def test_fewshot_inputs_and_a_run_saved_before_the_position_channels_loads(tmp_path) -> None:
    from kpengine.image.multiview.training import new_unet
    from kpengine.image.multiview.unet import SegmentationNet, view_inputs
    from kpengine.image.tasks.multiview_fewshot import FewShotConfig, MultiviewFewShotTask, fewshot_inputs

    cfg = FewShotConfig(task="multiview_fewshot", data="d", category="mug", views="v", widths=[4, 8], embedding_dim=6)
    v = plane_views()
    x = fewshot_inputs(v, cfg)
    assert x.shape == (2, 10, H, W)
    assert np.array_equal(x[:, :7], view_inputs(v, "rgbnd"))
    assert x[0, 9, 3, 3] == pytest.approx(2.0)  # z of the plane
    off = FewShotConfig(**{**cfg.to_json(), "position": False})
    assert fewshot_inputs(v, off).shape == (2, 7, H, W)
    # a checkpoint whose config has no "position" nor "distance_weight" field: the 7-channel, 4-label network it was
    old = {k: val for k, val in cfg.to_json().items() if k not in ("position", "distance_weight")}
    state = {"config": old, "n_classes": 3, "model": SegmentationNet(new_unet(cfg), 4).state_dict()}
    model = MultiviewFewShotTask.load_model(state)
    assert model(torch.zeros(1, 7, 16, 16)).shape == (1, 4, 16, 16)


def test_log_pool_is_the_normalised_geometric_mean_of_the_views() -> None:
    from kpengine.image.multiview.backproject import log_pool

    # two 1 x 1 views of point 0: (0.8, 0.2) and (0.5, 0.5). Geometric mean (sqrt .4, sqrt .1),
    # whose ratio is 2: normalised (2/3, 1/3); the arithmetic mean would be (0.65, 0.35).
    index = np.zeros((2, 1, 1), np.int64)
    probs = np.array([0.8, 0.2, 0.5, 0.5]).reshape(2, 2, 1, 1)
    votes, counts = vote(index, np.log(probs), 1)
    assert log_pool(point_probabilities(np.zeros((1, 3)), votes, counts)) == pytest.approx(np.array([[2 / 3, 1 / 3]]))
    # a view sure a point is not in a region (0.01) against two that are (0.9): arithmetic
    # mean 0.603 keeps it in; the geometric one ((0.9 0.9 0.01)^(1/3) = 0.201 against
    # (0.1 0.1 0.99)^(1/3) = 0.215) puts it out
    probs = np.array([0.9, 0.1, 0.9, 0.1, 0.01, 0.99]).reshape(3, 2, 1, 1)
    votes, counts = vote(np.zeros((3, 1, 1), np.int64), np.log(probs), 1)
    p = log_pool(point_probabilities(np.zeros((1, 3)), votes, counts))[0]
    assert p[0] == pytest.approx(0.0081 ** (1 / 3) / (0.0081 ** (1 / 3) + 0.0099 ** (1 / 3)))
    assert p[0] < 0.5 < (0.9 + 0.9 + 0.01) / 3


def test_fewshot_steps_grow_with_k_above_a_floor() -> None:
    from kpengine.image.tasks.multiview_fewshot import FewShotConfig

    def epochs(**kw) -> int:
        return FewShotConfig(task="multiview_fewshot", data="d", category="bed", views="v", **kw).epochs

    # k = 5: 60 views, 8 steps of batch 8 per epoch; the floor of 600 steps -> 75 epochs
    assert epochs(shots=5) == 75
    # k = 10: 120 views, 15 steps per epoch; 60 x 10 = 600 steps -> 40 epochs
    assert epochs(shots=10) == 40
    # k = 30: 360 views, 45 steps; 1,800 steps -> 40 epochs; all shapes: 25; a given number stays
    assert epochs(shots=30) == 40
    assert epochs(shots=0) == 25
    assert epochs(shots=5, epochs=3) == 3


def test_the_cone_kernel_centres_a_graded_region_whose_edge_is_a_point_too_wide() -> None:
    # x = -0.02 .. 0.10 by 0.01; id 0's probability peaks at x = 0.03 (0.99) and falls off
    # symmetrically (0.9, 0.7, 0.55), but the predicted region reaches one point too far left
    # (x = -0.01 at 0.6). Balls of 0.035 hold 7 points: centred at 0.02 the gains 2p - 1 sum
    # to .2 + .1 + .4 + .8 + .98 + .8 + .4 = 3.68, at 0.03 to .1 + .4 + .8 + .98 + .8 + .4 + .1
    # = 3.58: the ball moves to 0.02. The cone (1 - d / 0.035) at 0.03: .98 + 1.6 (5/7)
    # + .8 (3/7) + .2 (1/7) = 2.494; at 0.02: .8 + 1.38 (5/7) + .9 (3/7) + .6 (1/7) = 2.257.
    x = np.round(np.arange(-0.02, 0.105, 0.01), 3)
    points = np.zeros((len(x), 3))
    points[:, 0] = x
    p0 = dict(zip(x.tolist(), [0.0, 0.6, 0.55, 0.7, 0.9, 0.99, 0.9, 0.7, 0.55, 0, 0, 0, 0]))
    p = np.array([[p0[v], 1 - p0[v]] for v in x.tolist()])
    at = {v: i for i, v in enumerate(x.tolist())}
    assert keypoints_from_probabilities(points, p, 1, radius=0.035)[0] == at[0.02]
    assert keypoints_from_probabilities(points, p, 1, radius=0.035, kernel="cone")[0] == at[0.03]
    with pytest.raises(ValueError, match="unknown kernel"):
        keypoints_from_probabilities(points, p, 1, radius=0.035, kernel="gauss")
