"""2D-3D keypoint fusion: the heatmap under a Gaussian prior around each projection.

Every expected position comes from hand arithmetic on hand-made heatmaps, or from the rendering
camera of the sample chair (conftest), never from the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import kpengine.image.pipeline as pipeline
from kpengine.errors import DataError
from kpengine.image.fusion import KeypointEvidence, fuse_keypoints, heatmap_evidence
from kpengine.image.heatmap import heatmap_to_image, image_to_heatmap
from kpengine.image.pipeline import Networks, understand
from kpengine.image.viewpoint import ViewpointNet


class FixedHeatmap(torch.nn.Module):
    """A stand-in heatmap network whose output is fixed logits (K, S, S) and visibility logits (K,)."""

    def __init__(self, logits: np.ndarray, visible: np.ndarray):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)[None]
        self.vis = torch.as_tensor(visible, dtype=torch.float32)[None]
        self.n_ids = self.logits.shape[1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        assert x.shape[-1] == self.logits.shape[-1]  # the photo was squashed to the heatmap's size
        return {"heatmap": self.logits.clone(), "visible": self.vis.clone()}


def _evidence(logits: np.ndarray, width: int, height: int) -> KeypointEvidence:
    k = logits.shape[0]
    lp = logits - np.log(np.exp(logits.reshape(k, -1)).sum(1))[:, None, None]
    return KeypointEvidence(lp, np.full(k, 0.9), width, height)


def test_the_prior_picks_the_weaker_peak_near_the_projection_and_the_stronger_far_from_it():
    # one id on an 8 x 8 heatmap over a 16 x 16 image: cell (i, j) has its centre at u = 2j + 0.5, v = 2i + 0.5
    logits = np.full((1, 8, 8), -20.0)
    logits[0, 2, 6] = 0.0  # the stronger peak, at u = 12.5, v = 4.5
    logits[0, 5, 1] = -1.0  # one nat weaker, at u = 2.5, v = 10.5
    ev = _evidence(logits, 16, 16)
    # projection at (3, 10): the weak peak is 0.5^2 + 0.5^2 = 0.5 px^2 away, the strong one 9.5^2 + 5.5^2 = 120.5.
    # sigma 4: scores -1 - 0.5/32 = -1.016 and 0 - 120.5/32 = -3.77: the weak peak wins
    f = fuse_keypoints(ev, np.array([[3.0, 10.0]]), np.array([0]), sigma=4.0)
    assert f[0].source == "fused"
    np.testing.assert_allclose(f[0].uv, [2.5, 10.5])
    np.testing.assert_allclose(f[0].projected, [3.0, 10.0])
    # sigma 40: -1 - 0.5/3200 against -120.5/3200 = -0.038: the heatmap's own arg-max wins
    wide = fuse_keypoints(ev, np.array([[3.0, 10.0]]), np.array([0]), sigma=40.0)
    np.testing.assert_allclose(wide[0].uv, [12.5, 4.5])


def test_ids_the_shape_lacks_come_from_the_heatmap_and_unprojected_ones_stay():
    logits = np.full((3, 4, 4), -10.0)
    logits[0, 1, 1] = logits[1, 3, 0] = logits[2, 0, 3] = 0.0
    ev = _evidence(logits, 40, 20)  # cells 10 px wide, 5 px high: centres u = 10j + 4.5, v = 5i + 2
    f = fuse_keypoints(ev, np.array([[14.5, 7.0], [np.nan, np.nan], [0.0, 0.0]]), np.array([0, 2, 7]), sigma=3.0)
    assert sorted(f) == [0, 1, 2, 7]
    np.testing.assert_allclose(f[0].uv, [14.5, 7.0])  # cell (1, 1): its own peak, under the projection
    assert f[1].source == "heatmap" and np.isnan(f[1].projected).all()
    np.testing.assert_allclose(f[1].uv, [4.5, 17.0])  # cell (3, 0)
    assert f[2].source == "projection" and np.isnan(f[2].uv).all()  # no projection: nothing to fuse
    assert f[7].source == "projection" and f[7].uv.tolist() == [0.0, 0.0]  # no channel for id 7


@pytest.mark.parametrize(
    "uv, ids, sigma, match",
    [
        (np.zeros((2, 2)), np.array([0]), 1.0, "2 projected keypoints but 1"),
        (np.zeros((2, 2)), np.array([1, 1]), 1.0, "appears twice"),
        (np.zeros((1, 2)), np.array([0]), 0.0, "positive number of pixels"),
        (np.zeros((1, 2)), np.array([0]), float("nan"), "positive number of pixels"),
    ],
)
def test_bad_fusion_input_is_refused(uv, ids, sigma, match):
    ev = _evidence(np.zeros((2, 4, 4)), 8, 8)
    with pytest.raises(DataError, match=match):
        fuse_keypoints(ev, uv, ids, sigma)


def test_evidence_maps_cells_to_image_pixels_for_a_wide_photo():
    # a one-hot logit at cell (row 3, column 10) of a 16 px map over a 64 x 32 photo: 4 px x 2 px cells,
    # centre u = 4 * 10 + 1.5 = 41.5, v = 2 * 3 + 0.5 = 6.5
    logits = np.full((1, 16, 16), -30.0)
    logits[0, 3, 10] = 0.0
    ev = heatmap_evidence(FixedHeatmap(logits, np.array([2.0])), np.zeros((32, 64, 3), np.uint8), 16)
    uv, p = ev.peak(0)
    np.testing.assert_allclose(uv, [41.5, 6.5])
    assert p == pytest.approx(1 / (1 + 255 * math.exp(-30)))
    assert ev.visible[0] == pytest.approx(1 / (1 + math.exp(-2)))
    np.testing.assert_allclose(np.exp(ev.log_prob).sum(), 1.0, rtol=1e-9)


def _blobs(centres: dict[int, list[tuple[np.ndarray, float]]], k: int, size: int, width: int, height: int):
    """Logits (k, size, size): per id, log of a sum of Gaussian blobs (1.2 cells wide) of the given weights."""
    g = np.arange(size, dtype=np.float64)
    out = np.full((k, size, size), 1e-9)
    for sid, blobs in centres.items():
        for uv, w in blobs:
            c = image_to_heatmap(uv, size, width, height)
            out[sid] += w * np.exp(-((g[None, :] - c[0]) ** 2 + (g[:, None] - c[1]) ** 2) / (2 * 1.2**2))
    return np.log(out)


def test_fusion_undoes_a_heatmap_that_points_to_the_half_turn(sample_chair_knowledge, sample_chair_render, monkeypatch):
    """The chair at 210°, the viewpoint estimate right; the heatmap puts most of every id's weight where the
    half-turned camera (30°) projects it and less at its true place. The fused keypoints are the true ones,
    the heatmap's arg-max the flipped ones."""
    from kpengine.render.cameras import Viewpoint, make_camera

    image, mask, cam, view, shape = sample_chair_render
    h, w = mask.shape
    size = 64
    truth, _ = cam.project(shape.keypoints.astype(np.float64))
    flip_cam = make_camera(Viewpoint(view.azimuth + 180, view.elevation, view.distance, 0.0), cam.intrinsics,
                           sample_chair_knowledge.mesh(shape)[2])  # fmt: skip
    flipped, _ = flip_cam.project(shape.keypoints.astype(np.float64))
    ids = [int(s) for s in shape.semantic_ids]
    far = [i for i, s in enumerate(ids) if np.hypot(*(truth[i] - flipped[i])) > 0.25 * w]
    assert len(far) >= 3  # ids that a half turn moves by more than a quarter of the frame
    k = max(ids) + 2  # one more channel than the shape has ids: that id comes from the heatmap alone
    extra = np.array([w * 0.3, h * 0.6])
    logits = _blobs({**{s: [(flipped[i], 1.0), (truth[i], 0.4)] for i, s in enumerate(ids)}, k - 1: [(extra, 1.0)]},
                    k, size, w, h)  # fmt: skip
    nets = Networks(ViewpointNet(64), heatmap=FixedHeatmap(logits, np.full(k, 3.0)), heatmap_size=size)
    vp = {"azimuth": view.azimuth, "elevation": view.elevation, "theta": 0.0, "confidence": 0.9}
    monkeypatch.setattr(pipeline, "estimate_viewpoint", lambda net, image, mask: dict(vp))
    kw = dict(mask=mask, shape_override=shape.model_id, steps=10, pose_hypotheses=1)
    fused = understand(image, sample_chair_knowledge, nets, **kw)
    plain = understand(image, sample_chair_knowledge, nets, fusion="projection", **kw)
    cell = w / size  # 2.5 px
    for i in far:
        got = np.array(fused.keypoints[str(ids[i])]["uv"])
        assert fused.keypoints[str(ids[i])]["source"] == "fused"
        assert np.hypot(*(got - truth[i])) < 2 * cell  # the true place, to within the blob's cell
        hm_peak = heatmap_to_image(np.array(np.unravel_index(logits[ids[i]].argmax(), (size, size))[::-1], float),
                                   size, w, h)  # fmt: skip
        assert np.hypot(*(hm_peak - flipped[i])) < 2 * cell  # the heatmap alone: the half turn
        # the projection is kept beside the fused position, and equals the paper's keypoint
        assert fused.keypoints[str(ids[i])]["projected_uv"] == plain.keypoints[str(ids[i])]["uv"]
        assert "source" not in plain.keypoints[str(ids[i])]
    extra_kp = fused.keypoints[str(k - 1)]
    assert extra_kp["source"] == "heatmap" and extra_kp["visible"]
    assert np.hypot(*(np.array(extra_kp["uv"]) - extra)) < cell
    assert extra_kp["confidence"] == pytest.approx(1 / (1 + math.exp(-3)), abs=1e-4)
    assert str(k - 1) not in plain.keypoints
    with pytest.raises(DataError, match="unknown fusion"):
        understand(image, sample_chair_knowledge, nets, fusion="average", **kw)
    with pytest.raises(DataError, match="fusion_sigma"):
        understand(image, sample_chair_knowledge, nets, fusion_sigma=0.0, **kw)


