"""Unsupervised keypoints: Skeleton Merger's network and loss, the label-free detectors, DAS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kpengine.errors import DataError
from kpengine.geometry.detectors import check_cloud, farthest_point_keypoints, iss_keypoints, random_keypoints
from kpengine.learn.unsupervised.skeleton_merger import MAX_DECODER_KEYPOINTS, SkeletonMerger, composite_chamfer
from kpengine.metrics.das import dual_alignment_score
from kpengine.metrics.unsupervised import semantic_consistency

TINY = {"width": 64, "feature_transform": False, "input_transform": False}


def test_keypoints_are_convex_combinations_of_the_input_points() -> None:
    torch.manual_seed(0)
    net = SkeletonMerger(6, "pointnet", 8, **TINY).eval()
    x = torch.rand(3, 200, 3) * 2 - 1
    out = net(x)
    w = out["weights"]
    assert w.shape == (3, 6, 200) and bool((w >= 0).all())
    assert torch.allclose(w.sum(-1), torch.ones(3, 6), atol=1e-6)
    assert torch.allclose(out["keypoints"], torch.einsum("bkn,bnc->bkc", w, x), atol=1e-6)
    # inside the bounding box of each cloud (a necessary condition of being in its convex hull)
    lo, hi = x.min(1).values[:, None], x.max(1).values[:, None]
    assert bool(((out["keypoints"] >= lo - 1e-6) & (out["keypoints"] <= hi + 1e-6)).all())
    assert out["segments"].shape == (3, 15, 8, 3) and out["activations"].shape == (3, 15)
    # segment (i, j) runs from keypoint i to keypoint j (less the learned offsets)
    ends = out["segments"] - net.offsets
    assert torch.allclose(ends[:, 0, 0], out["keypoints"][:, 0], atol=1e-6)
    assert torch.allclose(ends[:, 0, -1], out["keypoints"][:, 1], atol=1e-6)


def test_composite_chamfer_by_hand() -> None:
    cloud = torch.tensor([[[0.0, 0, 0], [2.0, 0, 0]]])  # (1, 2, 3)
    seg_a = [[0.0, 0, 0], [1.0, 0, 0]]
    seg_b = [[2.0, 0, 0], [3.0, 0, 0]]
    one = torch.tensor([[seg_a]])  # (1, 1, 2, 3)
    # active segment: forward mean(0, 1) = 0.5; backward mean(0, 1) = 0.5
    assert composite_chamfer(cloud, one, torch.tensor([[1.0]]), eps=0.0).item() == pytest.approx(1.0)
    # activation 0.25: 0.125 + 0.125 + 20 x 0.75 uncovered weight
    assert composite_chamfer(cloud, one, torch.tensor([[0.25]]), eps=0.0).item() == pytest.approx(15.25)
    # two segments, activations (0.5, 1): forward (0.5 x 0.5 + 0.5 x 1) / 2 = 0.375; backward:
    # point 0 takes 0.5 from A (distance 0) then 0.5 from B (distance 2) = 1; point 1 all from B at 0
    two = torch.tensor([[seg_a, seg_b]])
    got = composite_chamfer(cloud, two, torch.tensor([[0.5, 1.0]]), eps=0.0).item()
    assert got == pytest.approx(0.375 + 0.5)


def test_loss_decreases_on_a_tiny_set() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    # four noisy boxes of different proportions
    clouds = []
    for s in (0.5, 0.7, 0.9, 1.0):
        p = torch.rand(128, 3, generator=gen) * 2 - 1
        face = torch.randint(0, 3, (128,), generator=gen)
        p[torch.arange(128), face] = torch.sign(p[torch.arange(128), face])
        clouds.append(p * torch.tensor([1.0, s, 0.5]))
    x = torch.stack(clouds)
    net = SkeletonMerger(4, "pointnet", 8, **TINY)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = net(x)
        loss = composite_chamfer(x, out["segments"], out["activations"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=f"2 to {MAX_DECODER_KEYPOINTS} keypoints"):
        SkeletonMerger(MAX_DECODER_KEYPOINTS + 1)
    with pytest.raises(ValueError, match="cannot hold 6 keypoints"):
        SkeletonMerger(6, "pointnet", 4, **TINY)(torch.rand(2, 5, 3))
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="fewer than the 10 keypoints"):
        check_cloud(rng.random((5, 3)), 10)
    line = np.outer(rng.random(50), [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="collinear"):
        check_cloud(line, 10)
    with pytest.raises(DataError, match="same point"):
        check_cloud(np.ones((50, 3)), 10)
    flat = np.c_[rng.random((50, 2)), np.zeros(50)]
    check_cloud(flat, 10)  # a flat cloud is fine for a network...
    with pytest.raises(DataError, match="one plane"):
        check_cloud(flat, 10, allow_flat=False)  # ...not for a curvature detector


def test_detectors_give_k_distinct_points() -> None:
    rng = np.random.default_rng(0)
    cube = rng.random((600, 3))
    cube[np.arange(600), rng.integers(0, 3, 600)] = rng.integers(0, 2, 600)  # points on a cube's faces
    for idx in (
        farthest_point_keypoints(cube, 8),
        random_keypoints(cube, 8),
        iss_keypoints(cube, 8, salient_radius=0.2),
    ):
        assert len(idx) == 8 and len(set(idx.tolist())) == 8
    # greedy FPS: the chosen points are at least as far apart as any point is from the chosen set
    chosen = cube[farthest_point_keypoints(cube, 8)]
    pair = np.linalg.norm(chosen[:, None] - chosen[None], axis=-1)
    cover = np.linalg.norm(cube[:, None] - chosen[None], axis=-1).min(1).max()
    assert pair[np.triu_indices(8, 1)].min() >= cover - 1e-12
    # ISS prefers corners (variation in three directions) over faces; a corner's 0.3-neighbourhood
    # holds 28 % of the surface, so random points would score about 0.28
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    iss = cube[iss_keypoints(cube, 8, salient_radius=0.2, nms_radius=0.3)]
    near_corner = np.linalg.norm(iss[:, None] - corners[None], axis=-1).min(1) < 0.3
    assert near_corner.mean() >= 0.5


def test_das_on_a_hand_checked_case() -> None:
    """Three shapes, ids 0 at x=0 and 1 at x=1; keypoints 2 per shape. Shapes A and B put keypoint
    0 on id 0 and 1 on id 1; shape C puts both near id 0 (k0 at 0.1, k1 at 0.05).

    Forward (ordered pairs, self-pairs included, 9 per keypoint): k0 labels (0, 0, 0) -> 1;
    k1 labels (1, 1, 0) -> (2^2 + 1^2) / 9 = 5/9; forward = 7/9. Backward: id 0's nearest keypoint
    is (0, 0, 1) -> 5/9 (C: k1 at 0.05 is nearer); id 1's is (1, 1, 0) -> 5/9 (C: k0 at 0.1 is
    nearer to x=1); backward = 5/9. DAS = (7/9 + 5/9) / 2 = 2/3. A version without the
    forward/backward average (SC3K's) would report 7/9 or 5/9 here."""
    gt = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    sem = np.array([0, 1])
    pred = [gt.copy(), gt.copy(), np.array([[0.1, 0, 0], [0.05, 0, 0]])]
    got = dual_alignment_score(pred, [gt] * 3, [sem] * 3)
    assert got["forward"] == pytest.approx(7 / 9)
    assert got["backward"] == pytest.approx(5 / 9)
    assert got["das"] == pytest.approx(2 / 3)
    cons = semantic_consistency(pred, [gt] * 3, [sem] * 3)
    # k0: id 0 on 3 of 3 shapes; k1: id 1 on 2 of 3
    assert cons["per_keypoint"] == pytest.approx([1.0, 2 / 3])
    assert cons["modal_ids"] == [0, 1]
    assert cons["consistency"] == pytest.approx(5 / 6)


def test_train_and_predict_through_the_run_mechanism(sample_root: Path, tmp_path: Path) -> None:
    from kpengine.learn.predict import predict_split
    from kpengine.learn.runs import train_run
    from kpengine.learn.tasks.unsupervised_keypoints import UnsupervisedConfig, UnsupervisedKeypointsTask

    cfg = UnsupervisedConfig(
        task="unsupervised_keypoints",
        data=str(sample_root),
        category="chair",
        epochs=2,
        n_keypoints=5,
        train_points=128,
        segment_points=8,
        backbone_kwargs=TINY,
    )
    summary = train_run(UnsupervisedKeypointsTask(cfg), tmp_path / "run", progress=False)
    assert summary["epochs"] == 2 and summary["n_keypoints"] == 5
    task, preds = predict_split(tmp_path / "run", sample_root, "chair", "test")
    assert task == "saliency" and preds
    for items in preds.values():
        assert len(items) == 5  # one entry per keypoint, in keypoint order
    # kpengine evaluate --task das reads the file back in that order
    from kpengine.data import KeypointNetDataset
    from kpengine.io.predictions import save_saliency_predictions
    from kpengine.metrics.unsupervised import evaluate_das_file

    path = tmp_path / "p.json"
    save_saliency_predictions(path, {m: ([i for i, _ in v], [p for _, p in v]) for m, v in preds.items()})
    got = evaluate_das_file(str(sample_root), "chair", "test", str(path))
    shapes = list(KeypointNetDataset(sample_root, "chair", "test"))
    xyz = [s.points[[i for i, _ in preds[s.model_id]]] for s in shapes]
    direct = dual_alignment_score(xyz, [s.keypoints for s in shapes], [s.semantic_ids for s in shapes])
    assert got["das"] == pytest.approx(direct["das"]) and got["shapes"] == len(shapes)
    assert 0.0 <= got["miou"][0.1] <= 1.0
    with pytest.raises(ValueError, match="unknown method"):
        UnsupervisedConfig(task="unsupervised_keypoints", data=".", category="chair", method="nope")


def test_cli_names_the_task_with_a_hyphen_and_refuses_too_many_keypoints(
    sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from kpengine.cli.main import main

    argv = ["train", "--task", "unsupervised-keypoints", "--data", str(sample_root), "--category", "chair"]
    assert main([*argv, "--out", str(tmp_path / "r"), "--keypoints", str(MAX_DECODER_KEYPOINTS + 1)]) == 1
    assert f"2 to {MAX_DECODER_KEYPOINTS} keypoints" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "r2"), "--method", "usip"]) == 1
    assert "unknown method 'usip'" in capsys.readouterr().err


