"""The keypoint-heatmap network's decoding and coordinates, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kpengine.image.crops import resample
from kpengine.image.heatmap import (
    HeatmapNet,
    decode,
    gaussian_targets,
    heatmap_loss,
    heatmap_to_image,
    image_to_heatmap,
)
from kpengine.image.tasks.keypoint_heatmap import move_keypoints


def test_decode_finds_the_parabola_vertex_by_hand():
    logits = torch.full((1, 2, 10, 12), -50.0)
    # channel 0: arg-max at x=7, y=5; along x the neighbours are -1 (left) and -3 (right):
    # the parabola through (6, -1), (7, 0), (8, -3) is -2 (x-7)^2 - (x-7), vertex at x = 7 - 1/4
    logits[0, 0, 5, 7] = 0.0
    logits[0, 0, 5, 6], logits[0, 0, 5, 8] = -1.0, -3.0
    logits[0, 0, 4, 7], logits[0, 0, 6, 7] = -2.0, -2.0  # symmetric in y: no step
    # channel 1: the peak on the left border: no sub-pixel step along x; y: neighbours -4 above, -2 below
    # -> parabola -3 (y-2)^2 + (y-2), vertex at y = 2 + 1/6
    logits[0, 1, 2, 0] = 0.0
    logits[0, 1, 2, 1] = -1.0
    logits[0, 1, 1, 0], logits[0, 1, 3, 0] = -4.0, -2.0
    uv, peak = decode(logits)
    np.testing.assert_allclose(uv[0, 0].numpy(), [6.75, 5.0], atol=1e-5)
    np.testing.assert_allclose(uv[0, 1].numpy(), [0.0, 2 + 1 / 6], atol=1e-5)
    # the peak probability is the softmax at the arg-max: e^0 / (e^0 + e^-1 + e^-3 + 2 e^-2 + 115 e^-50)
    expected = 1 / (1 + np.exp(-1) + np.exp(-3) + 2 * np.exp(-2))
    assert float(peak[0, 0]) == pytest.approx(expected, rel=1e-5)


def test_decode_of_a_gaussian_recovers_its_centre_exactly():
    # the log of a Gaussian is a parabola, so the three-point vertex is exact at any sub-pixel centre
    uv = torch.tensor([[[10.3, 4.8], [0.6, 13.45], [15.0, 15.0]]])
    t = gaussian_targets(uv, 16, sigma=1.5)
    assert torch.allclose(t.sum((-2, -1)), torch.ones(1, 3))
    got, _ = decode(torch.log(t.clamp_min(1e-30)))
    np.testing.assert_allclose(got[0].numpy(), uv[0].numpy(), atol=1e-3)


def test_heatmap_and_image_coordinates():
    # a 64 px heatmap over a 128 x 96 image: measured from the image's left / top edge, heatmap pixel j
    # spans [2j, 2j + 2) in x and [1.5j, 1.5j + 1.5) in y; its centre 2j + 1, 1.5j + 0.75 is, with pixel
    # centres whole, u = 2j + 0.5 and v = 1.5j + 0.25
    np.testing.assert_allclose(heatmap_to_image(np.array([[0.0, 0.0], [63.0, 63.0]]), 64, 128, 96),
                               [[0.5, 0.25], [126.5, 94.75]])  # fmt: skip
    pts = np.array([[3.2, 70.1], [-0.5, 95.5]])
    np.testing.assert_allclose(heatmap_to_image(image_to_heatmap(pts, 64, 128, 96), 64, 128, 96), pts)


def test_moved_keypoints_follow_the_resampled_pixels():
    # a smooth spot (Gaussian, sigma 2 px) at u = 24, v = 20: its centroid survives bilinear resampling
    jj, ii = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="xy")
    img = torch.exp(-((jj - 24) ** 2 + (ii - 20) ** 2) / 8.0).expand(1, 3, 48, 48)
    zoom, shift = torch.tensor([0.8]), torch.tensor([[0.1, -0.05]])
    out = resample(img, 64, zoom, shift, mode="bilinear")[0, 0]
    # the intensity-weighted centre of the resampled spot is where the formula sends the pixel
    w = out / out.sum()
    jj, ii = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="xy")
    centre = torch.stack([(w * jj).sum(), (w * ii).sum()])
    moved = move_keypoints(torch.tensor([[[24.0, 20.0]]]), 48, 64, zoom, shift)[0, 0]
    np.testing.assert_allclose(moved.numpy(), centre.numpy(), atol=0.01)
    # by hand: x_in = 49/48 - 1, x_out = (x_in - 0.2) / 0.8, u = (64 (x_out + 1) - 1) / 2
    assert float(moved[0]) == pytest.approx((64 * ((49 / 48 - 1 - 0.2) / 0.8 + 1) - 1) / 2)


def test_loss_counts_only_visible_keypoints_and_a_small_net_fits_one_image():
    torch.manual_seed(0)
    net = HeatmapNet(3, (8, 16))
    x = torch.randn(2, 3, 16, 16)
    uv = torch.tensor([[[4.0, 5.0], [9.0, 2.0], [0.0, 0.0]], [[12.0, 12.0], [3.0, 7.0], [0.0, 0.0]]])
    vis = torch.tensor([[True, True, False], [True, False, False]])
    out = net(x)
    assert out["heatmap"].shape == (2, 3, 16, 16) and out["visible"].shape == (2, 3)
    moved = uv.clone()
    moved[0, 2] = torch.tensor([15.0, 15.0])  # where an invisible keypoint sits does not matter
    with torch.no_grad():
        assert float(heatmap_loss(out, uv, vis)) == pytest.approx(float(heatmap_loss(out, moved, vis)))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = heatmap_loss(net(x), uv, vis)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        out = net(x)
    got, _ = decode(out["heatmap"])
    err = torch.linalg.norm(got - uv, dim=-1)[vis]
    assert float(err.max()) < 1.0
    assert ((out["visible"] > 0) == vis).all()
