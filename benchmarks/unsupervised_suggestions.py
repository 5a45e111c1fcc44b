"""Do suggested keypoints change crowd aggregation? A simulated crowd with and without the habit
of accepting nearby suggestions, both aggregated by the unchanged KeypointNet pipeline.

For one category's split: a KeypointNet-shaped crowd (``CrowdModel.keypointnet``), its clicks as
they are, and the same clicks after ``kpengine.learn.unsupervised.crowd.snap_to_suggestions``
with each suggestions file given (``NAME=FILE``: saliency-format predictions, entry k = keypoint
k, e.g. ``kpengine predict`` of an unsupervised run, or a detector's). Each click set goes
through ``kpengine.aggregate.aggregate`` and ``evaluate_aggregation`` against the human keypoints.
Reported per condition: the share of clicks that became one-click accepts (the speed proxy: a
suggestion accepted is one click with no aiming), the median distance of the crowd's non-random
clicks to their nearest human keypoint, and the aggregation's recall / precision at 0.01 and
0.05, ARI and classes found.

    PYTHONPATH=src .venv/bin/python benchmarks/unsupervised_suggestions.py --data ../shared/data/keypointnet \\
        --category bed --split test --suggest sm=runs/sm_bed_test.json --out runs/suggest-bed
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from kpengine.aggregate.crowd import CrowdModel, simulate_crowd
from kpengine.aggregate.evaluate import evaluate_aggregation
from kpengine.aggregate.pipeline import AggregateConfig, aggregate
from kpengine.data import KeypointNetDataset
from kpengine.learn.unsupervised.crowd import snap_to_suggestions
from kpengine.metrics.evaluate import load_saliency_predictions


def click_error(shapes: dict, clicks) -> float:
    """Median distance of the clicks to their model's nearest human keypoint (model units)."""
    d = [
        float(np.linalg.norm(shapes[c.model_id].keypoints - np.asarray(c.xyz), axis=1).min())
        for c in clicks
        if len(shapes[c.model_id].keypoints)
    ]
    return float(np.median(d))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--suggest", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--radius", type=float, default=0.05, help="an annotator takes a suggestion this near (0.05)")
    ap.add_argument("--accept", type=float, default=0.8, help="...with this probability (0.8)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = KeypointNetDataset(args.data, args.category, args.split)
    shapes = list(ds)
    by_id = {s.model_id: s for s in shapes}
    files = dict(item.split("=", 1) for item in args.suggest)
    suggestions = {}
    for name, path in files.items():
        preds, _ = load_saliency_predictions(path, ds)
        suggestions[name] = {m: (idx, by_id[m].points[idx]) for m, (idx, _) in preds.items()}
    cfg = AggregateConfig(progress=False)
    rows = []
    for seed in args.seeds:
        crowd = simulate_crowd(shapes, CrowdModel.keypointnet(args.category, seed=seed))
        conditions = {"no suggestions": (crowd, np.zeros(len(crowd), bool))}
        for name, sugg in suggestions.items():
            conditions[name] = snap_to_suggestions(crowd, sugg, radius=args.radius, accept=args.accept, seed=seed)
        for name, (clicks, moved) in conditions.items():
            t0 = time.perf_counter()
            result = aggregate(shapes, clicks, cfg)
            scores = evaluate_aggregation(shapes, result.predictions)
            row = {
                "seed": seed,
                "condition": name,
                "clicks": len(clicks),
                "accepted": float(moved.mean()),
                "click_error_median": click_error(by_id, clicks),
                "seconds": time.perf_counter() - t0,
                **{k: scores[k] for k in ("recall@0.01", "recall@0.05", "precision@0.01", "precision@0.05", "ari")},
                "classes_found": scores["classes_found"],
                "classes_true": scores["classes_true"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "category": args.category,
        "split": args.split,
        "shapes": len(shapes),
        "radius": args.radius,
        "accept": args.accept,
        "suggestions": files,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "loadavg_1m": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
    }
    (out / "suggestions.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"{args.category}/{args.split}, {len(shapes)} shapes, KeypointNet-shaped crowd, radius {args.radius}, "
        f"accept {args.accept}, seeds {args.seeds}",
        "",
        "| condition | accepted | click error | recall@0.01 | recall@0.05 | precision@0.05 | ARI | ids found |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ["no suggestions", *suggestions]:
        rs = [r for r in rows if r["condition"] == name]

        def mean(key: str, rs=rs) -> float:
            return float(np.mean([r[key] for r in rs]))

        lines.append(
            f"| {name} | {100 * mean('accepted'):.1f} % | {mean('click_error_median'):.4f} | "
            f"{mean('recall@0.01'):.3f} | {mean('recall@0.05'):.3f} | {mean('precision@0.05'):.3f} | "
            f"{mean('ari'):.3f} | {mean('classes_found'):.1f} / {rs[0]['classes_true']} |"
        )
    (out / "suggestions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
