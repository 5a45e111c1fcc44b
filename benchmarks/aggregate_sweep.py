"""Recall and ARI of kpengine's aggregation against the number of annotators per model.

    .venv/bin/python benchmarks/aggregate_sweep.py --category bed --per-model 2 3 4 6 8 12 --out sweep_bed

KeypointNet-shaped crowds (``CrowdModel.keypointnet``: Table 3 pool, per-annotator activity
and noise, mirrored annotators, wrong clicks, misses) with exactly k annotators per model;
the pool grows to k where Table 3's is smaller. One JSON line per k on stdout and in
OUT.jsonl, and OUT.png (recall@0.05, precision@0.05 and ARI against k). ``--ids tsne``: the paper route.
``--baselines``: Dutagaci-style geodesic clustering and DBSCAN on the same clicks at every k
(rows with their own "method"; their recall is drawn dotted).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from shared_data import shared_data  # a sibling script

from kpengine.aggregate.crowd import TABLE3_POOL, CrowdModel, simulate_crowd
from kpengine.aggregate.evaluate import evaluate_aggregation
from kpengine.aggregate.pipeline import AggregateConfig, aggregate
from kpengine.data import KeypointNetDataset
from kpengine.geometry.geodesic import GeodesicGraph


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=shared_data("keypointnet"))
    ap.add_argument("--category", default="bed")
    ap.add_argument("--models", type=int, default=0, help="first M models (0: all)")
    ap.add_argument("--per-model", type=int, nargs="+", default=[2, 3, 4, 6, 8, 12])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ids", default="classes", choices=["classes", "tsne"], help="AggregateConfig.ids")
    ap.add_argument("--baselines", action="store_true", help="also geodesic clustering and DBSCAN at every k")
    ap.add_argument("--out", required=True, help="OUT.jsonl and OUT.png are written")
    args = ap.parse_args()
    shapes = list(KeypointNetDataset(args.data, args.category, "all"))
    shapes = shapes[: args.models] if args.models else shapes
    graphs = {s.model_id: GeodesicGraph(s.points, protocol="strict") for s in shapes}
    rows, base_rows = [], []
    if args.baselines:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from aggregate_crowd import run_baselines
    for k in args.per_model:
        pool = max(TABLE3_POOL.get(args.category, 15), k)
        crowd = CrowdModel.keypointnet(args.category, seed=args.seed, n_annotators=pool, per_model=(k, k))
        clicks = simulate_crowd(shapes, crowd)
        t = time.perf_counter()
        res = aggregate(shapes, clicks, AggregateConfig(progress=False, ids=args.ids))
        s = evaluate_aggregation(shapes, res.predictions, graphs)
        row = {"category": args.category, "ids": args.ids, "models": len(shapes), "per_model": k, "pool": pool,
               "clicks": len(clicks),
               **{m: s[m] for m in ("recall@0.05", "precision@0.05", "ari", "classes_found", "classes_true")},
               "time_s": time.perf_counter() - t, "loadavg": os.getloadavg()}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(args.out + ".jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if args.baselines:
            for b in run_baselines(shapes, clicks, graphs):
                brow = {"category": args.category, "per_model": k, "pool": pool, "clicks": len(clicks),
                        **{m: b[m] for m in ("method", "recall@0.05", "precision@0.05", "ari")},
                        "time_s": b["time_s"], "loadavg": b["loadavg"]}  # fmt: skip
                base_rows.append(brow)
                print(json.dumps(brow), flush=True)
                with open(args.out + ".jsonl", "a") as f:
                    f.write(json.dumps(brow) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["per_model"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for key, style in (("recall@0.05", "o-"), ("precision@0.05", "s--"), ("ari", "^-")):
        ax.plot(ks, [r[key] for r in rows], style, label=key)
    for name, colour in (("geodesic clustering (Dutagaci)", "tab:grey"), ("DBSCAN on click positions", "tab:brown")):
        mine = [r for r in base_rows if r["method"] == name]
        if mine:
            ax.plot([r["per_model"] for r in mine], [r["recall@0.05"] for r in mine], ":", color=colour,
                    marker=".", label=f"recall@0.05, {name}")  # fmt: skip
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("annotators per model")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ks)
    ax.set_title(f"{args.category} ({len(shapes)} models), KeypointNet-shaped crowd, ids: {args.ids}")
    ax.legend(loc="center right", fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=110)


if __name__ == "__main__":
    main()
