"""The one geometry convention (kpengine.geometry.transforms): sense of rotations, so(3), bbox centre."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kpengine.geometry.transforms import bbox_centre, rotate_about_y, rotation_about, skew, so3_exp
from kpengine.metrics.relabel import official_turn


@pytest.mark.parametrize(
    ("axis", "src", "dst"),
    [
        ("x", (0, 1, 0), (0, 0, 1)),
        ("y", (0, 0, 1), (1, 0, 0)),
        ("z", (1, 0, 0), (0, 1, 0)),
        ("y", (1, 0, 0), (0, 0, -1)),
    ],
)
def test_quarter_turns_follow_the_right_hand_rule(axis, src, dst):
    r = rotation_about(axis, np.pi / 2)
    np.testing.assert_allclose(r @ np.array(src, float), dst, atol=1e-15)
    np.testing.assert_allclose(np.array([src], float) @ r.T, [dst], atol=1e-15)  # rows: points @ R.T
    assert np.isclose(np.linalg.det(r), 1.0) and np.allclose(r @ r.T, np.eye(3))
    assert np.array_equal(rotation_about(axis, 0.3), rotation_about("xyz".index(axis), 0.3))


def test_rotate_about_y_turns_about_the_vertical_line_through_the_centre():
    rng = np.random.default_rng(0)
    pts, centre = rng.normal(size=(50, 3)), rng.normal(size=3)
    out = rotate_about_y(pts, 0.8, centre)
    np.testing.assert_allclose(out[:, 1], pts[:, 1])  # heights kept
    r_before = np.linalg.norm((pts - centre)[:, [0, 2]], axis=1)
    np.testing.assert_allclose(np.linalg.norm((out - centre)[:, [0, 2]], axis=1), r_before)
    # the angle in the (z, x) plane grows by 0.8 (right-handed about +y takes z towards x)
    before = np.arctan2((pts - centre)[:, 0], (pts - centre)[:, 2])
    after = np.arctan2((out - centre)[:, 0], (out - centre)[:, 2])
    np.testing.assert_allclose(np.angle(np.exp(1j * (after - before))), 0.8, atol=1e-12)


def test_official_relabelling_turn_is_the_official_matrix():
    """The official code's matrix [[c, 0, -s], [0, 1, 0], [s, 0, c]] for 2 pi i / n, transcribed literally."""
    for i, n in ((1, 4), (3, 36), (1, 2)):
        a = 2 * np.pi * i / n
        c, s = np.cos(a), np.sin(a)
        official = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
        assert np.array_equal(rotation_about("y", official_turn(i, n)), official)


def test_so3_exp_is_rodrigues_and_skew_is_the_cross_product():
    rng = np.random.default_rng(1)
    for w in rng.normal(scale=1.5, size=(20, 3)):
        wt = torch.from_numpy(w)
        v = torch.from_numpy(rng.normal(size=3))
        assert torch.allclose(skew(wt) @ v, torch.linalg.cross(wt, v))
        theta, k = np.linalg.norm(w), w / np.linalg.norm(w)
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        rodrigues = np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx
        np.testing.assert_allclose(so3_exp(wt).numpy(), rodrigues, atol=1e-12)
    # same sense as rotation_about: a turn vector along +y is rotation_about("y")
    np.testing.assert_allclose(so3_exp(torch.tensor([0.0, 0.7, 0.0], dtype=torch.float64)).numpy(),
                               rotation_about("y", 0.7), atol=1e-14)  # fmt: skip


def test_so3_exp_gradients_including_at_zero():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(so3_exp, (w,))
    assert torch.autograd.gradcheck(so3_exp, (torch.tensor([0.3, -1.1, 0.4], dtype=torch.float64, requires_grad=True),))
    so3_exp(w)[0, 1].backward()  # d R01 / d w at 0 = -1 along z (R ~ I + [w]x)
    np.testing.assert_allclose(w.grad.numpy(), [0.0, 0.0, -1.0])


def test_bbox_centre_is_the_box_midpoint_not_the_mean():
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, -4.0, 1.0]], np.float32)
    c = bbox_centre(pts)
    assert c.dtype == np.float32
    np.testing.assert_array_equal(c, [1.0, -2.0, 0.5])
