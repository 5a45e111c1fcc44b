"""Metric values on hand-checked fixtures, and equality with a literal transcription of the
official benchmark's loops (per-shape all-pairs geodesics) on random predictions."""

import numpy as np
import pytest

from kpengine.metrics import THRESHOLDS, dual_alignment_score, mean_average_precision, mean_iou, pck
from kpengine.metrics.saliency import voc_ap

# ----------------------------------------------------------------- reference transcriptions


def reference_iou(shapes, t):
    npos = fp = fn = 0
    for geo, gt, pred in shapes:
        npos += len(gt)
        fp += sum(all(geo[p, g] > t for g in gt) for p in pred)
        fn += sum(all(geo[g, p] > t for p in pred) for g in gt)
    return (npos - fn) / max(npos + fp, np.finfo(np.float64).eps)


def reference_map(shapes, t):
    dets = [(score, s, p) for s, (_, _, pred, scores) in enumerate(shapes) for p, score in zip(pred, scores)]
    dets.sort(key=lambda d: -d[0])  # Python's sort is stable, like kind="stable"
    taken = [[False] * len(gt) for _, gt, _, _ in shapes]
    npos = sum(len(gt) for _, gt, _, _ in shapes)
    tp, fp = [], []
    for _, s, p in dets:
        geo, gt = shapes[s][0], shapes[s][1]
        dmin, jmin = np.inf, -1
        for j, g in enumerate(gt):
            if geo[p, g] < dmin:
                dmin, jmin = geo[p, g], j
        if dmin < t and not taken[s][jmin]:
            taken[s][jmin] = True
            tp.append(1.0), fp.append(0.0)
        else:
            tp.append(0.0), fp.append(1.0)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec, prec = tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec, mpre = np.concatenate(([0.0], rec, [1.0])), np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def random_shapes(seed, n_shapes=12, n=60):
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(n_shapes):
        geo = rng.random((n, n)) * 0.15
        geo = (geo + geo.T) / 2
        np.fill_diagonal(geo, 0)
        gt = rng.choice(n, rng.integers(0, 8), replace=False)
        pred = rng.choice(n, rng.integers(0, 15), replace=False)
        scores = rng.choice([0.1, 0.5, 0.9], len(pred))  # ties on purpose
        shapes.append((geo, gt, pred, scores))
    return shapes


@pytest.mark.parametrize("seed", range(5))
def test_saliency_equals_official_loops(seed):
    shapes = random_shapes(seed)
    dists = [geo[gt] for geo, gt, _, _ in shapes]  # only the ground-truth rows, as kpengine computes
    preds = [pred for _, _, pred, _ in shapes]
    scores = [s for *_, s in shapes]
    for t in THRESHOLDS:
        assert mean_iou(dists, preds, t) == pytest.approx(
            reference_iou([(g, gt, p) for g, gt, p, _ in shapes], t), abs=1e-12
        )
        assert mean_average_precision(dists, preds, scores, t) == pytest.approx(reference_map(shapes, t), abs=1e-12)


def test_iou_by_hand():
    # one shape, 2 ground-truth keypoints (rows), 3 points; predictions at points 0 and 2
    dist = np.array([[0.00, 0.03, 0.08], [0.06, 0.02, 0.05]])
    # t=0.05: pred 0 hits gt 0 (0.00); pred 2 is 0.08 and 0.05 away, 0.05 is not > 0.05 -> hit.
    #         gt 0 matched (0.00), gt 1 matched by pred 2 (0.05). IoU = (2 - 0) / (2 + 0) = 1
    assert mean_iou([dist], [np.array([0, 2])], 0.05) == 1.0
    # t=0.04: pred 2 misses (0.08, 0.05 > 0.04) -> FP 1; gt 1: 0.06, 0.05 > 0.04 -> FN 1. (2-1)/(2+1)
    assert mean_iou([dist], [np.array([0, 2])], 0.04) == pytest.approx(1 / 3)
    # predicting nothing: every ground truth is missed
    assert mean_iou([dist], [np.array([], int)], 0.1) == 0.0


def test_map_by_hand():
    dist = np.array([[0.00, 0.03, 0.20], [0.20, 0.20, 0.01]])  # 2 gt, 3 points
    # ranked: point 1 (0.9) -> nearest gt 0 at 0.03 < 0.05: TP; point 0 (0.8) -> gt 0 already taken: FP;
    # point 2 (0.7) -> gt 1 at 0.01: TP. precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    # envelope: 1 up to recall 1/2, then 2/3 up to 1 -> AP = 0.5 * 1 + 0.5 * 2/3
    ap = mean_average_precision([dist], [np.array([1, 0, 2])], [np.array([0.9, 0.8, 0.7])], 0.05)
    assert ap == pytest.approx(0.5 + 1 / 3)
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)


