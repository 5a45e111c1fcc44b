"""Rendering commands: render-benchmark (a SPair-like 2D benchmark from real shapes) and evaluate-2d (PCK)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from kpengine.cli.common import add_data_args, emit_json

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render-benchmark",
        help="render held-out annotated models into a SPair-like 2D keypoint benchmark",
        description="Render every model of a split from random viewpoints over random backgrounds and light "
        "(meshes by Embree ray casting, PCD-only models as splats), and write images, masks, cameras, 2D "
        "keypoints with depth-buffer visibility and bounding boxes (format: docs/rendering.md).",
    )
    add_data_args(p)
    p.add_argument("--views", type=int, default=3, help="views per model (default 3)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_render_benchmark)

    p = sub.add_parser(
        "evaluate-2d",
        help="PCK@alpha_img / alpha_bbox (0.05, 0.1, 0.15) of 2D keypoint predictions on a rendered benchmark",
        description='Predictions: {"<image_id>": {"<semantic_id>": [u, v]}} in pixels (u right, v down, pixel '
        "centres at integers). Only visible keypoints count; a missing prediction is wrong. --oracle scores the "
        "true-camera projections instead (a check of the benchmark itself).",
    )
    p.add_argument("--benchmark", required=True, metavar="DIR")
    p.add_argument("--predictions", metavar="P.json")
    p.add_argument("--oracle", action="store_true", help="score projections with the true cameras")
    p.add_argument("--output", metavar="R.json", help="also write the table as JSON (- for stdout)")
    p.set_defaults(func=cmd_evaluate_2d)


def cmd_render_benchmark(args: argparse.Namespace) -> int:
    from kpengine.render.benchmark2d import build_benchmark

    index = build_benchmark(
        args.data, args.category, args.split, args.out, views=args.views, size=args.size, seed=args.seed
    )
    print(json.dumps({"images": len(index["images"]), "skipped_models": len(index["skipped_models"]), "out": args.out}))
    return 0


def cmd_evaluate_2d(args: argparse.Namespace) -> int:
    from kpengine.io.benchmark2d import load_benchmark, load_predictions_2d
    from kpengine.metrics.pck2d import pck
    from kpengine.render.benchmark2d import oracle_predictions

    if bool(args.predictions) == bool(args.oracle):
        print("error: give exactly one of --predictions P.json or --oracle", file=sys.stderr)
        return 2
    _, anns = load_benchmark(args.benchmark)
    preds = oracle_predictions(anns) if args.oracle else load_predictions_2d(args.predictions)
    unknown = sorted(set(preds) - set(anns))
    if unknown:
        # through logging like every command's warnings: `-q` silences it, `-v` names every image
        log.warning("%d predicted images are not in the benchmark (e.g. %s)", len(unknown), unknown[0])
        log.info("predicted images not in the benchmark: %s", ", ".join(unknown))
    table = pck(anns, preds)
    if args.output != "-":
        keys = [k for k in next(iter(table.values())) if k != "n"]
        print("category".ljust(12) + "".join(k.rjust(11) for k in keys) + "n".rjust(7))
        for cat, row in table.items():
            print(cat.ljust(12) + "".join(f"{row[k]:11.3f}" for k in keys) + f"{row['n']:7d}")
    emit_json(table, args.output)
    return 0
