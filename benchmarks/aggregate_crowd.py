"""Simulated crowd on real KeypointNet models: kpengine aggregation vs two baselines.

    .venv/bin/python benchmarks/aggregate_crowd.py --category bathtub --models 60 --annotators 12
    .venv/bin/python benchmarks/aggregate_crowd.py --category bed --models 146 --like-keypointnet [--per-model 3 5]
        [--ids classes tsne] [--prior on off] [--anti-collapse variance entropy]

Every combination of --ids, --prior (the class route's position prior for one-annotator
keypoints, ClassConfig.position) and --anti-collapse (EmbeddingConfig.anti_collapse) runs on
the same clicks in one process, then the two baselines.

Prints one JSON line per method (scores from kpengine.aggregate.evaluate) with timings and
the load average; writes figures to --figures DIR when given.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
from shared_data import shared_data  # a sibling script

from kpengine.aggregate.baselines import dbscan_keypoints, dbscan_positions, geodesic_clustering
from kpengine.aggregate.crowd import CrowdModel, simulate_crowd
from kpengine.aggregate.evaluate import Prediction, evaluate_aggregation
from kpengine.aggregate.pipeline import AggregateConfig, aggregate
from kpengine.aggregate.raw import ClickSet, check_clicks
from kpengine.data import KeypointNetDataset
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.geometry.sampling import snap_to_points


def run_baselines(shapes: list, clicks: list, graphs: dict) -> list[dict]:
    """Dutagaci-style geodesic clustering and DBSCAN on click positions, scored: one dict each."""
    out = []
    kept, _ = check_clicks(clicks, [s.model_id for s in shapes])
    cs = ClickSet.from_clicks(kept)
    by_id = {s.model_id: s for s in shapes}
    t = time.perf_counter()
    preds = {}
    for m, mc in cs.models.items():
        pidx = snap_to_points(by_id[m].points, mc.xyz)[0]
        n_ann = len(np.unique(mc.annotator))
        kp = geodesic_clustering(graphs[m], pidx, mc.annotator, radius=0.05, min_votes=max(2, int(0.3 * n_ann)))
        preds[m] = Prediction(kp, np.full(len(kp), -1))
    dt = time.perf_counter() - t
    scores = evaluate_aggregation(shapes, preds, graphs)
    out.append({"method": "geodesic clustering (Dutagaci)", **scores, "time_s": dt, "loadavg": os.getloadavg()})

    t = time.perf_counter()
    mids = list(cs.models)
    xyz = np.concatenate([cs.models[m].xyz for m in mids])
    owner = np.concatenate([np.full(len(cs.models[m].xyz), i) for i, m in enumerate(mids)])
    labels, _ = dbscan_positions(xyz, owner, eps=0.03, min_samples=max(3, int(round(0.05 * len(mids)))))
    preds = {}
    for i, m in enumerate(mids):
        sel = owner == i
        kp, ids = dbscan_keypoints(by_id[m].points, xyz[sel], labels[sel])
        preds[m] = Prediction(kp, ids)
    dt = time.perf_counter() - t
    scores = evaluate_aggregation(shapes, preds, graphs)
    out.append({"method": "DBSCAN on click positions", **scores, "time_s": dt, "loadavg": os.getloadavg()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=shared_data("keypointnet"))
    ap.add_argument("--category", default="bathtub")
    ap.add_argument("--models", type=int, default=60)
    ap.add_argument("--annotators", type=int, default=12)
    ap.add_argument("--noise", type=float, default=0.02)
    ap.add_argument("--wrong-rate", type=float, default=0.05)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--backbone", default="pointnet", help="embedding backbone (EmbeddingConfig.backbone)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figures")
    ap.add_argument(
        "--like-keypointnet",
        action="store_true",
        help="crowd shaped like KeypointNet's (CrowdModel.keypointnet: Table 3 pool, 3-5 per model)",
    )
    ap.add_argument("--per-model", type=int, nargs=2, metavar=("LO", "HI"), help="annotators per model")
    ap.add_argument(
        "--ids",
        nargs="+",
        default=["classes"],
        choices=["classes", "tsne"],
        help="id assignment(s) to run, each on the same clicks (AggregateConfig.ids)",
    )
    ap.add_argument(
        "--prior",
        nargs="+",
        default=["on"],
        choices=["on", "off"],
        help="class route: one-annotator keypoints placed by the position prior (ClassConfig.position)",
    )
    ap.add_argument(
        "--prior-far",
        nargs="+",
        default=["reject"],
        choices=["reject", "prior"],
        help="prior on: a lone click farther than PriorConfig.agree from the prior is dropped or placed at the prior",
    )
    ap.add_argument(
        "--anti-collapse",
        nargs="+",
        default=["variance"],
        choices=["variance", "entropy"],
        help="embedding anti-collapse term(s) (EmbeddingConfig.anti_collapse)",
    )
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument("--cross-model", action="store_true", help="fidelity over every point (FidelityConfig.anywhere)")
    ap.add_argument("--no-position-split", action="store_true", help="ClusterConfig.split_positions = False")
    args = ap.parse_args()
    ds = KeypointNetDataset(args.data, args.category, "all")
    shapes = list(ds)[: args.models]
    if args.like_keypointnet:
        extra = {"per_model": tuple(args.per_model)} if args.per_model else {}
        crowd = CrowdModel.keypointnet(args.category, seed=args.seed, noise=args.noise, wrong_rate=args.wrong_rate,
                                       **extra)  # fmt: skip
    else:
        crowd = CrowdModel(n_annotators=args.annotators, noise=args.noise, wrong_rate=args.wrong_rate, seed=args.seed,
                           per_model=tuple(args.per_model) if args.per_model else None)  # fmt: skip
    clicks = simulate_crowd(shapes, crowd)
    head = {"category": args.category, "models": len(shapes), "clicks": len(clicks), "crowd": crowd.to_json()}
    graphs = {s.model_id: GeodesicGraph(s.points, protocol="strict") for s in shapes}

    res = None
    runs = [(ids, ac, pr, far) for ids in args.ids for ac in args.anti_collapse for pr in args.prior
            for far in (args.prior_far if pr == "on" else ["-"]) if ids == "classes" or pr == "on"]  # fmt: skip
    for ids, ac, pr, far in runs:
        cfg = AggregateConfig(progress=False, ids=ids)
        cfg = replace(
            cfg,
            embedding=replace(cfg.embedding, steps=args.steps, backbone=args.backbone, anti_collapse=ac),
            fidelity=replace(cfg.fidelity, anywhere=args.cross_model),
            cluster=replace(cfg.cluster, split_positions=not args.no_position_split),
            classes=replace(
                cfg.classes,
                position=replace(cfg.classes.position, enabled=pr == "on", far=far if pr == "on" else "reject"),
            ),
        )
        t = time.perf_counter()
        r = aggregate(shapes, clicks, cfg)
        dt = time.perf_counter() - t
        res = res or r
        scores = evaluate_aggregation(shapes, r.predictions, graphs)
        prior = f", prior: {pr}" + (f" (far click: {far})" if pr == "on" else "") if ids == "classes" else ""
        label = f"kpengine (ids: {ids}{prior}, anti-collapse: {ac})"
        print(json.dumps({"method": label, "backbone": args.backbone, **head, **scores, "time_s": dt,
                          "timings": r.report["timings"], "class_grouping": r.report["class_grouping"],
                          "loadavg": os.getloadavg()}), flush=True)  # fmt: skip
    if args.skip_baselines:
        return

    for row in run_baselines(shapes, clicks, graphs):
        print(json.dumps({**row, **head}), flush=True)
    if args.figures:
        from kpengine.aggregate.plots import plot_clusters, plot_fidelity

        os.makedirs(args.figures, exist_ok=True)
        plot_clusters(f"{args.figures}/{args.category}_clusters.png", res.clustering.xy, res.clustering.labels,
                      title=f"{args.category}: t-SNE of keypoint embeddings, ids: {args.ids[0]}")  # fmt: skip
        by_id = {s.model_id: s for s in shapes}
        for m in res.model_ids[:2]:
            p = res.predictions[m]
            plot_fidelity(f"{args.figures}/{args.category}_fidelity_{m[:8]}.png", by_id[m].points, res.fidelity[m],
                          p.point_index, p.ids, title=m)  # fmt: skip


if __name__ == "__main__":
    main()
