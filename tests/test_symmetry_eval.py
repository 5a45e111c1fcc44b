"""--symmetry best: a prediction that is a valid rotation of the ground truth scores fully."""

import numpy as np

from kpengine.data import KeypointNetDataset
from kpengine.metrics.evaluate import evaluate_correspondence
from kpengine.metrics.relabel import rotational_relabellings


def test_rotated_prediction_wins_only_under_best_symmetry(sample_root):
    tables = KeypointNetDataset(sample_root, "table", "all")
    square = [s for s in tables if len(rotational_relabellings(s, tables.n_classes)) == 4]
    assert square, "the sample data should hold square tables with a 4-fold rotation group"
    preds = {}
    for s in square:
        rotated = rotational_relabellings(s, tables.n_classes)[1]  # a quarter turn about the vertical axis
        assert not np.array_equal(rotated, s.index_by_semantic_id(tables.n_classes))
        preds[s.model_id] = {int(i): int(p) for i, p in enumerate(rotated) if p >= 0}
    subset = KeypointNetDataset(sample_root, "table", "all", model_ids=list(preds))
    plain = evaluate_correspondence(subset, preds).metrics["pck"]
    best = evaluate_correspondence(subset, preds, symmetry="best").metrics["pck"]
    assert best[1:] == [1.0] * 10
    assert plain[5] < 0.5  # the corners moved to their neighbours: far at 0.05


def _ring_shape(category: str, circle: bool = False):  # noqa: ANN202
    """A ring of 360 cloud points (radius 0.5, one per degree, the angle measured from +x towards +z)
    about the vertical axis through (0.3, *, -0.2) at height 0.4; point 0 at angle 0. Keypoints:
    ids 0-3 at angles 0, 90, 180, 270 (one rotation group: its centre is the ring's), id 4 at 30."""
    from kpengine.categories import Category
    from kpengine.data.shape import Shape
    from kpengine.io.annotations import RotationGroup, Symmetries

    a = np.deg2rad(np.arange(360))
    points = np.stack([0.3 + 0.5 * np.cos(a), np.full(360, 0.4), -0.2 + 0.5 * np.sin(a)], axis=1)
    idx = np.array([0, 90, 180, 270, 30])
    return Shape(
        model_id="ring",
        category=Category(category, "00000000"),
        points=points.astype(np.float32),
        colors=None,
        keypoints=points[idx].astype(np.float32),
        semantic_ids=np.arange(5),
        point_indices=idx,
        symmetries=Symmetries(rotation=[RotationGroup([0, 1, 2, 3], is_circle=circle)]),
        annotation=None,  # type: ignore[arg-type]
        source="pcd",
    )


def test_relabellings_turn_like_the_official_code():
    """The official loader (benchmark_scripts/dataset.py) turns keypoints by ``(kp - c) @ M.T + c`` with
    ``M = [[cos a, 0, -sin a], [0, 1, 0], [sin a, 0, cos a]]``, a = 2 pi i / n: M takes +x towards +z,
    so on the ring (angles from +x towards +z) the i-th turn adds 360 i / n degrees. The quarter turn takes the
    keypoint at angle 30 to the ring point at 120 (a turn the other way would give 300), and each
    corner to the next one. Worked by hand on the ring; id 5 is absent (-1 in every labelling)."""
    labellings = rotational_relabellings(_ring_shape("table"), 6)
    assert len(labellings) == 4
    assert labellings[0].tolist() == [0, 90, 180, 270, 30, -1]
    for i in (1, 2, 3):
        turn = 90 * i
        expected = [(p + turn) % 360 for p in (0, 90, 180, 270, 30)] + [-1]
        assert labellings[i].tolist() == expected, i


def test_circles_take_36_steps_and_chairs_none():
    circle = rotational_relabellings(_ring_shape("table", circle=True), 5)
    assert len(circle) == 36
    assert circle[1].tolist() == [10, 100, 190, 280, 40]  # 10 degrees a step
    assert len(rotational_relabellings(_ring_shape("chair"), 5)) == 1  # the benchmark leaves chairs out
