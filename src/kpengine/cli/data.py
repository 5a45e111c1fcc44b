"""Data commands: sample-data, stats, show."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from kpengine.cli.common import add_data_args, check_output, emit_json

if TYPE_CHECKING:
    import numpy as np

    from kpengine.data.shape import Shape


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample-data",
        help="write a small generated dataset in the KeypointNet layout",
        description="Generate procedural chairs, tables and mugs with meshes, 2,048-point PCDs, semantic keypoints, "
        "symmetries and train/val/test splits, in the official KeypointNet layout. Deterministic for a seed.",
    )
    p.add_argument("out", metavar="OUT", help="folder to create")
    p.add_argument("--shapes", type=int, default=24, help="shapes per category (default 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is an earlier kpengine sample dataset")
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser(
        "stats",
        help="models, keypoints and geometry per category and split",
        description="Statistics in the style of the KeypointNet paper's Tables 2-3: models and keypoints per "
        "category and split, keypoints per model (min/median/max), and how many models have a PCD or a mesh.",
    )
    add_data_args(p, split=None, category=False)
    p.add_argument("--category", action="append", metavar="NAME", help="only these categories (repeatable)")
    p.add_argument("--json", metavar="PATH", help="also write the statistics as JSON (use - for stdout)")
    p.add_argument(
        "--problems",
        action="store_true",
        help="read every cloud and mesh as the other commands do and list each model that cannot be used, "
        "by name and reason (clouds, meshes and annotations alike); slower",
    )
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "show",
        help="render a model with its keypoints coloured by semantic id (PNG)",
        description="Draw a model's point cloud from three views with its ground-truth keypoints coloured and "
        "labelled by semantic id. With --predictions (a file `kpengine predict` wrote, either task), the "
        "model's predicted keypoints are drawn over them as crosses: coloured by id for correspondence, "
        "black for saliency.",
    )
    add_data_args(p, split="all")
    p.add_argument("--model", metavar="ID", help="model id (default: the first model of the split)")
    p.add_argument("--predictions", metavar="P.json", help="overlay this model's predicted keypoints")
    p.add_argument("--out", required=True, metavar="PNG")
    p.set_defaults(func=cmd_show)


def cmd_sample_data(args: argparse.Namespace) -> int:
    from kpengine.data.sample import generate_sample_dataset

    try:
        summary = generate_sample_dataset(
            args.out, shapes_per_category=args.shapes, seed=args.seed, overwrite=args.overwrite
        )
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {summary}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from kpengine.data.stats import dataset_stats, stats_json, stats_table

    check_output(args.json)
    stats = dataset_stats(args.data, args.category, check=args.problems)
    if args.json != "-":
        print(stats_table(stats))
    if args.problems:
        for s in stats:
            for line in s.problems:
                print(f"{s.category}: {line}")
        if not any(s.problems for s in stats):
            print("no problems: every model can be used")
    emit_json(stats_json(stats), args.json)
    return 1 if any(s.error for s in stats) else 0


def cmd_show(args: argparse.Namespace) -> int:
    from kpengine.data import KeypointNetDataset
    from kpengine.viz.figures import plot_shape_keypoints

    ds = KeypointNetDataset(args.data, args.category, args.split, model_ids=[args.model] if args.model else None)
    if not len(ds):
        detail = "; ".join(str(p) for p in ds.problems[:3]) if len(ds.problems) <= 3 else ds.problem_summary()
        print(f"error: no usable shapes: {detail}", file=sys.stderr)
        return 1
    shape = ds[0]
    predicted, predicted_ids, note = None, None, ""
    if args.predictions:
        predicted, predicted_ids = predicted_keypoints(args.predictions, shape)
        note = f"; x = {len(predicted)} predicted"
    plot_shape_keypoints(
        args.out,
        shape.points,
        shape.keypoints,
        shape.semantic_ids,
        title=f"{shape.category.name} {shape.model_id} ({shape.source}, {len(shape.keypoints)} keypoints{note})",
        predicted=predicted,
        predicted_ids=predicted_ids,
    )
    print(json.dumps({"model_id": shape.model_id, "png": args.out}))
    return 0


def predicted_keypoints(path: str, shape: Shape) -> tuple[np.ndarray, np.ndarray | None]:
    """A model's predicted keypoints from a predictions file: (xyz (K, 3), semantic ids or None).

    Correspondence files map ids to point indices (ids the model lacks are left out, as evaluate
    does); saliency files list [point_index, score]."""
    import numpy as np

    from kpengine.errors import DataError
    from kpengine.io.atomic import read_json

    preds = read_json(path)
    if not isinstance(preds, dict) or shape.model_id not in preds:
        raise DataError(f"no predictions for model {shape.model_id}", path=path)
    entry = preds[shape.model_id]
    if isinstance(entry, dict):  # correspondence: only the ids the model has (others are not scored)
        have = set(np.asarray(shape.semantic_ids).tolist())
        pairs = [(int(k), int(v)) for k, v in entry.items() if int(k) in have]
        ids = np.array([k for k, _ in pairs], np.int64)
        idx = np.array([v for _, v in pairs], np.int64)
    elif isinstance(entry, list):  # saliency
        idx, ids = np.array([int(e[0]) for e in entry], np.int64), None
    else:
        raise DataError(f"model {shape.model_id}: expected an object or a list, got {type(entry).__name__}", path=path)
    if len(idx) and not (0 <= idx.min() and idx.max() < shape.n_points):
        raise DataError(f"model {shape.model_id}: point index out of range [0, {shape.n_points})", path=path)
    return shape.points[idx], ids
