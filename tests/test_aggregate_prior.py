"""The cross-model position prior (kpengine.aggregate.prior) on hand-made models.

Every model below is a per-axis stretch and shift of one template, so the place of an id on
a model is known in closed form: template position x stretch + shift. A prior that fits a
per-axis map on the shared ids must give exactly that; a click far from it gives way to it.
"""

import numpy as np
import pytest

from kpengine.aggregate.classes import ClassConfig, assign_by_classes
from kpengine.aggregate.embedding import TrainingClicks
from kpengine.aggregate.prior import PositionPrior, PriorConfig, fuse
from kpengine.geometry.geodesic import GeodesicGraph

# a unit box's corners and an edge midpoint: ids 0-4 (box coordinates; the cloud's extent is the unit cube)
TEMPLATE = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.5, 1.0, 0.0]])
CUBE = np.array([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])


def _models(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` (points, keypoints) pairs: the cube's corners plus the template, stretched and shifted per axis."""
    rng = np.random.default_rng(seed)
    clouds, kps = [], []
    for _ in range(n):
        scale, shift = rng.uniform(0.5, 2.0, 3), rng.uniform(-1.0, 1.0, 3)
        clouds.append(np.vstack([CUBE, TEMPLATE]) * scale + shift)
        kps.append(TEMPLATE * scale + shift)
    return clouds, kps


def test_prior_recovers_an_id_exactly_when_models_are_stretched_copies():
    clouds, kps = _models(6)
    # every model knows ids 0-4, except model 0, which lacks id 4: predict it
    model = np.array([m for m in range(6) for i in range(5) if (m, i) != (0, 4)])
    label = np.array([i for m in range(6) for i in range(5) if (m, i) != (0, 4)])
    xyz = np.stack([kps[m][i] for m, i in zip(model, label)])
    prior = PositionPrior(clouds, model, label, xyz, 5)
    np.testing.assert_allclose(prior.predict(0, 4), kps[0][4], atol=1e-9)
    # a known id is predicted from the others too (leave-one-out is the caller's business: here all agree)
    np.testing.assert_allclose(prior.predict(3, 1), kps[3][1], atol=1e-9)


def test_prior_needs_references_sharing_enough_ids():
    clouds, kps = _models(4)
    model, label = np.array([0, 0, 1, 1, 1, 2, 2, 2]), np.array([0, 1, 0, 1, 4, 0, 1, 4])
    xyz = np.stack([kps[m][i] for m, i in zip(model, label)])
    # model 0 shares only 2 ids (0, 1) with the models that have id 4: below min_shared = 3
    assert PositionPrior(clouds, model, label, xyz, 5).predict(0, 4) is None
    # allowed 2 shared ids and 2 references, the two references' map carries id 4 over exactly
    cfg = PriorConfig(min_shared=2, min_references=2)
    np.testing.assert_allclose(PositionPrior(clouds, model, label, xyz, 5, cfg).predict(0, 4), kps[0][4], atol=1e-9)
    assert PositionPrior(clouds, model, label, xyz, 5, cfg).predict(3, 4) is None  # model 3 has no keypoints
    assert PositionPrior(clouds, model, label, xyz, 5, cfg).predict(0, 7) is None  # an id nobody has


def test_prior_falls_back_to_a_shift_when_shared_ids_do_not_spread_on_an_axis():
    """All models are the unit cube (box coordinates = coordinates). The shared ids 0-2 lie at
    one height, y = 0.3 on the references and y = 0.2 on model 0: no y stretch can be fitted,
    so y is shifted by 0.2 - 0.3 and id 3 (y = 0.8 on the references) lands at y = 0.7. In x
    and z the shared ids spread and the maps are the identity: id 3 keeps (0.4, ., 0.6)."""
    clouds = [CUBE.copy() for _ in range(4)]
    ref = np.array([[0.1, 0.3, 0.0], [0.9, 0.3, 0.5], [0.5, 0.3, 1.0], [0.4, 0.8, 0.6]])
    mine = ref[:3] - [0.0, 0.1, 0.0]
    model = np.array([0, 0, 0] + [m for m in (1, 2, 3) for _ in range(4)])
    label = np.array([0, 1, 2] + [0, 1, 2, 3] * 3)
    xyz = np.vstack([mine, ref, ref, ref])
    pred = PositionPrior(clouds, model, label, xyz, 4).predict(0, 3)
    np.testing.assert_allclose(pred, [0.4, 0.7, 0.6], atol=1e-9)
    # a reference stretched 3x in x (beyond 1 +- max_stretch) is carried over by a shift in x as well
    wide = ref * [3.0, 1.0, 1.0]
    xyz = np.vstack([mine, wide, wide, wide])
    clouds = [CUBE.copy()] + [CUBE * [3.0, 1.0, 1.0] for _ in range(3)]  # box coordinates stay those of ref
    np.testing.assert_allclose(PositionPrior(clouds, model, label, xyz, 4).predict(0, 3), [0.4, 0.7, 0.6], atol=1e-9)


def test_fuse_weights_click_and_prior_by_their_spreads_and_drops_a_far_click():
    cfg = PriorConfig(spread=0.03, agree=0.15)
    click, prior = np.array([0.0, 0.0, 0.0]), np.array([0.04, 0.0, 0.0])
    # equal spreads: the midpoint; a click twice as noisy weighs a quarter: 0.04 * 4 / 5 from the click
    np.testing.assert_allclose(fuse(click, prior, 0.03, cfg), [0.02, 0.0, 0.0])
    np.testing.assert_allclose(fuse(click, prior, 0.06, cfg), [0.032, 0.0, 0.0])
    far = np.array([0.2, 0.0, 0.0])
    np.testing.assert_allclose(fuse(click, far, 0.01, cfg), far)


def _grid_model(scale: float) -> np.ndarray:
    """A flat grid of points 0.01 apart on [0, 1] x [0, 1] at z = 0, stretched in x by ``scale``."""
    g = np.stack(np.meshgrid(np.arange(0, 1.001, 0.01), np.arange(0, 1.001, 0.01)), -1).reshape(-1, 2)
    return np.column_stack([g[:, 0] * scale, g[:, 1], np.zeros(len(g))])


@pytest.mark.parametrize("mode", ["prior", "reject", "no points"])
def test_a_lone_wrong_click_is_moved_or_dropped_by_what_the_other_models_say(mode):
    """Eight grids, four ids at fixed box coordinates; two annotators click all four on every
    model, except on model 0, where only annotator 0 clicks id 3, and clicks it at the far
    corner, 0.57 from its place. The prior (the other seven models, through ids 0-2) says
    where id 3 is: with ``far="prior"`` the keypoint goes there, with ``far="reject"`` (the
    default) it is dropped; without points the old rule keeps the wrong click where it is."""
    spots = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.5, 0.6]])
    clouds, clicks = [], []
    for m in range(8):
        pts = _grid_model(1.0 + 0.1 * m)
        idx = [int(np.argmin(((pts[:, :2] - s * [1.0 + 0.1 * m, 1.0]) ** 2).sum(1))) for s in spots]
        pidx, lab, ann = [], [], []
        for a in (0, 1):
            for k in range(4):
                if m == 0 and k == 3 and a == 1:
                    continue
                p = idx[k]
                if m == 0 and k == 3:
                    p = int(np.argmin(((pts[:, :2] - [1.0, 1.0]) ** 2).sum(1)))  # the wrong click
                pidx.append(p), lab.append(4 * a + k), ann.append(a)
        clouds.append(pts)
        clicks.append(TrainingClicks(np.array(pidx), np.array(lab), np.array(ann)))
    graphs = [GeodesicGraph(p, protocol="strict") for p in clouds]
    fid = [np.zeros(len(p)) for p in clouds]  # fidelity support 1 everywhere: the old rule keeps every lone click
    far = "prior" if mode == "prior" else "reject"
    cfg = ClassConfig(position=PriorConfig(min_references=3, far=far))
    cm, cp, labels, keep, stats = assign_by_classes(
        graphs,
        clicks,
        np.array([0, 0, 0, 0, 1, 1, 1, 1]),
        fid,
        0.03,
        4,
        cfg,
        points=None if mode == "no points" else clouds,
    )
    got = clouds[0][cp[(cm == 0) & keep]]
    d3 = np.linalg.norm(got - [0.5, 0.6, 0.0], axis=1).min()
    dcorner = np.linalg.norm(got - [1.0, 1.0, 0.0], axis=1).min()
    assert all(keep[cm == m].sum() == 4 for m in range(1, 8))  # the other models keep all four
    if mode == "prior":
        assert keep[cm == 0].sum() == 4 and d3 < 0.015 and dcorner > 0.5, got
        assert stats["single_annotator_placed_by_prior"] == 1 and stats["single_annotator_moved_by_prior"] == 1
    elif mode == "reject":
        assert keep[cm == 0].sum() == 3 and dcorner > 0.5 and d3 >= 0.5 - 1e-9  # id 2's keypoint is 0.5 away
        assert stats["single_annotator_placed_by_prior"] == 0 and stats["single_annotator_dropped_by_prior"] == 1
    else:
        assert keep[cm == 0].sum() == 4 and dcorner < 1e-9 and d3 >= 0.5 - 1e-9
        assert stats["single_annotator_placed_by_prior"] == 0
    assert len(np.unique(labels[(cm == 0) & keep])) == keep[cm == 0].sum()


def test_prior_config_names_a_bad_far_rule():
    with pytest.raises(ValueError, match="far"):
        PriorConfig(far="maybe")
