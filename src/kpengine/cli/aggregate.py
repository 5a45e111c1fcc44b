"""Crowd aggregation commands: simulate-crowd (a seeded simulated crowd) and aggregate (§3.4)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kpengine.cli.common import add_data_args

AGGREGATE_HELP = """\
Aggregate raw crowd clicks (RAW.json, see docs/aggregation.md) into semantic keypoints
that agree across the models of a category (KeypointNet §3.4): Gaussian click saliency,
a learned per-point embedding and the fidelity error map; semantic ids from the annotators'
own numberings linked where their clicks coincide, one reliability-weighted consensus
point per model and id (--ids tsne: the paper's non-minimum suppression + t-SNE + DBSCAN);
reflection and rotation symmetries.

Writes OUT.json in the official KeypointNet format and, beside it, OUT.report.json
(clusters, noise, per-model keypoint counts, problems, timings), OUT.clusters.png and
OUT.fidelity_<model>.png for a few models.

With --db URL the raw clicks come from the store instead, and the result is saved there as
pending keypoints with its t-SNE plot and clusters, for an admin to verify at /verify.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate-crowd",
        help="simulate annotators clicking the ground-truth keypoints of real shapes (RAW.json)",
        description="Each simulated annotator knows a subset of the semantic ids, numbers them their own way, "
        "annotates part of the models, clicks with surface noise, sometimes misses a keypoint and sometimes "
        "clicks a wrong place. Seeded. The model is documented in docs/aggregation.md.",
    )
    add_data_args(p, split="all")
    p.add_argument("--annotators", type=int, default=12, metavar="N")
    p.add_argument("--out", required=True, metavar="RAW.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.02, help="click noise std in model units (default 0.02)")
    p.add_argument("--wrong-rate", type=float, default=0.05, help="probability of a click at a random place")
    p.add_argument("--miss-rate", type=float, default=0.1, help="probability of skipping a known keypoint")
    p.add_argument("--coverage", type=float, default=0.5, help="probability an annotator annotates a model")
    p.add_argument("--max-models", type=int, metavar="M", help="only the first M models of the split")
    p.add_argument(
        "--like-keypointnet",
        action="store_true",
        help="a crowd shaped like KeypointNet's: the category's annotator pool (paper's Table 3; bed 8, bathtub 15, "
        "chair 15, airplane 26, else 15) instead of --annotators, 3-5 annotators per model chosen by per-annotator "
        "activity, per-annotator noise, 15%% mirrored left/right conventions; the options below override it",
    )
    p.add_argument("--per-model", type=int, nargs=2, metavar=("LO", "HI"),
                   help="annotators per model, uniform in [LO, HI], instead of --coverage")  # fmt: skip
    p.add_argument("--activity-spread", type=float, help="log-normal spread of per-annotator activity (coverage)")
    p.add_argument("--noise-spread", type=float, help="log-normal spread of per-annotator noise around --noise")
    p.add_argument("--mirrored", type=float, help="fraction of annotators whose left/right flips between models")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "aggregate",
        help="aggregate raw clicks into consistent semantic keypoints (official format)",
        description=AGGREGATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_args(p, split="all")
    # with --db the raw clicks come from the store and the geometry root from its stored paths
    p._option_string_actions["--data"].required = False
    p.add_argument("--raw", metavar="RAW.json", help="raw clicks (RAW.json, or - for standard input); or --db")
    p.add_argument("--out", metavar="OUT.json", help="official-format output (required with --raw)")
    p.add_argument(
        "--db",
        metavar="URL",
        help="read the category's raw annotations from this store and save the result there as pending "
        "keypoints for human verification (/verify); --data optional (found from the stored geometry paths)",
    )
    p.add_argument("--rounds", type=int, default=1, help="embedding / keypoint update rounds (default 1)")
    p.add_argument("--steps", type=int, default=200, help="embedding training steps per round (default 200)")
    p.add_argument("--backbone", default="pointnet", choices=("pointnet", "pointnet2", "dgcnn", "pointconv"))
    p.add_argument(
        "--ids",
        default="classes",
        choices=("classes", "tsne"),
        help="how semantic ids are found: 'classes' (default) links the annotators' own numberings where their "
        "clicks coincide and takes a reliability-weighted consensus per model; 'tsne' is the paper's t-SNE + DBSCAN "
        "of fidelity minima (docs/aggregation.md compares them)",
    )
    p.add_argument(
        "--cross-model",
        action="store_true",
        help="with --ids tsne: also propose keypoints where none of a model's annotators clicked, from other "
        "models' clicks through the embedding (eq. 4 over every point; slower; docs/aggregation.md says when it helps)",
    )
    p.add_argument(
        "--no-position-prior",
        action="store_true",
        help="with --ids classes: keep a keypoint that one annotator alone clicked where it was clicked (if the "
        "fidelity backs it) instead of placing it with the other models' help (docs/aggregation.md, position prior)",
    )
    p.add_argument(
        "--anti-collapse",
        default="variance",
        choices=("variance", "entropy"),
        help="the embedding's anti-collapse term: VICReg's variance hinge (default) or H(g), the entropy of the "
        "unit embeddings (our reading of the paper's term; docs/aggregation.md has the measurement)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figures", type=int, default=3, metavar="K", help="fidelity maps for K models (default 3)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_aggregate)


def _shapes(args: argparse.Namespace):
    from kpengine.data import KeypointNetDataset

    ds = KeypointNetDataset(args.data, args.category, args.split)
    shapes = list(ds)
    if getattr(args, "max_models", None):
        shapes = shapes[: args.max_models]
    return ds, shapes


def cmd_simulate(args: argparse.Namespace) -> int:
    from kpengine.aggregate.crowd import CrowdModel, simulate_crowd
    from kpengine.io.clicks import save_clicks

    ds, shapes = _shapes(args)
    given = {
        "noise": args.noise,
        "wrong_rate": args.wrong_rate,
        "miss_rate": args.miss_rate,
        "coverage": args.coverage,
        "per_model": tuple(args.per_model) if args.per_model else None,
        "activity_spread": args.activity_spread,
        "noise_spread": args.noise_spread,
        "mirrored": args.mirrored,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if args.like_keypointnet:
        model = CrowdModel.keypointnet(ds.category.name, seed=args.seed, **given)
    else:
        model = CrowdModel(n_annotators=args.annotators, seed=args.seed, **given)
    clicks = simulate_crowd(shapes, model)
    save_clicks(args.out, clicks)
    n = model.n_annotators
    print(f"wrote {len(clicks)} clicks by {n} simulated annotators on {len(shapes)} models to {args.out}")
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np

    from kpengine.aggregate.pipeline import AggregateConfig, aggregate
    from kpengine.aggregate.plots import plot_clusters, plot_fidelity
    from kpengine.cli.common import emit_json, load_raw_clicks
    from kpengine.io.annotations import save_annotations

    cfg = AggregateConfig(rounds=args.rounds, progress=not args.no_progress, ids=args.ids)
    cfg = replace(
        cfg,
        embedding=replace(
            cfg.embedding, steps=args.steps, backbone=args.backbone, seed=args.seed, anti_collapse=args.anti_collapse
        ),
        cluster=replace(cfg.cluster, seed=args.seed),
        fidelity=replace(cfg.fidelity, anywhere=args.cross_model),
        classes=replace(cfg.classes, position=replace(cfg.classes.position, enabled=not args.no_position_prior)),
    )
    if args.db:
        return _aggregate_store(args, cfg)
    if not (args.raw and args.out and args.data):
        print("aggregate needs --raw RAW.json --out OUT.json --data ROOT, or --db URL", file=sys.stderr)
        return 2
    clicks, problems = load_raw_clicks(args.raw)
    for p in problems:  # before the pipeline, which may stop on too few usable clicks
        print(f"{p}", file=sys.stderr)
    ds, shapes = _shapes(args)
    result = aggregate(shapes, clicks, cfg)
    result.problems[:0] = problems
    result.report["problems"] = [str(p) for p in result.problems]
    out = Path(args.out)
    save_annotations(out, result.annotations)
    stem = out.with_suffix("")
    emit_json(result.report, str(stem) + ".report.json")
    plot_clusters(str(stem) + ".clusters.png", result.clustering.xy, result.clustering.labels,
                  title=f"{ds.category.name}: {result.clustering.n_clusters} ids ({args.ids}), "
                  f"{int((result.clustering.labels < 0).sum())} candidates without one")  # fmt: skip
    by_id = {s.model_id: s for s in shapes}
    for m in result.model_ids[: args.figures]:
        pred = result.predictions[m]
        plot_fidelity(f"{stem}.fidelity_{m}.png", by_id[m].points, result.fidelity[m], pred.point_index,
                      pred.ids, title=f"{ds.category.name} {m}: fidelity error and keypoints")  # fmt: skip
    for p in result.problems[len(problems) :]:
        print(f"{p}", file=sys.stderr)
    counts = np.array(list(result.report["keypoints_per_model"].values()))
    print(
        f"aggregated {result.report['clicks_used']} clicks on {len(result.model_ids)} models into "
        f"{result.clustering.n_clusters} semantic ids ({counts.mean():.1f} keypoints per model, "
        f"{result.report['noise_candidates']} noise candidates); wrote {out} and its report and figures"
    )
    return 0


def _aggregate_store(args: argparse.Namespace, cfg) -> int:  # noqa: ANN001 - AggregateConfig
    """``aggregate --db``: store in, store out (pending keypoints, t-SNE, clusters); OUT.json too if given."""
    from kpengine.io.annotations import save_annotations
    from kpengine.store import open_store
    from kpengine.store.aggregation import aggregate_category

    store = open_store(args.db)
    try:
        result, summary = aggregate_category(store, args.category, args.data, cfg)
    finally:
        store.dispose()
    if args.out:
        save_annotations(Path(args.out), result.annotations)
    for p in summary["problems"]:
        print(p, file=sys.stderr)
    print(
        f"aggregated {summary['category']} from the store: {summary['keypoints']} pending keypoints in "
        f"{summary['clusters']} semantic ids ({summary['noise_candidates']} noise candidates), run "
        f"{summary['run']}; verify them at /verify"
    )
    return 0
