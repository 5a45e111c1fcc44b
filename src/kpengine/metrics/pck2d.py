"""PCK on 2D keypoints (KeypointNet paper eq. 8), for the rendered 2D benchmark.

A visible keypoint is correct when its prediction lies within ``alpha * max(h, w)`` pixels,
where ``(h, w)`` is the image size (``img``) or the bounding box size (``bbox``). A missing
image, a missing keypoint or a non-finite prediction counts as wrong; invisible keypoints are
not counted. Annotations and predictions are those of :mod:`kpengine.io.benchmark2d`.
"""

from __future__ import annotations

import numpy as np

ALPHAS = (0.05, 0.1, 0.15)


def pck(
    annotations: dict[str, dict], predictions: dict[str, dict[str, list[float]]], alphas=ALPHAS
) -> dict[str, dict[str, float]]:
    """PCK per category (and "all") at each alpha, for ``img`` and ``bbox`` normalisation, over visible keypoints.

    Returns ``{category: {"img@0.1": value, "bbox@0.1": value, ..., "n": visible keypoints}}``."""
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for image_id, ann in annotations.items():
        pred = predictions.get(image_id, {})
        x0, y0, x1, y1 = ann["bndbox"]
        img_size = max(ann["image_width"], ann["image_height"])
        box_size = max(x1 - x0 + 1, y1 - y0 + 1)
        for (u, v), sid, vis in zip(ann["kps"], ann["kps_ids"], ann["kps_visible"]):
            if not vis:
                continue
            p = pred.get(str(sid))
            err = float(np.hypot(p[0] - u, p[1] - v)) if p is not None and np.isfinite(p).all() else np.inf
            rows.setdefault(ann["category"], []).append((err, img_size, box_size))
    out = {}
    every = [r for rs in rows.values() for r in rs]
    for cat, rs in {**rows, "all": every}.items():
        e, img, box = (np.array(c, np.float64) for c in zip(*rs)) if rs else (np.zeros(0),) * 3
        res: dict[str, float] = {"n": len(rs)}
        for a in alphas:
            res[f"img@{a:g}"] = float((e <= a * img).mean()) if rs else float("nan")
            res[f"bbox@{a:g}"] = float((e <= a * box).mean()) if rs else float("nan")
        out[cat] = res
    return out


def keypoint_box_size(points: np.ndarray) -> float:
    """max(h, w) of the bounding box of keypoints (K, 2): PF-WILLOW's PCK scale (α_bbox), no +1, no padding."""
    p = np.asarray(points, np.float64)
    return float(np.max(p.max(0) - p.min(0)))


def transfer_pck(pred: np.ndarray, target: np.ndarray, scale: float, alpha: float = 0.1) -> np.ndarray:
    """(K,) bool: predicted points (K, 2) within ``alpha * scale`` of the target points (K, 2);
    a non-finite prediction (a point the method could not place) counts as wrong."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    err = np.hypot(*(pred - target).T)
    return np.where(np.isfinite(err), err <= alpha * scale, False)
