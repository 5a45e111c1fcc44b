"""Keypoint saliency metrics, pooled over all shapes of a split, as the official benchmark.

Per shape the caller gives ``dist``: geodesic distances (G, N) from the shape's G
ground-truth keypoints to its N points, and the predicted point indices.

* mIoU at threshold t: a prediction is a false positive when it is farther than t
  (strictly ``>``) from every ground-truth keypoint, a ground-truth keypoint a false
  negative when every prediction is farther than t. Pooled over shapes:
  ``IoU = (npos - FN) / (npos + FP)``.
* mAP at threshold t: all predictions of all shapes ranked by score; each is a true
  positive when its nearest ground-truth keypoint is closer than t (strictly ``<``) and
  not yet taken, otherwise a false positive; AP is the area under the VOC precision
  envelope.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EPS = np.finfo(np.float64).eps


def mean_iou(dists: Sequence[np.ndarray], predictions: Sequence[np.ndarray], threshold: float) -> float:
    """Pooled keypoint IoU. ``dists[i]`` is (G_i, N_i); ``predictions[i]`` holds point indices."""
    npos = fp_sum = fn_sum = 0
    for dist, pred in zip(dists, predictions):
        pred = np.asarray(pred, dtype=np.int64)
        d = dist[:, pred]  # (G, P); all() over an empty axis is True, as in the official code
        npos += dist.shape[0]
        fp_sum += int(np.count_nonzero(np.all(d > threshold, axis=0)))
        fn_sum += int(np.count_nonzero(np.all(d > threshold, axis=1)))
    return (npos - fn_sum) / max(npos + fp_sum, _EPS)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope (VOC 2010+ "correct AP"), vectorised."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def mean_average_precision(
    dists: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    threshold: float,
) -> float:
    """Pooled VOC-style average precision of scored keypoint detections.

    Detections are ranked by score, highest first; ties keep their input order (shape
    order, then the order listed), which the official code leaves to an unstable sort.
    """
    npos = sum(d.shape[0] for d in dists)
    shape_of = np.concatenate(
        [np.full(len(p), i, np.int64) for i, p in enumerate(predictions)] or [np.zeros(0, np.int64)]
    )
    conf = np.concatenate([np.asarray(s, np.float64) for s in scores] or [np.zeros(0)])
    # nearest ground truth of every detection and its distance (first minimum, as the official loop)
    nearest = np.full(len(conf), -1, np.int64)
    dmin = np.full(len(conf), np.inf)
    offset = 0
    for dist, pred in zip(dists, predictions):
        pred = np.asarray(pred, dtype=np.int64)
        if dist.shape[0] and len(pred):
            d = dist[:, pred]  # (G, P)
            nearest[offset : offset + len(pred)] = np.argmin(d, axis=0)
            dmin[offset : offset + len(pred)] = d.min(axis=0)
        offset += len(pred)
    order = np.argsort(-conf, kind="stable")
    taken = [np.zeros(d.shape[0], bool) for d in dists]
    tp = np.zeros(len(conf))
    for rank, det in enumerate(order):  # sequential by nature: a ground truth is taken once
        if dmin[det] < threshold:
            seen = taken[shape_of[det]]
            if not seen[nearest[det]]:
                tp[rank] = 1.0
                seen[nearest[det]] = True
    fp = 1.0 - tp
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / float(npos) if npos else np.zeros_like(tp)
    precision = tp / np.maximum(tp + fp, _EPS)
    return voc_ap(recall, precision)
