"""How consistently an unsupervised detector's keypoint k lands on the same human semantic id.

For each shape, keypoint k takes the semantic id of its nearest ground-truth keypoint (Euclidean,
as DAS's forward direction). Keypoint k's **consistency** is the share of shapes on which it takes
its most frequent (modal) id; the detector's is the mean over k. Unlike DAS's forward score
(the chance that two shapes agree), it reads directly as "keypoint 3 is the left headboard
corner on 80 % of beds", and the modal ids name what each keypoint learned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nearest_semantic_ids(predicted: np.ndarray, gt_xyz: np.ndarray, gt_semantic: np.ndarray) -> np.ndarray:
    """(K,) semantic id of the ground-truth keypoint nearest each of the K predictions (K, 3)."""
    d = np.sum((np.asarray(predicted)[:, None, :] - np.asarray(gt_xyz)[None, :, :]) ** 2, axis=-1)
    return np.asarray(gt_semantic)[np.argmin(d, axis=1)]


def semantic_consistency(
    predicted: Sequence[np.ndarray], gt_xyz: Sequence[np.ndarray], gt_semantic: Sequence[np.ndarray]
) -> dict:
    """``predicted[i]`` (K, 3) ordered keypoints of shape i; shapes without ground truth are
    skipped. Returns {"consistency", "per_keypoint" (K,), "modal_ids" (K,)}."""
    labels = np.stack(
        [nearest_semantic_ids(p, x, s) for p, x, s in zip(predicted, gt_xyz, gt_semantic) if len(x)]
    )  # (n_shapes, K)
    per_k, modes = [], []
    for column in labels.T:
        ids, counts = np.unique(column, return_counts=True)
        per_k.append(float(counts.max() / len(column)))
        modes.append(int(ids[np.argmax(counts)]))
    return {"consistency": float(np.mean(per_k)), "per_keypoint": per_k, "modal_ids": modes}


def evaluate_unsupervised(dataset, predictions: dict, *, gt_distances: list | None = None) -> dict:
    """DAS, keypoint consistency and mIoU of ordered keypoint sets on an annotated split.

    ``dataset``: a :class:`~kpengine.data.dataset.KeypointNetDataset`;
    ``predictions``: {model_id: (point indices (K,), scores (K,))} as
    :func:`kpengine.io.predictions.load_saliency_predictions` gives, **entry k = keypoint k**.
    DAS and consistency read the keypoints' positions (the named cloud points) against the human
    keypoints (Euclidean, model frame); mIoU at 0.01..0.10 is the saliency benchmark's
    (geodesic, official protocol, all K points listed). Shapes without a prediction are skipped
    by DAS and consistency and count as misses in mIoU; DAS is NaN and consistency None when the
    shapes have different numbers of keypoints (no keypoint k to follow)."""
    from kpengine.metrics.das import dual_alignment_score
    from kpengine.metrics.evaluate import evaluate_saliency

    # a shape with no keypoint predicted (a thresholded saliency net can keep none) has no order to score
    shapes = [s for s in dataset if len(predictions.get(s.model_id, ((),))[0]) and len(s.keypoints)]
    xyz = [s.points[np.asarray(predictions[s.model_id][0], np.int64)] for s in shapes]
    truth = [s.keypoints for s in shapes]
    sem = [s.semantic_ids for s in shapes]
    ordered = len({len(p) for p in xyz}) == 1  # K per shape; otherwise (saliency nets) no keypoint k exists
    nan = float("nan")
    das = dual_alignment_score(xyz, truth, sem) if ordered else {"das": nan, "forward": nan, "backward": nan}
    cons = semantic_consistency(xyz, truth, sem) if ordered else None
    sal = evaluate_saliency(dataset, predictions, gt_distances=gt_distances)
    miou = dict(zip((round(t, 2) for t in sal.thresholds), (float(v) for v in sal.metrics["miou"])))
    return {
        "shapes": len(shapes),
        "das": das["das"],
        "das_forward": das["forward"],
        "das_backward": das["backward"],
        "consistency": None if cons is None else cons["consistency"],
        "modal_ids": None if cons is None else cons["modal_ids"],
        "per_keypoint": None if cons is None else cons["per_keypoint"],
        "miou": miou,
    }


def evaluate_das_file(data: str, category: str, split: str, path: str) -> dict:
    """:func:`evaluate_unsupervised` of a saliency-format file of ordered keypoints (``kpengine
    predict`` of an unsupervised run) on a split; adds the loader's warnings."""
    from kpengine.data.dataset import KeypointNetDataset
    from kpengine.errors import DataError
    from kpengine.metrics.evaluate import load_saliency_predictions

    dataset = KeypointNetDataset(data, category, split)
    if not len(dataset):
        raise DataError(f"{category}/{split} has no usable shapes under {data}: {dataset.problem_summary()}")
    preds, warnings = load_saliency_predictions(path, dataset)
    result = evaluate_unsupervised(dataset, preds)
    return {"task": "das", "category": dataset.category.name, "split": split, **result, "warnings": warnings}
