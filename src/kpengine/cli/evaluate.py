"""Benchmark commands: evaluate (the official metrics) and baseline (the mean-position template)."""

from __future__ import annotations

import argparse
import logging
import sys

from kpengine.cli.common import add_data_args, add_json_summary_arg, check_json_summary, check_output, emit_json

log = logging.getLogger("kpengine")

EVALUATE_HELP = """\
Score predictions with the KeypointNet benchmark metrics, at geodesic thresholds
0.00, 0.01, ..., 0.10 on the model's 2,048-point cloud (20-NN graph shortest paths).

  saliency:        P.json = {"<model_id>": [[point_index, score], ...], ...}
                   -> mIoU (all listed points) and mAP (ranked by score), pooled
  correspondence:  P.json = {"<model_id>": {"<semantic_id>": point_index, ...}, ...}
                   -> PCK per shape, averaged

A model of the split missing from P.json counts as predicting nothing. Unknown
models or semantic ids are warned about and ignored.

Geodesic protocols: "official" (default) counts a pair in different connected
components of the graph as distance 0, like the original code; "strict" counts it
as infinitely far.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a predictions file (saliency mIoU/mAP or correspondence PCK)",
        description=EVALUATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_args(p)
    p.add_argument(
        "--task",
        required=True,
        choices=("saliency", "correspondence", "das"),
        help="das: ordered unsupervised keypoints (kpengine predict of an unsupervised-keypoints run): dual "
        "alignment score, keypoint consistency and mIoU (kpengine.metrics.unsupervised)",
    )
    p.add_argument("--predictions", required=True, metavar="P.json")
    p.add_argument(
        "--output", metavar="R.json", help="write thresholds and per-threshold metrics as JSON (- for stdout)"
    )
    p.add_argument("--protocol", default="official", choices=("official", "strict"), help="unreachable geodesic pairs")
    p.add_argument(
        "--symmetry",
        default="plain",
        choices=("plain", "best"),
        help="correspondence: 'best' scores each shape against the rotational relabelling closest to the prediction",
    )
    p.add_argument("--png", metavar="PNG", help="also draw the metric curves")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "baseline",
        help="predict with the mean-position template (a floor for learned methods)",
        description="Fit the mean-position template on one split (each semantic id at its mean position) and write "
        "predictions for another split in the format `kpengine evaluate` reads.",
    )
    add_data_args(p)
    p.add_argument("--fit-split", default="train", choices=("train", "val", "test", "all"))
    p.add_argument("--task", required=True, choices=("saliency", "correspondence"))
    p.add_argument("--out", required=True, metavar="P.json", help="- for stdout")
    add_json_summary_arg(p)
    p.set_defaults(func=cmd_baseline)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from kpengine.metrics.evaluate import evaluate_file

    check_output(args.output, args.png)  # before the work, not after the results are printed
    if args.task == "das":
        from kpengine.metrics.unsupervised import evaluate_das_file

        res = evaluate_das_file(args.data, args.category, args.split, args.predictions)
        for w in res["warnings"]:
            log.warning("%s", w)
        emit_json(res, args.output or "-")
        return 0

    result = evaluate_file(
        args.data,
        args.category,
        args.split,
        args.task,
        args.predictions,
        protocol=args.protocol,
        symmetry=args.symmetry,
    )
    for w in result.warnings:
        log.warning("%s", w)
    if args.output != "-":
        print(result.table())
    emit_json(result.to_json(), args.output)
    if args.png:
        from kpengine.viz.figures import plot_metric_curves

        curves = {name: (result.thresholds, values) for name, values in result.metrics.items()}
        plot_metric_curves(args.png, curves, title=f"{result.task}: {result.category}/{result.split}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from kpengine.data import KeypointNetDataset
    from kpengine.learn.template import TemplatePredictor

    check_json_summary(args)
    check_output(args.out)
    fit = KeypointNetDataset(args.data, args.category, args.fit_split)
    if not len(fit):
        print(
            f"error: no usable {fit.category.name}/{args.fit_split} shapes to fit the template on: "
            f"{fit.problem_summary()}",
            file=sys.stderr,
        )
        return 1
    template = TemplatePredictor(args.task).fit(fit)
    target = KeypointNetDataset(args.data, args.category, args.split)
    preds = template.predict(target)
    emit_json(preds, args.out)
    if args.json:
        # the models left out of the fit and of the predictions (the same model once per split)
        rows = {(ds.split, r["model_id"]): {**r, "split": ds.split} for ds in (fit, target) for r in ds.skipped()}
        emit_json({"task": args.task, "out": args.out, "models": len(preds), "skipped": list(rows.values())}, "-")
    elif args.out != "-":
        print(f"wrote {args.task} predictions for {len(preds)} models to {args.out}")
    return 0