def test_sets_of_different_sizes_get_mIoU_but_no_DAS(sample_root: Path) -> None:
    from kpengine.data import KeypointNetDataset
    from kpengine.metrics.unsupervised import evaluate_unsupervised

    shapes = KeypointNetDataset(sample_root, "chair", "all")
    assert len(shapes) >= 3
    sizes = [3, 0] + [2] * (len(shapes) - 2)  # a saliency net keeps any number of points, even none
    preds = {s.model_id: (np.arange(n, dtype=np.int64), np.ones(n)) for s, n in zip(shapes, sizes)}
    got = evaluate_unsupervised(shapes, preds)
    assert np.isnan(got["das"]) and got["consistency"] is None
    assert got["shapes"] == len(shapes) - 1 and 0.0 <= got["miou"][0.1] <= 1.0


# --------------------------------------------------------------------------- the collapse remedy


def test_keypoint_activity_and_liveness_by_hand() -> None:
    """K = 3: segments (0,1), (0,2), (1,2) with activations (0.9, 0.1, 0.0): keypoint 0's
    strongest segment is 0.9, keypoint 1's 0.9, keypoint 2's 0.1. With floor 0.5 only keypoint 2
    is short, by 0.4: penalty 0.4 / 3. Its gradient reaches only segment (0,2), keypoint 2's
    strongest (the one that would revive it)."""
    from kpengine.learn.unsupervised.skeleton_merger import keypoint_activity, liveness_penalty

    a = torch.tensor([[0.9, 0.1, 0.0]], requires_grad=True)
    assert keypoint_activity(a, 3)[0].tolist() == pytest.approx([0.9, 0.9, 0.1])
    pen = liveness_penalty(a, 3, floor=0.5)
    assert pen.item() == pytest.approx(0.4 / 3)
    pen.backward()
    assert a.grad[0].tolist() == pytest.approx([0.0, -1 / 3, 0.0])
    assert liveness_penalty(torch.tensor([[0.9, 0.6, 0.0]]), 3).item() == 0.0


