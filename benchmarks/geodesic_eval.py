"""Evaluate the bathtub test split with source-only geodesics vs the official all-pairs matrix.

Both routes score the same predictions with the same metric functions; only the geodesic
distances are computed differently:

* ``all-pairs``: the official benchmark's way, a full N x N Dijkstra matrix per shape
  (then the ground-truth rows are read from it);
* ``kpengine``: Dijkstra from the ground-truth keypoints only (S x N, S ~ 16), stopped at
  the largest threshold (0.10): farther points only need to be known as farther.

Predictions: the mean-position template for correspondence, and for saliency a dense,
network-like output (every template point plus 150 random points per shape with random
scores, as a network thresholded at 0.1 produces). Prints a Markdown table and checks that
every metric value is identical.

    .venv/bin/python benchmarks/geodesic_eval.py [--data ../shared/data/keypointnet] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from kpengine.data import KeypointNetDataset
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.learn.template import MeanPositionTemplate
from kpengine.metrics import THRESHOLDS, mean_average_precision, mean_iou, pck


def gt_rows(shape, mode: str) -> np.ndarray:
    graph = GeodesicGraph(shape.points)
    gt = np.unique(shape.point_indices)
    if mode == "all-pairs":
        return graph.all_pairs()[gt]
    return graph.from_sources(gt, limit=max(THRESHOLDS))


def run(test, sal_preds, cor_preds, n_classes, mode: str) -> tuple[dict, float, float]:
    tracemalloc.start()
    t0 = time.perf_counter()
    dists, cor = [], []
    for s in test:
        rows = gt_rows(s, mode)
        dists.append(rows)
        gt = np.unique(s.point_indices)
        label = s.index_by_semantic_id(n_classes)
        ids = np.where(label >= 0)[0]
        row_of = {p: r for r, p in enumerate(gt.tolist())}
        pred = cor_preds[s.model_id]
        cor.append(np.array([rows[row_of[int(label[i])], pred[i]] if i in pred else np.inf for i in ids]))
    preds = [sal_preds[s.model_id][0] for s in test]
    scores = [sal_preds[s.model_id][1] for s in test]
    metrics = {
        "miou": [mean_iou(dists, preds, t) for t in THRESHOLDS],
        "map": [mean_average_precision(dists, preds, scores, t) for t in THRESHOLDS],
        "pck": pck(cor, THRESHOLDS).tolist(),
    }
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return metrics, elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "keypointnet"))
    parser.add_argument("--category", default="bathtub")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    test = KeypointNetDataset(args.data, args.category, "test")
    load_s = time.perf_counter() - t0
    template = MeanPositionTemplate.fit(KeypointNetDataset(args.data, args.category, "train"))
    rng = np.random.default_rng(0)
    sal_preds, cor_preds = {}, {}
    for s in test:
        base = np.array([i for i, _ in template.predict_saliency(s)])
        idx = np.unique(np.concatenate([base, rng.choice(s.n_points, 150, replace=False)]))
        sal_preds[s.model_id] = (idx, rng.random(len(idx)))
        cor_preds[s.model_id] = template.predict_correspondence(s)

    results = {}
    for mode, repeats in (("kpengine", args.repeats), ("all-pairs", 1)):
        times = []
        for _ in range(repeats):
            metrics, elapsed, peak = run(test, sal_preds, cor_preds, test.n_classes, mode)
            times.append(elapsed)
        results[mode] = (metrics, statistics.median(times), peak, repeats)
    same = results["kpengine"][0] == results["all-pairs"][0]
    k, a = results["kpengine"], results["all-pairs"]
    print(
        f"# {args.category} test split, {len(test)} shapes; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; dataset load {load_s:.2f} s"
    )
    print("| geodesics | runs | median time (s) | per shape (ms) | peak traced memory (MiB) |")
    print("|---|---|---|---|---|")
    for mode, (_, t, peak, n) in results.items():
        print(f"| {mode} | {n} | {t:.2f} | {1000 * t / len(test):.1f} | {peak:.1f} |")
    print(f"\nspeed-up {a[1] / k[1]:.1f}x; metric values identical: {same}")
    for name in ("miou", "map", "pck"):
        print(f"{name} @0.01/0.05/0.10: " + " / ".join(f"{k[0][name][i]:.3f}" for i in (1, 5, 10)))
    if not same:
        raise SystemExit("metric values differ between the two geodesic routes")


if __name__ == "__main__":
    main()
