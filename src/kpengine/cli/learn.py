"""Learning commands: train, predict, transfer, benchmark (library: kpengine.learn)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields

from kpengine.cli.common import add_data_args, add_json_summary_arg, check_json_summary, emit_json
from kpengine.learn.registry import BACKBONES, TASKS

#: packages above kpengine.learn whose modules register more tasks (one module per task)
TASK_PACKAGES = ("kpengine.image.tasks",)
for _package in TASK_PACKAGES:
    TASKS.add_package(_package)

TRAIN_HELP = """\
Train a network on one category's train split, keeping the checkpoint with the lowest
validation loss. Tasks (one module each in kpengine/learn/tasks/ or a registered package):
{tasks}
Backbones of the point tasks (kpengine/learn/backbones/):
{backbones}

Defaults follow the official benchmark: Adam 1e-3, batch 8, 50 epochs, 2,048 points,
jitter sigma 0.004 clipped at 0.01, translation up to 0.02. Off by default, and what
short runs need (docs/learning.md): --lr-schedule cosine (decay to 1% of --lr),
--scale-augment 0.2 and, for saliency, --saliency-sigma 0.02 (soft geodesic Gaussian
targets). The run directory gets config.json, last.pt (every epoch; --resume continues
from it), best.pt, history.json and curve.png. A task's settings without a flag go in
--config '{{"name": value}}'. Same command under torchrun for distributed training:
  torchrun --nproc_per_node 2 -m kpengine.cli.main train ...   (--device cuda: NCCL, a GPU per process)