def test_cli_fuses_with_a_heatmap_run_and_keeps_projections_when_told(sample_root, sample_chair_render, tmp_path):
    from kpengine.cli.main import main
    from kpengine.cli.see import FUSION_SIGMA as CLI_SIGMA
    from kpengine.image.fusion import FUSION_SIGMA
    from kpengine.image.heatmap import HeatmapNet
    from kpengine.learn.checkpoint import save_checkpoint
    from kpengine.render.overlay import save_png

    assert CLI_SIGMA == FUSION_SIGMA  # the CLI's copy of the default follows the library's
    image, mask, *_ = sample_chair_render
    save_png(tmp_path / "photo.png", image)
    save_png(tmp_path / "mask.png", mask.astype(np.uint8) * 255)
    torch.manual_seed(0)
    vp = {"task": "viewpoint", "category": "chair", "size": 64, "widths": [16, 32, 64, 128]}
    save_checkpoint(tmp_path / "vp" / "last.pt", {"config": vp, "model": ViewpointNet(64).state_dict()})
    n_ids = 40  # more channels than the sample chairs' ids: the extra ones come from the heatmap alone
    hm = {"task": "keypoint_heatmap", "category": "chair", "size": 32, "widths": [8, 16, 32, 64], "n_ids": n_ids}
    weights = HeatmapNet(n_ids, (8, 16, 32, 64)).state_dict()
    save_checkpoint(tmp_path / "hm" / "last.pt", {"config": hm, "model": weights})
    args = ["understand", "--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"),
            "--category", "chair", "--knowledge", str(sample_root), "--split", "all",
            "--runs", str(tmp_path / "vp"), str(tmp_path / "hm"), "--steps", "2", "--pose-hypotheses", "1"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "fused")]) == 0
    fused = json.loads((tmp_path / "fused" / "keypoints.json").read_text())
    assert set(range(n_ids)) <= {int(k) for k in fused}  # every heatmap channel is placed
    assert {v["source"] for v in fused.values()} == {"fused", "heatmap"}
    for v in fused.values():
        if v["source"] == "fused":  # within the image, on a heatmap cell centre: (j + 0.5) * 160 / 32 - 0.5
            assert all(((c + 0.5) / 5 - 0.5) % 1 == pytest.approx(0.0, abs=1e-6) for c in v["uv"])
    assert main([*args, "--fusion", "projection", "--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "keypoints.json").read_text())
    assert all("source" not in v for v in plain.values())
    # the same pose either way: each fused id's projection is the plain run's keypoint
    for k, v in plain.items():
        assert fused[k]["projected_uv"] == v["uv"]


def test_the_heatmap_and_the_silhouette_together_overrule_the_network(sample_chair_knowledge, sample_chair_render,
                                                                       monkeypatch):  # fmt: skip
    """The chair at 210°, the network preferring the half turn (30°: 0.55 of its mass against 0.45), the
    silhouette's margin set out of reach (1.0): alone, the silhouette cannot overrule the network. A
    heatmap whose blobs sit where the rendering camera puts the keypoints agrees with the 210° start,
    which also fits the mask better: the two together choose it."""
    image, mask, cam, view, shape = sample_chair_render
    h, w = mask.shape
    truth, _ = cam.project(shape.keypoints.astype(np.float64))
    ids = [int(s) for s in shape.semantic_ids]
    logits = _blobs({s: [(truth[i], 1.0)] for i, s in enumerate(ids)}, max(ids) + 1, 64, w, h)
    p = np.zeros(24)
    p[[1, 2]], p[[13, 14]] = 0.275, 0.225  # modes at exactly 30° (larger) and 210°
    vp = {"azimuth": 30.0, "elevation": view.elevation, "theta": 0.0, "confidence": 0.1,
          "azimuth_probabilities": p.tolist()}  # fmt: skip
    monkeypatch.setattr(pipeline, "estimate_viewpoint", lambda net, image, mask: dict(vp))
    kw = dict(mask=mask, shape_override=shape.model_id, steps=10, pose_hypotheses=2, switch_margin=1.0)
    with_hm = Networks(ViewpointNet(64), heatmap=FixedHeatmap(logits, np.full(max(ids) + 1, 3.0)), heatmap_size=64)

    def az_err(u):
        return abs((u.pose_json()["azimuth"] - 210.0 + 180) % 360 - 180)

    alone = understand(image, sample_chair_knowledge, Networks(ViewpointNet(64)), **kw)
    assert az_err(alone) > 150  # the network's larger mode stands
    both = understand(image, sample_chair_knowledge, with_hm, **kw)
    assert az_err(both) < 15
    hyps = both.pose_json()["hypotheses"]
    assert [x["chosen"] for x in hyps] == [False, True]
    assert hyps[1]["keypoint_log_likelihood"] > hyps[0]["keypoint_log_likelihood"]
    assert hyps[1]["iou"] > hyps[0]["iou"]
    # the heatmap placing the keypoints only: the silhouette's margin alone decides, and it is out of reach
    placed = understand(image, sample_chair_knowledge, with_hm, heatmap_choice=False, **kw)
    assert az_err(placed) > 150 and placed.keypoints[str(ids[0])]["source"] == "fused"


def test_the_choice_rule_by_hand():
    from types import SimpleNamespace

    from kpengine.image.poses import PoseHypothesis, _winner
    from kpengine.render.cameras import Viewpoint

    a = SimpleNamespace(name="a")
    h = [PoseHypothesis(Viewpoint(0, 0, 1, 0), float("nan"), "mode", a, None, 0.0) for _ in range(3)]
    iou = [0.80, 0.81, 0.79]
    assert _winner(h, iou, 0.05) is h[0]  # 0.01 better: the silhouette alone does not overrule
    assert _winner(h, iou, 0.05, [-9.0, -5.0, -1.0]) is h[1]  # better on both: overrules
    assert _winner(h, iou, 0.05, [-9.0, -9.5, -1.0]) is h[0]  # the heatmap alone (h[2]) does not
    assert _winner(h, [0.80, 0.81, 0.90], 0.05, [-9.0, -5.0, -20.0]) is h[2]  # the margin path still stands
    assert _winner(h, [0.80, 0.82, 0.81], 0.05, [-9.0, -5.0, -1.0]) is h[1]  # of two that may, the better fit


def test_keypoint_likelihood_terms():
    from kpengine.image.fusion import LIKELIHOOD_FLOOR, keypoint_log_likelihood

    logits = np.full((2, 16, 16), -40.0)
    logits[0, 4, 4] = 0.0  # id 0: all its mass on cell (4, 4): image (9, 9) of a 32 x 32 photo (2 px cells)
    ev = _evidence(logits, 32, 32)
    ev.visible = np.array([0.8, 0.3])
    # id 1 not visible: log(1 - 0.3); id 5 has no channel: nothing
    only_hidden = keypoint_log_likelihood(ev, np.array([[9.0, 9.0], [0.0, 0.0]]), np.array([False, False]), [5, 1])
    assert only_hidden == pytest.approx(math.log(0.7))
    # id 0 visible far from its mass (blurred probability ~ e^-(12^2 + 12^2)/8 ~ 0): log 0.8 + log(floor) - log 50
    far = keypoint_log_likelihood(ev, np.array([[9.0 + 24, 9.0 + 24]]), np.array([True]), [0])
    assert far == pytest.approx(math.log(0.8) + math.log(LIKELIHOOD_FLOOR) - math.log(50), abs=1e-6)
    # on the peak: the blurred probability of the centre of a 2-cell Gaussian, 1 / (2 pi 2^2) up to the
    # discretisation (within 2 %), times 256 cells
    near = keypoint_log_likelihood(ev, np.array([[9.0, 9.0]]), np.array([True]), [0])
    expect = math.log(0.8) + math.log(256 / (2 * math.pi * 4) + LIKELIHOOD_FLOOR) - math.log(50)
    assert near == pytest.approx(expect, abs=0.02)
