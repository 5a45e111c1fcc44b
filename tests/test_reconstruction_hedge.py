"""The half-turn hedge's pre-registered choice on val (docs/reconstruction.md, eighth pass;
benchmarks/reconstruction_hedge.py and reconstruction_refined.py's hedge rows), on cases worked out by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reconstruction_hedge import DEFAULT, choose, cross_validated_gain, gate_on_test, scores, shape_folds  # noqa: E402
from reconstruction_refined import hedge_grid_pairs, hedge_probs  # noqa: E402

from kpengine.image.reconstruct.photo import cue_share, half_turn_share  # noqa: E402


def test_grid_and_formula() -> None:
    """13 cone weights x 7 half-turn shares = 91 pairs, holding the default (1/2, 0) and the seventh pass's
    thirds (2/3, 1/2); the formula at the thirds is a third each of the default, the cone and its half turn."""
    pairs = hedge_grid_pairs(12)
    assert len(pairs) == 91 and len(set(pairs)) == 91
    assert DEFAULT in pairs and (8 / 12, 6 / 12) in pairs and max(h for _, h in pairs) == 0.5
    d, c, t = np.array([0.9, 0.0]), np.array([0.3, 0.6]), np.array([0.0, 0.9])
    np.testing.assert_allclose(hedge_probs(d, c, t, 2 / 3, 0.5), (d + c + t) / 3)
    np.testing.assert_allclose(hedge_probs(d, c, t, 0.5, 0.0), (d + c) / 2)


def test_choice_prefers_the_default_among_near_ties() -> None:
    """Largest score 0.4108 at (1, 1/2); within 0.001 of it also (3/4, 1/4) 0.4105 and (2/3, 1/2) 0.4100, at
    distances 0.354, 0.527 and 0.707 from (1/2, 0): (3/4, 1/4) is chosen; with tol 0 the largest."""
    s = {(0.5, 0.0): 0.40, (0.75, 0.25): 0.4105, (2 / 3, 0.5): 0.4100, (1.0, 0.5): 0.4108, (0.25, 0.0): 0.4097}
    assert choose(s) == (0.75, 0.25)
    assert choose(s, tol=0.0) == (1.0, 0.5)
    assert choose({DEFAULT: 0.3, (1.0, 0.5): 0.3005}) == DEFAULT  # a tie within tol keeps the default


def test_folds_alternate_sorted_shapes_and_cross_validate_by_hand() -> None:
    """Folds: model ids sorted a, b, c -> A, B, A. Cross-validation on two categories of two one-view shapes:
    fold A (m1, n1) scores the default 0.3 and P = (1, 1/2) 0.375 -> P, which loses 0.1 on m2 and gains 0.05
    on n2; fold B scores the default 0.3 and P 0.275 -> the default, gain 0 on m1 and n1. Per category the mean
    over its views: X (0 - 0.1) / 2 = -0.05, Y (0 + 0.05) / 2 = 0.025; their mean -0.0125."""
    assert shape_folds(["b", "a", "c", "a", "b"]).tolist() == [False, True, True, True, False]
    p = (1.0, 0.5)
    ious = {
        DEFAULT: {"X": np.array([0.4, 0.4]), "Y": np.array([0.2, 0.2])},
        p: {"X": np.array([0.5, 0.3]), "Y": np.array([0.25, 0.25])},
    }
    assert scores(ious) == pytest.approx({DEFAULT: 0.3, p: (0.4 + 0.25) / 2})
    cv = cross_validated_gain(ious, {"X": ["m1", "m2"], "Y": ["n1", "n2"]})
    assert cv["chosen"] == {"on A": p, "on B": DEFAULT}
    assert cv["gain"] == pytest.approx({"X": -0.05, "Y": 0.025})
    assert cv["gain_mean"] == pytest.approx(-0.0125)
    assert cv["gain_sem"]["X"] == pytest.approx(0.05 / np.sqrt(2))  # std of (0, -0.1) is 0.05


def test_the_test_gate_by_hand() -> None:
    """Bathtub gains (0.01, 0.03): +0.02; bed (-0.02, 0.00): -0.01, standard error 0.01 / sqrt 2 = 0.0071, so
    -1.4 errors: mean +0.005, not a loss. Bed (-0.04, -0.02): -0.03, -4.2 errors, mean -0.005: a loss; with
    bathtub (0.05, 0.07) the mean is +0.015, but the bed's -4.2 errors still lose."""
    pv = {"bathtub": {"refined": [0.5, 0.5], "h": [0.51, 0.53]}, "bed": {"refined": [0.4, 0.4], "h": [0.38, 0.40]}}
    g = gate_on_test(pv, "h")
    assert g["paired"] == pytest.approx({"bathtub": 0.02, "bed": -0.01}) and g["paired_mean"] == pytest.approx(0.005)
    assert g["does_not_lose"]
    pv["bed"]["h"] = [0.36, 0.38]
    assert not gate_on_test(pv, "h")["does_not_lose"]
    pv["bathtub"]["h"] = [0.55, 0.57]
    g = gate_on_test(pv, "h")
    assert g["paired_mean"] == pytest.approx(0.015) and not g["does_not_lose"]


def test_front_back_cue_by_hand() -> None:
    """24 bins of 15°. All mass in bin 1 (centre 22.5°): at a = 30° the triangle of half-width 30° weighs it
    1 - 7.5 / 30 = 0.75, at the half turn (210°) 0: share 0; at a = 200° the reverse: share 1 (capped at 1/2 by
    the cue). Mass 0.6 in bin 0 (7.5°) and 0.4 in bin 12 (187.5°), a = 7.5°: m(a) = 0.6, m(a + 180°) = 0.4
    (each bin at its own centre): 0.4 -> rounded to 5/12. No mass near either: 1/2."""
    p = np.zeros((4, 24))
    p[0, 1] = p[1, 1] = 1.0
    p[2, 0], p[2, 12] = 0.6, 0.4
    p[3, 6] = 1.0  # 97.5°: 67.5° from both 30° and 210°
    s = half_turn_share(p, np.array([30.0, 200.0, 7.5, 30.0]))
    np.testing.assert_allclose(s, [0.0, 1.0, 0.4, 0.5])
    np.testing.assert_allclose(cue_share(s), [0.0, 0.5, 5 / 12, 0.5])
    # a bin straddling the half-width: bin 3 (52.5°) seen from 30°: 22.5° away, weight 0.25; bin 15 (232.5°)
    # from 210°: the same; 0.2 and 0.8 of the mass -> 0.8 * 0.25 / (0.2 * 0.25 + 0.8 * 0.25) = 0.8
    q = np.zeros((1, 24))
    q[0, 3], q[0, 15] = 0.2, 0.8
    np.testing.assert_allclose(half_turn_share(q, np.array([30.0])), [0.8])
    w = np.array([0.0, 0.5])[:, None, None, None]
    d, c, t = np.ones((2, 1, 1, 1)), np.zeros((2, 1, 1, 1)), np.full((2, 1, 1, 1), 0.5)
    np.testing.assert_allclose(hedge_probs(d, c, t, 0.5, w).ravel(), [0.5, 0.625])  # per-view shares