"""

PREDICT_HELP = """\
Write predictions for a split in the format `kpengine evaluate` reads, using a run's
best checkpoint. Saliency: --saliency-mode nms (default; points above --threshold,
kept by probability, each suppressing geodesic neighbours within --nms-radius) or
official (every point above 0.1, no suppression, as the original code). Without
--threshold and --nms-radius, nms uses the run's decision.json (chosen on the validation
split by `kpengine benchmark` or kpengine.learn.decision) if it has one, else 0.1 and 0.05.
Embedding runs predict correspondences by transfer from the training split's prototypes.
"""

TRANSFER_HELP = """\
Put semantic keypoints on a shape nobody annotated, with an embedding run: each id's
keypoint is the point nearest its prototype embedding (from the annotated shapes under
--knowledge); ids whose confidence is too low are left out. The shape (OBJ/PLY/... mesh,
sampled to the run's point count, or a PCD) must be in the ShapeNet model_normalized
frame (y up, bounding-box diagonal 1). Output: official KeypointNet JSON (+ confidence).
"""

BENCHMARK_HELP = """\
For every category x backbone x task: train, predict the test split, evaluate (plain and
symmetry-best PCK for correspondence and embedding transfer; mIoU/mAP for saliency, in
official mode), and write a Markdown and a JSON table at 0.01, 0.05 and 0.10.
"""


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    tasks, backbones = TASKS.names(), BACKBONES.names()
    p = sub.add_parser(
        "train",
        help=f"train a network ({', '.join(tasks)})",
        description=TRAIN_HELP.format(tasks=TASKS.help(), backbones=BACKBONES.help()),
    )
    p.formatter_class = fmt
    # dest = the config field each flag sets (a task's config takes the flags it has fields for)
    p.add_argument("--task", required=True, choices=tasks, type=task_name)
    # Settings flags have no argparse default: a flag the user did not give is absent from the
    # namespace, so the task's own config default applies (image tasks train longer, with larger
    # batches and another lr, than the point tasks' official 50 x 8 at 1e-3 written in the help).
    unset = argparse.SUPPRESS
    p.add_argument("--backbone", default=unset, choices=backbones, help="point tasks (default pointnet)")
    add_data_args(p, split=None)
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument(
        "--method",
        default=unset,
        help="unsupervised_keypoints: skeleton-merger (default; reconstruction from a skeleton) or symmetric "
        "(a category shape model with mirror pairs); docs/unsupervised.md",
    )
    p.add_argument(
        "--keypoints",
        dest="n_keypoints",
        type=int,
        default=unset,
        metavar="K",
        help="unsupervised_keypoints: K per shape (default 10)",
    )
    p.add_argument("--epochs", type=int, default=unset, help="default: the task's (point tasks 50)")
    p.add_argument("--batch-size", type=int, default=unset, help="default: the task's (point tasks 8)")
    p.add_argument("--lr", type=float, default=unset, help="default: the task's (point tasks 1e-3)")
    p.add_argument(
        "--lr-schedule",
        default=unset,
        choices=("constant", "cosine"),
        help="default: the task's (point tasks constant)",
    )
    p.add_argument(
        "--scale-augment",
        type=float,
        default=unset,
        help="scale each axis by U(1-s, 1+s) in training (default 0 = off)",
    )
    p.add_argument(
        "--saliency-sigma",
        type=float,
        default=unset,
        help="saliency: soft targets exp(-d^2/2s^2) (default 0 = hard, official)",
    )
    p.add_argument(
        "--points",
        dest="n_points",
        metavar="N",
        type=int,
        default=unset,
        help="points per cloud (clouds must have this many; default 2048)",
    )
    p.add_argument("--seed", type=int, default=unset, help="initialisation, shuffling and the --shots draw (default 0)")
    p.add_argument("--threads", type=int, default=unset, help="torch CPU threads per process (default 1)")
    p.add_argument("--device", default=unset, choices=("cpu", "cuda"), help="where to train (default cpu)")
    p.add_argument("--margin", type=float, default=unset, help="embedding: contrastive margin (default 1.0)")
    p.add_argument(
        "--surface-noise", type=float, default=unset, help="embedding: extra unclipped noise sigma (default 0)"
    )
    p.add_argument(
        "--shots", type=int, default=unset, metavar="K", help="train on K shapes drawn from the train split with --seed"
    )
    p.add_argument(
        "--init",
        default=unset,
        metavar="RUN_DIR",
        help="multiview-fewshot, point tasks: start from this pretraining run (point tasks: its backbone, e.g. "
        "a point-contrast run of the same category and --backbone/--backbone-args)",
    )
    p.add_argument(
        "--views", default=unset, metavar="DIR", help="multiview tasks: the view cache (rendered on first use)"
    )
    p.add_argument("--backbone-args", default="{}", metavar="JSON", help="e.g. '{\"width\": 256}'")
    p.add_argument("--config", default="{}", metavar="JSON", help="other settings of the task, e.g. '{\"lr\": 0.01}'")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from last.pt")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after the first epoch that ends past this many seconds (a lease's or a job's budget); "
        "--resume continues the run",
    )
    p.add_argument(
        "--json", action="store_true", help="print the run summary as JSON (with the models skipped, and why)"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predictions file for `kpengine evaluate` from a run", description=PREDICT_HELP)
    p.formatter_class = fmt
    p.add_argument("--run", required=True, metavar="RUN_DIR")
    add_data_args(p)
    p.add_argument("--out", required=True, metavar="P.json", help="- for stdout")
    p.add_argument("--saliency-mode", default="nms", choices=("nms", "official"))
    p.add_argument("--threshold", type=float, help="saliency probability threshold (default 0.1)")
    p.add_argument("--nms-radius", type=float, help="geodesic suppression radius (model units; default 0.05, 0 = none)")
    add_json_summary_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("transfer", help="semantic keypoints on an unannotated shape", description=TRANSFER_HELP)
    p.formatter_class = fmt
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="an embedding run")
    p.add_argument("--knowledge", required=True, metavar="ROOT", help="annotated shapes (KeypointNet layout)")
    p.add_argument("--shape", required=True, metavar="MESH_OR_PCD")
    p.add_argument("--out", required=True, metavar="K.json")
    p.add_argument("--png", metavar="K.png")
    add_json_summary_arg(p)
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("benchmark", help="train -> predict -> evaluate over a grid", description=BENCHMARK_HELP)
    p.formatter_class = fmt
    p.add_argument("--data", required=True, metavar="ROOT")
    p.add_argument("--categories", nargs="+", required=True)
    p.add_argument("--backbones", nargs="+", default=["pointnet"], choices=backbones)
    p.add_argument("--tasks", nargs="+", default=["correspondence"], choices=TASKS.names("kpengine.learn.tasks"))
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--out", default="runs/benchmark", metavar="DIR", help="run directories and tables go here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--backbone-args",
        default="{}",
        metavar="JSON",
        help='per-backbone constructor arguments, e.g. \'{"pointnet": {"width": 256}}\'',
    )
    p.add_argument(
        "--config", default="{}", metavar="JSON", help='other training settings, e.g. \'{"lr_schedule": "cosine"}\''
    )
    p.set_defaults(func=cmd_benchmark)


def task_name(text: str) -> str:
    """A task as typed: unsupervised-keypoints names the module unsupervised_keypoints."""
    return text.replace("-", "_")


def json_object_arg(text: str, flag: str, example: str) -> dict:
    """A command-line JSON object, or a DataError naming the flag and showing an example."""
    from kpengine.errors import DataError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{flag} is not JSON ({exc}); example: '{example}'") from None
    if not isinstance(value, dict):
        raise DataError(f"{flag} must be a JSON object, e.g. '{example}'")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from kpengine.errors import DataError
    from kpengine.learn.runs import train_run

    task_class = TASKS.get(args.task)
    names = {f.name for f in fields(task_class.config_class)}
    # only the flags given are in ``args`` (argparse.SUPPRESS): the others keep the task's defaults
    values = {k: v for k, v in vars(args).items() if k in names}
    values["backbone_kwargs"] = json_object_arg(args.backbone_args, "--backbone-args", '{"width": 256}')
    others = json_object_arg(args.config, "--config", '{"lr": 0.01}')
    if set(others) - names:
        raise DataError(f"--config: task {args.task} has no settings {', '.join(sorted(set(others) - names))}")
    values = {k: v for k, v in {**values, **others}.items() if k in names}
    try:
        config = task_class.config_class(**values)
    except (TypeError, ValueError) as exc:
        raise DataError(str(exc)) from None
    summary = train_run(
        task_class(config), args.out, resume=args.resume, progress=not args.json, time_limit_s=args.time_limit
    )
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif summary["world_size"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(
            f"best validation loss {summary['best_val_loss']:.4f} at epoch {summary['best_epoch']}; run in {args.out}"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from kpengine.learn.predict import predictions_for_split

    check_json_summary(args)
    task, preds, skipped = predictions_for_split(
        args.run,
        args.data,
        args.category,
        args.split,
        saliency_mode=args.saliency_mode,
        threshold=args.threshold,
        nms_radius=args.nms_radius,
    )
    emit_json(preds, args.out)
    if args.json:
        emit_json({"task": task, "out": args.out, "models": len(preds), "skipped": skipped}, "-")
    elif args.out != "-":
        print(f"wrote {task} predictions for {len(preds)} models to {args.out} (evaluate with --task {task})")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from kpengine.learn.transfer import transfer_file

    check_json_summary(args)
    result, skipped = transfer_file(args.run, args.knowledge, args.shape, args.out, png=args.png)
    found = result.correspondence()
    if args.json:
        emit_json({"shape": args.shape, "out": args.out, "keypoints": len(found), "skipped": skipped}, "-")
    else:
        print(f"{len(found)} keypoints on {args.shape} -> {args.out}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from kpengine.errors import DataError
    from kpengine.learn.benchmark import run_benchmark

    per_backbone = json_object_arg(args.backbone_args, "--backbone-args", '{"pointnet": {"width": 256}}')
    if not all(isinstance(v, dict) for v in per_backbone.values()):
        raise DataError('--backbone-args must map backbone names to objects, e.g. {"pointnet": {"width": 256}}')
    overrides = json_object_arg(args.config, "--config", '{"lr_schedule": "cosine"}')
    from kpengine.learn.config import TrainConfig

    settable = {f.name for f in fields(TrainConfig)} - {"task", "data", "category", "backbone", "backbone_kwargs"}
    if set(overrides) - settable:
        raise DataError(f"--config must be an object of training settings among: {', '.join(sorted(settable))}")
    unknown = sorted(set(per_backbone) - set(args.backbones))
    if unknown:
        raise DataError(f"--backbone-args names backbones not benchmarked: {', '.join(unknown)}")
    table = run_benchmark(
        args.data,
        args.categories,
        args.backbones,
        args.tasks,
        epochs=args.epochs,
        out=args.out,
        seed=args.seed,
        backbone_kwargs=per_backbone,
        overrides=overrides,
    )
    print(table)
    return 0
