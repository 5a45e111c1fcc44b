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