def test_pck_by_hand():
    shapes = [np.array([0.0, 0.02, np.inf]), np.array([0.005])]
    # t=0.01: shape A 1/3 (0.0), shape B 1/1 -> mean 2/3. t=0.00: nothing is < 0
    assert pck(shapes, [0.0, 0.01, 0.05]).tolist() == pytest.approx([0.0, 2 / 3, (2 / 3 + 1) / 2])


def test_das_by_hand():
    gt_xyz = [np.array([[0, 0, 0], [1, 0, 0]])] * 2
    gt_sem = [np.array([0, 1])] * 2
    aligned = [np.array([[0, 0, 0.1], [1, 0, 0.1]])] * 2
    assert dual_alignment_score(aligned, gt_xyz, gt_sem)["das"] == 1.0
    swapped = [aligned[0], aligned[0][::-1]]
    # forward: index 0 -> ids (0, 1): agreement over 4 ordered pairs = 2/4; same for index 1 -> 0.5
    # backward: id 0 -> indices (0, 1) -> 0.5; id 1 -> (1, 0) -> 0.5
    assert dual_alignment_score(swapped, gt_xyz, gt_sem) == {"forward": 0.5, "backward": 0.5, "das": 0.5}


def reference_das(predicted, gt_xyz, gt_sem):
    """DAS read literally off its definition: loops over shapes, keypoints and ordered pairs."""
    labels, indices = [], {}
    for pred, xyz, sem in zip(predicted, gt_xyz, gt_sem):
        if len(xyz) == 0:
            continue
        row = []
        for p in pred:
            best = min(range(len(xyz)), key=lambda g: (float(np.sum((p - xyz[g]) ** 2)), g))
            row.append(int(sem[best]))
        labels.append(row)
        for g in range(len(xyz)):
            best = min(range(len(pred)), key=lambda k: (float(np.sum((pred[k] - xyz[g]) ** 2)), k))
            indices.setdefault(int(sem[g]), []).append(best)

    def agreement(values):
        return sum(a == b for a in values for b in values) / len(values) ** 2

    forward = np.mean([agreement([row[k] for row in labels]) for k in range(len(labels[0]))])
    backward = np.mean([agreement(v) for v in indices.values()])
    return forward, backward


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_das_equals_the_definition_with_unequal_counts(seed):
    """K = 5 predictions against 1 to 8 ground-truth keypoints per shape (K != G both ways),
    some shapes without keypoints (skipped, not the end of the loop)."""
    rng = np.random.default_rng(seed)
    predicted, gt_xyz, gt_sem = [], [], []
    for i in range(9):
        g = 0 if i in (0, 4) else int(rng.integers(1, 9))
        predicted.append(rng.random((5, 3)))
        gt_xyz.append(rng.random((g, 3)))
        gt_sem.append(rng.choice(10, g, replace=False))
    forward, backward = reference_das(predicted, gt_xyz, gt_sem)
    got = dual_alignment_score(predicted, gt_xyz, gt_sem)
    assert got["forward"] == pytest.approx(forward, abs=1e-12)
    assert got["backward"] == pytest.approx(backward, abs=1e-12)
    assert got["das"] == pytest.approx((forward + backward) / 2, abs=1e-12)


def test_empty_inputs_give_nan_not_errors():
    """No ground truth anywhere: DAS and PCK are undefined (NaN, every key present); mAP and
    IoU have nothing to find (0)."""
    nan3 = dual_alignment_score([np.zeros((4, 3))], [np.zeros((0, 3))], [np.zeros(0, np.int64)])
    assert set(nan3) == {"forward", "backward", "das"} and all(np.isnan(v) for v in nan3.values())
    assert np.isnan(pck([], THRESHOLDS)).all() and len(pck([], THRESHOLDS)) == len(THRESHOLDS)
    assert np.isnan(pck([np.zeros(0)], [0.01, 0.02])).tolist() == [True, True]
    no_gt = [np.zeros((0, 30))]
    assert mean_average_precision(no_gt, [np.array([1, 2])], [np.array([0.9, 0.1])], 0.1) == 0.0
    assert mean_average_precision([], [], [], 0.1) == 0.0
    assert mean_iou(no_gt, [np.array([3])], 0.1) == 0.0