def test_surface_penalty_by_hand() -> None:
    from kpengine.learn.unsupervised.skeleton_merger import surface_penalty

    cloud = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    kp = torch.tensor([[[0.0, 0.3, 0], [1.0, 0, 0.4]]])  # 0.3 and 0.4 from their nearest points
    assert surface_penalty(kp, cloud, eps=0.0).item() == pytest.approx(0.35)


# --------------------------------------------------------------------------- symmetric keypoints


def test_symmetric_keypoints_mirror_in_pairs_and_the_odd_one_lies_on_the_plane() -> None:
    from kpengine.learn.unsupervised.symmetric import SymmetricKeypoints

    torch.manual_seed(0)
    x = torch.rand(2, 100, 3) * 2 - 1
    for axis, a in (("x", 0), ("z", 2)):
        net = SymmetricKeypoints(7, "pointnet", 4, axis, **TINY)
        kp = net(x)["keypoints"]
        assert kp.shape == (2, 7, 3)
        mirrored = kp[:, :3].clone()
        mirrored[..., a] *= -1
        assert torch.allclose(kp[:, 3:6], mirrored)  # keypoint 3 + i mirrors keypoint i
        assert torch.all(kp[:, 6, a] == 0)  # the seventh is on the plane
        assert not torch.allclose(kp[:, :3, a], torch.zeros(2, 3))  # pairs start apart
    free = SymmetricKeypoints(4, "pointnet", 2, None, **TINY)(x)["keypoints"]
    assert free.shape == (2, 4, 3)
    # rank 2: the keypoints of every shape lie in the 2-dimensional affine family mean + c B
    net = SymmetricKeypoints(6, "pointnet", 2, "x", **TINY)
    kp = net(torch.rand(8, 64, 3))["keypoints"].reshape(8, -1).detach()
    centred = kp - net.arrange(net.mean[None]).reshape(1, -1).detach()
    assert np.linalg.matrix_rank(centred.numpy(), tol=1e-5) <= 2


