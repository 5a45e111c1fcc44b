"""Viewpoint labels, decoding, metrics, crops, the EPFL cars reader, and that the network learns a viewpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kpengine.errors import DataError
from kpengine.image.crops import crop_square, resample
from kpengine.image.viewpoint import (
    ViewpointNet,
    angle_difference,
    azimuth_soft_label,
    decode_azimuth,
    decode_elevation,
    elevation_soft_label,
    rotation_geodesic,
    viewpoint_loss,
    viewpoint_metrics,
)
from kpengine.render.cameras import Viewpoint


def test_azimuth_labels_interpolate_between_centres_and_wrap():
    lab = azimuth_soft_label(torch.tensor([7.5, 15.0, 0.0, 359.0, 367.5, -352.5]))
    assert torch.allclose(lab.sum(1), torch.ones(6))
    assert lab[0, 0] == 1.0  # on a centre
    assert lab[1, 0] == pytest.approx(0.5) and lab[1, 1] == pytest.approx(0.5)
    assert lab[2, 0] == pytest.approx(0.5) and lab[2, 23] == pytest.approx(0.5)  # across the seam
    assert lab[3, 23] == pytest.approx(8.5 / 15) and lab[3, 0] == pytest.approx(6.5 / 15)
    assert torch.allclose(lab[4], lab[0]) and torch.allclose(lab[5], lab[0])  # any range


def test_azimuth_decoding_recovers_the_label_within_a_degree():
    angles = torch.linspace(0, 359.9, 997)
    az, conf = decode_azimuth(azimuth_soft_label(angles))
    assert angle_difference(az.numpy(), angles.numpy()).max() < 1.0
    assert ((az >= 0) & (az < 360)).all()
    assert conf.min() >= math.cos(math.radians(7.5)) - 1e-4 and conf.max() <= 1 + 1e-6


def test_confidence_is_low_for_opposite_views():
    p = 0.5 * (azimuth_soft_label(torch.tensor([7.5])) + azimuth_soft_label(torch.tensor([187.5])))
    assert float(decode_azimuth(p)[1]) < 1e-5


def test_mirrored_distribution_is_the_mirrored_azimuth():
    p = torch.softmax(torch.randn(20, 24), -1)
    a, _ = decode_azimuth(p)
    b, _ = decode_azimuth(p.flip(-1))
    assert angle_difference(a.numpy(), -b.numpy()).max() < 1e-3


def test_elevation_labels_and_expectation_are_exact():
    el = torch.tensor([-90.0, -37.0, 0.0, 12.3, 90.0])
    lab = elevation_soft_label(el)
    assert torch.allclose(lab.sum(1), torch.ones(5))
    assert torch.allclose(decode_elevation(lab), el, atol=1e-4)


def test_loss_ignores_unknown_elevations_and_is_minimal_at_the_label():
    az, el = torch.tensor([30.0, 200.0]), torch.tensor([float("nan"), 10.0])
    good = {"azimuth": 50 * azimuth_soft_label(az), "elevation": 50 * elevation_soft_label(torch.tensor([0.0, 10.0]))}
    bad = {"azimuth": 50 * azimuth_soft_label(az + 90), "elevation": good["elevation"]}
    assert viewpoint_loss(good, az, el) < viewpoint_loss(bad, az, el)
    only_nan = viewpoint_loss(good, az[:1], el[:1])
    assert torch.isfinite(only_nan)


def test_geodesic_distance_matches_independent_angles():
    assert rotation_geodesic(Viewpoint(10, 0, 1), Viewpoint(50, 0, 1)) == pytest.approx(40.0, abs=1e-6)
    assert rotation_geodesic(Viewpoint(10, 20, 1, 0), Viewpoint(10, 20, 1, 25)) == pytest.approx(25.0, abs=1e-6)
    assert rotation_geodesic(Viewpoint(0, 0, 1), Viewpoint(0, 30, 1)) == pytest.approx(30.0, abs=1e-6)
    m = viewpoint_metrics(np.array([0.0, 350.0, 180.0]), np.array([20.0, 10.0, 0.0]))
    assert m["median_azimuth_error"] == pytest.approx(20.0)
    assert m["acc_30"] == pytest.approx(2 / 3)
    assert m["flips_150"] == pytest.approx(1 / 3)


def test_crop_square_repeats_the_border_and_resample_flips():
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, 15:] = 255  # right half white
    crop = crop_square(img, (10, 5, 10, 10), margin=3.0, size=30)  # reaches outside the photo
    assert crop.shape == (30, 30, 3)
    assert crop[15, 0].max() == 0 and crop[15, -1].min() == 255  # border repeated, no black bar on the right
    t = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None]
    flipped = resample(t, 30, 1.0, flip=torch.tensor([True]))
    assert torch.allclose(flipped[0, :, :, 2:-2], t[0].float().flip(-1)[:, :, 2:-2] / 255, atol=0.02)


def _wedge_images(az: np.ndarray, size: int = 32) -> torch.Tensor:
    """A bright wedge pointing at angle ``az`` on a dark disc: a toy image with an unambiguous azimuth."""
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    ang = np.degrees(np.arctan2(yy, xx))
    r = np.hypot(xx, yy)
    out = np.zeros((len(az), 3, size, size), np.float32)
    for i, a in enumerate(az):
        wedge = (angle_difference(ang, a) < 25) & (r < size / 2.2)
        out[i, :] = wedge
    return torch.from_numpy((out - 0.5) / 0.25)


def test_viewpoint_net_learns_a_toy_azimuth():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = ViewpointNet(32, (8, 16), dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(120):
        az = rng.uniform(0, 360, 32)
        loss = viewpoint_loss(net(_wedge_images(az)), torch.tensor(az, dtype=torch.float32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    test_az = rng.uniform(0, 360, 64)
    with torch.no_grad():
        pred, _ = decode_azimuth(torch.softmax(net(_wedge_images(test_az))["azimuth"], -1))
    assert np.median(angle_difference(pred.numpy(), test_az)) < 15.0


def _fake_epfl(root, sense=1):
    root.mkdir()
    (root / "tripod-seq.txt").write_text("1 376 250\n5\ntripod_seq_%02d_%03d.jpg\nbbox_%02d.txt\n5\n2\n" + f"{sense}\n")
    (root / "times_01.txt").write_text("\n".join(f"2008:03:12 10:00:{s:02d}" for s in (0, 10, 20, 30, 40)))
    (root / "bbox_01.txt").write_text("\n".join("1 2 30 20" for _ in range(5)))


def test_epfl_reader_computes_the_turntable_azimuth(tmp_path):
    from kpengine.io.epfl_cars import load_epfl_cars

    _fake_epfl(tmp_path / "a")
    frames = load_epfl_cars(tmp_path / "a")
    # frame 2 faces the camera; frame 5 completes the turn after 40 s: 9 degrees per second
    assert [f.azimuth for f in frames] == pytest.approx([-90.0, 0.0, 90.0, 180.0, -90.0])
    assert frames[0].bbox == (1.0, 2.0, 30.0, 20.0)
    _fake_epfl(tmp_path / "b", sense=-1)
    assert [f.azimuth for f in load_epfl_cars(tmp_path / "b")] == pytest.approx([90.0, 0.0, -90.0, 180.0, 90.0])
    (tmp_path / "b" / "bbox_01.txt").write_text("1 2 30\n")
    with pytest.raises(DataError, match="bbox_01"):
        load_epfl_cars(tmp_path / "b")


@pytest.mark.realdata
def test_epfl_real_labels(shared_data):
    from kpengine.io.epfl_cars import load_epfl_cars

    root = shared_data / "images" / "epfl_cars"
    frames = load_epfl_cars(root)
    assert len(frames) == 2299 and all(f.path.is_file() for f in frames[::97])
    front = {1: 50, 5: 23, 14: 109}  # line 6 of tripod-seq.txt
    for seq, f in front.items():
        assert next(x for x in frames if x.sequence == seq and x.frame == f).azimuth == 0.0


def test_half_head_moves_a_front_back_split_to_the_side_it_names():
    """Mass split between bin 0 (7.5 deg, cos > 0) and bin 12 (187.5 deg, cos < 0): the half head's
    product of experts keeps the side it believes; an undecided head (logit 0) changes nothing."""
    from kpengine.image.viewpoint import with_half

    prob = torch.zeros(2, 24)
    prob[:, 0], prob[:, 12] = 0.5, 0.5
    sure = with_half(prob, torch.tensor([4.0, -4.0]))
    p = torch.sigmoid(torch.tensor(4.0))
    assert sure[0, 0] == pytest.approx(float(p)) and sure[1, 12] == pytest.approx(float(p))
    az, _ = decode_azimuth(sure)
    assert angle_difference(az.numpy(), np.array([7.5, 187.5])).max() < 5.0
    assert torch.allclose(with_half(prob, torch.zeros(2)), prob)


def test_half_loss_is_weighted_by_cos_and_mirror_average_keeps_the_half():
    from kpengine.image.viewpoint import mirror_average

    logits = {"azimuth": torch.zeros(2, 24), "elevation": torch.zeros(2, 12), "half": torch.tensor([3.0, 3.0])}
    side = torch.tensor([90.0, 270.0])  # |cos| = 0: the half label carries no weight
    assert float(viewpoint_loss(logits, side, None, 1.0)) == pytest.approx(float(viewpoint_loss(logits, side)))
    front = torch.tensor([0.0, 0.0])  # cos = 1, target 1: BCE = log(1 + e^-3)
    extra = float(viewpoint_loss(logits, front, None, 2.0) - viewpoint_loss(logits, front))
    assert extra == pytest.approx(2 * math.log1p(math.exp(-3.0)), rel=1e-5)
    a = {"azimuth": torch.randn(3, 24), "elevation": torch.randn(3, 12), "half": torch.tensor([1.0, -2.0, 0.5])}
    b = {"azimuth": a["azimuth"].flip(-1), "elevation": a["elevation"], "half": a["half"]}  # a true mirror image
    avg = mirror_average(a, b)
    assert torch.allclose(torch.softmax(avg["azimuth"], -1), torch.softmax(a["azimuth"], -1), atol=1e-6)
    assert torch.allclose(avg["half"], a["half"], atol=1e-4)
    net = ViewpointNet(32, (8, 16), half_head=True)
    assert net(torch.zeros(2, 3, 32, 32))["half"].shape == (2,)


def test_viewpoint_metrics_with_elevations_and_rolls_by_hand():
    """Four views whose rotation distances are single angles: the same view (0), elevation 0 vs 40
    at azimuth 0 (a turn of 40 about x), roll 0 vs 25 (25 about the optical axis), azimuth 200 vs 0
    (160, a flip). Medians: azimuth error 0, geodesic (25 + 40) / 2 = 32.5, elevation error 0;
    Acc@30 = 2/4; flips (> 150) = 1/4. Left out on one side, elevations or rolls count as 0."""
    pred_az, gt_az = np.array([10.0, 0.0, 0.0, 200.0]), np.array([10.0, 0.0, 0.0, 0.0])
    pred_el, gt_el = np.array([20.0, 0.0, 0.0, 0.0]), np.array([20.0, 40.0, 0.0, 0.0])
    pred_th, gt_th = np.zeros(4), np.array([0.0, 0.0, 25.0, 0.0])
    m = viewpoint_metrics(pred_az, gt_az, pred_el, gt_el, pred_th, gt_th)
    assert set(m) == {
        "n",
        "median_azimuth_error",
        "median_geodesic_error",
        "acc_30",
        "flips_150",
        "median_elevation_error",
    }
    assert m["n"] == 4.0 and m["median_azimuth_error"] == pytest.approx(0.0, abs=1e-9)
    assert m["median_geodesic_error"] == pytest.approx(32.5, abs=1e-5)
    assert m["acc_30"] == 0.5 and m["flips_150"] == 0.25
    assert m["median_elevation_error"] == pytest.approx(0.0, abs=1e-9)
    no_roll = viewpoint_metrics(pred_az, gt_az, pred_el, gt_el, pred_th, None)  # geodesics 0, 40, 0, 160
    assert no_roll["median_geodesic_error"] == pytest.approx(20.0, abs=1e-5) and no_roll["acc_30"] == 0.5
    no_el = viewpoint_metrics(pred_az, gt_az, pred_el, None, None, gt_th)  # geodesics 0, 0, 0, 160
    assert "median_elevation_error" not in no_el and no_el["acc_30"] == 0.75
    assert no_el["median_geodesic_error"] == pytest.approx(0.0, abs=1e-5)
    swapped = viewpoint_metrics(pred_az, gt_az, None, gt_el, gt_th, None)
    assert swapped["acc_30"] == 0.75 and "median_elevation_error" not in swapped
    assert viewpoint_metrics(pred_az[:3], gt_az[:3], pred_el[:3], gt_el[:3])["median_elevation_error"] == 0.0
    big = viewpoint_metrics(np.array([0.0]), np.array([0.0]), np.array([-30.0]), np.array([20.0]))
    assert big["median_elevation_error"] == pytest.approx(50.0) and big["median_geodesic_error"] == pytest.approx(50.0)
    empty = viewpoint_metrics(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    assert empty["n"] == 0.0 and all(math.isnan(v) for k, v in empty.items() if k != "n")
    assert set(empty) == set(m)


def test_elevation_labels_by_hand_and_clamped_outside_the_range():
    """Centres end to end: -90 + k 180/11. 0 degrees is x = 5.5: half on bins 5 and 6; centre 1
    (-90 + 180/11) is one-hot; beyond +-90 the label is that of +-90 (the last / first bin)."""
    step = 180.0 / 11
    lab = elevation_soft_label(torch.tensor([0.0, -90.0 + step, -90.0 + 2.25 * step, 100.0, -120.0, 90.0]))
    assert lab.shape == (6, 12) and lab.dtype == torch.float32
    expected = torch.zeros(6, 12)
    expected[0, 5] = expected[0, 6] = 0.5
    expected[1, 1] = 1.0
    expected[2, 2], expected[2, 3] = 0.75, 0.25
    expected[3, 11] = expected[5, 11] = 1.0
    expected[4, 0] = 1.0
    assert torch.allclose(lab, expected, atol=1e-6)
    from kpengine.image.viewpoint import elevation_centres

    centres = elevation_centres()
    assert centres.dtype == torch.float32 and torch.allclose(centres, -90.0 + torch.arange(12.0) * step, atol=1e-5)
    assert decode_elevation(expected[1:2]).item() == pytest.approx(-90.0 + step, abs=1e-4)
    assert decode_elevation(torch.full((1, 12), 1 / 12)).item() == pytest.approx(0.0, abs=1e-4)


def test_mirror_average_by_hand():
    """The crop says bin 3 for sure; its mirror image says bin 3 too, which is bin 20 (= 23 - 3) in
    the crop's frame: the average is half on 3, half on 20. Elevations are averaged unflipped (bins
    2 and 5: half each); half-head probabilities 0.8 and 0.4 average to 0.6, logit log 1.5."""
    from kpengine.image.viewpoint import mirror_average

    def sure(n: int, k: int) -> torch.Tensor:
        out = torch.full((1, n), -float("inf"))
        out[0, k] = 0.0
        return out

    a = {"azimuth": sure(24, 3), "elevation": sure(12, 2), "half": torch.tensor([math.log(4.0)])}
    b = {"azimuth": sure(24, 3), "elevation": sure(12, 5), "half": torch.tensor([math.log(2.0 / 3.0)])}
    avg = mirror_average(a, b)
    want_az, want_el = torch.zeros(1, 24), torch.zeros(1, 12)
    want_az[0, 3] = want_az[0, 20] = 0.5
    want_el[0, 2] = want_el[0, 5] = 0.5
    assert torch.allclose(torch.softmax(avg["azimuth"], -1), want_az, atol=1e-9)
    assert torch.allclose(torch.softmax(avg["elevation"], -1), want_el, atol=1e-9)
    assert torch.isfinite(avg["azimuth"]).all() and avg["azimuth"].min() == pytest.approx(math.log(1e-12), rel=1e-5)
    assert avg["half"].item() == pytest.approx(math.log(1.5), abs=1e-6)
    no_half = mirror_average({k: a[k] for k in ("azimuth", "elevation")}, b)
    assert set(no_half) == {"azimuth", "elevation"}
    certain = mirror_average({**a, "half": torch.tensor([50.0])}, {**b, "half": torch.tensor([50.0])})
    # clamped to 1 - 1e-6 (in float32): finite, about 13.8
    assert certain["half"].item() == pytest.approx(math.log((1 - 1e-6) / 1e-6), abs=0.05)