def test_symmetric_losses_by_hand() -> None:
    from kpengine.learn.unsupervised.symmetric import coverage_term, separation_term, surface_term

    cloud = torch.tensor([[[0.0, 0, 0], [2.0, 1, 0], [1.0, 0, 4]]])  # extents (2, 1, 4)
    kp = torch.tensor([[[0.0, 0, 0], [1.0, 0.5, 0]]])  # extents (1, 0.5, 0)
    assert coverage_term(kp, cloud).item() == pytest.approx((1 + 0.5 + 4) / 3)
    # keypoint 2 at (1, 0.5, 0): nearest cloud point (0,0,0) or (2,1,0), both sqrt(1.25)
    assert surface_term(kp, cloud, eps=0.0).item() == pytest.approx((0 + 1.25**0.5) / 2)
    # one pair 1.118 apart: no push at gap 1, 2 - 1.118 at gap 2
    assert separation_term(kp, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert separation_term(kp, 2.0).item() == pytest.approx(2 - 1.25**0.5, abs=1e-6)


def test_reflection_axis_finds_the_mirror_plane_without_labels() -> None:
    """Clouds symmetric about x = centre but not about y or z (a wedge) give x; the same clouds
    turned so that the symmetry is about z give z."""
    from kpengine.learn.unsupervised.symmetric import reflection_axis

    rng = np.random.default_rng(0)
    clouds = []
    for _ in range(3):
        half = rng.random((300, 3)) * [1.0, 1.0, 1.0]
        half[:, 1] *= half[:, 2]  # a wedge: not symmetric in y or z
        clouds.append(np.concatenate([half, half * [-1, 1, 1]]) + [0.3, 0.1, 0.0])
    axis, scores = reflection_axis(clouds)
    assert axis == "x" and scores[0] < 1e-9 < min(scores[1:])
    assert reflection_axis([c[:, [2, 1, 0]] for c in clouds])[0] == "z"


def test_symmetric_method_trains_predicts_and_names_bad_input(sample_root: Path, tmp_path: Path) -> None:
    from kpengine.learn.inference import load_run
    from kpengine.learn.predict import predict_split
    from kpengine.learn.runs import train_run
    from kpengine.learn.tasks.unsupervised_keypoints import UnsupervisedConfig, UnsupervisedKeypointsTask

    cfg = UnsupervisedConfig(
        task="unsupervised_keypoints",
        data=str(sample_root),
        category="chair",
        method="symmetric",
        epochs=2,
        n_keypoints=5,
        train_points=128,
        rank=3,
        backbone_kwargs=TINY,
    )
    summary = train_run(UnsupervisedKeypointsTask(cfg), tmp_path / "run", progress=False)
    assert summary["epochs"] == 2 and summary["symmetry"] in ("x", "y", "z")  # auto resolved and saved
    model, state = load_run(tmp_path / "run")
    assert state["config"]["symmetry"] == summary["symmetry"] and model.axis == "xyz".index(summary["symmetry"])
    task, preds = predict_split(tmp_path / "run", sample_root, "chair", "test")
    assert task == "saliency" and all(len(v) == 5 for v in preds.values())
    with pytest.raises(ValueError, match="unknown symmetry"):
        UnsupervisedConfig(task="unsupervised_keypoints", data=".", category="chair", symmetry="w")
    with pytest.raises(ValueError, match="at least 2 keypoints"):
        UnsupervisedConfig(task="unsupervised_keypoints", data=".", category="chair", n_keypoints=1)


def test_a_crowd_snaps_to_nearby_suggestions_once_each() -> None:
    """Suggestions at x = 0 and x = 1 on model m. Annotator a clicks at 0.02 and then 0.03 (both
    near suggestion 0): the first takes it, the second stays (suggestion 0 is no longer offered
    to a on m, and suggestion 1 is 0.97 away). Annotator b's click at 0.9 takes suggestion 1;
    a click at 0.5 is beyond the 0.2 radius; a click on another model stays."""
    from kpengine.io.clicks import Click
    from kpengine.learn.unsupervised.crowd import snap_to_suggestions

    def click(ann: str, x: float, model: str = "m") -> Click:
        return Click(model_id=model, annotator=ann, kp_index=0, xyz=(x, 0.0, 0.0), point_index=99, face_index=3)

    sugg = {"m": (np.array([10, 11]), np.array([[0.0, 0, 0], [1.0, 0, 0]]))}
    clicks = [click("a", 0.02), click("a", 0.03), click("b", 0.9), click("b", 0.5), click("a", 0.0, "other")]
    out, moved = snap_to_suggestions(clicks, sugg, radius=0.2, accept=1.0)
    assert moved.tolist() == [True, False, True, False, False]
    assert out[0].xyz == (0.0, 0.0, 0.0) and out[0].point_index == 10 and out[0].face_index is None
    assert out[1] == clicks[1] and out[3] == clicks[3] and out[4] == clicks[4]
    assert out[2].point_index == 11
    none, moved0 = snap_to_suggestions(clicks, sugg, radius=0.2, accept=0.0)
    assert none == clicks and not moved0.any()
    with pytest.raises(ValueError, match="accept"):
        snap_to_suggestions(clicks, sugg, radius=0.2, accept=1.5)


def test_prediction_names_the_model_whose_cloud_cannot_hold_k_keypoints() -> None:
    from types import SimpleNamespace

    from kpengine.learn.tasks.unsupervised_keypoints import UnsupervisedPredictor
    from kpengine.learn.unsupervised.symmetric import SymmetricKeypoints

    rng = np.random.default_rng(0)
    for net in (SkeletonMerger(6, "pointnet", 4, **TINY).eval(), SymmetricKeypoints(6, "pointnet", 2, "x", **TINY)):
        predictor = UnsupervisedPredictor(net.eval())
        ok = SimpleNamespace(model_id="fine", points=rng.random((64, 3)).astype(np.float32))
        assert len(predictor.predict([ok])["fine"]) == 6
        small = SimpleNamespace(model_id="tiny123", points=rng.random((4, 3)).astype(np.float32))
        with pytest.raises(DataError, match="model tiny123: 4 points, fewer than the 6 keypoints"):
            predictor.predict([ok, small])
        line = SimpleNamespace(model_id="stick", points=np.outer(rng.random(64), [1, 2, 3]).astype(np.float32))
        with pytest.raises(DataError, match="model stick: the points are collinear"):
            predictor.predict([line])


def test_das_scores_a_total_collapse_perfectly_so_distinct_ids_are_reported_beside_it() -> None:
    """All K keypoints of every shape on one spot near id 0: every keypoint takes id 0 on every
    shape (forward 1) and every human id's nearest keypoint is index 0 (ties go to the first:
    backward 1). DAS = 1 although the detector found one part; consistency is 1 too, and only
    the modal ids (one distinct id of K) show the collapse."""
    gt = np.array([[0.0, 0, 0], [1.0, 0, 0], [0.0, 1, 0]])
    sem = np.array([0, 1, 2])
    pred = [np.full((4, 3), 0.1)] * 3
    assert dual_alignment_score(pred, [gt] * 3, [sem] * 3)["das"] == pytest.approx(1.0)
    cons = semantic_consistency(pred, [gt] * 3, [sem] * 3)
    assert cons["consistency"] == pytest.approx(1.0) and set(cons["modal_ids"]) == {0}


def test_validation_counts_dead_keypoints() -> None:
    """Every segment switched off (activation bias -30): all B x K keypoints are dead; every
    segment on (+30): none is."""
    from kpengine.learn.tasks.unsupervised_keypoints import UnsupervisedConfig, UnsupervisedKeypointsTask

    task = UnsupervisedKeypointsTask(UnsupervisedConfig(task="unsupervised_keypoints", data=".", category="chair"))
    net = SkeletonMerger(4, "pointnet", 4, **TINY).eval()
    batch = {"points": torch.rand(3, 64, 3)}
    with torch.no_grad():
        net.activation[-1].weight.zero_()
        net.activation[-1].bias.fill_(-30.0)
        assert task.metrics(net, batch)["dead_keypoints"] == 12
        net.activation[-1].bias.fill_(30.0)
        got = task.metrics(net, batch)
    assert got["dead_keypoints"] == 0
    # the summed distance of keypoints (convex combinations) to the cloud: >= 0 and below the box's diagonal
    assert 0.0 <= got["surface_distance"] < 3 * 3**0.5
