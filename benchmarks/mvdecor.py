"""MvDeCor few-shot benchmark on KeypointNet: k labelled train shapes, several random draws, the
test split's official correspondence PCK and the dense region mIoU, every method on the same draws.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/mvdecor.py \\
        --data ../shared/data/keypointnet --category bed --views runs/views/bed \\
        --pretrain runs/mv/bed-pre --shots 5 10 --draws 5 --out runs/mvbench/bed \\
        --methods mvdecor scratch pointnet   # 2D: the task's steps (60 per shape, >= 600), 5e-3

Methods: ``mvdecor`` (multiview-fewshot from the pretraining run), ``scratch`` (the same 2D
network and schedule from random weights), ``mvdecor-noxyz`` / ``scratch-noxyz`` (the same
without the world-point input channels: the paper's inputs only), ``mvdecor-nn`` / ``random-nn`` (no fine-tuning:
labels and keypoints by nearest pretrained / random-weight embeddings, see ``run_nn``),
``pointnet`` (PointNet-256, the correspondence task
with the learning recipe of docs/learning.md), ``dgcnn`` (same, DGCNN); any other name is looked
up in ``RUNNERS`` of benchmarks/mvdecor_baselines.py (the 3D self-supervised baseline's rows:
same draws, same ``score``, same row format). Draw ``d`` is
``--seed d`` for every method (kpengine.data.shots), so all methods see the same shapes.
Each finished (method, k, draw) is appended to OUT/results.jsonl and skipped when the script
is run again (resumable); the table (mean ± std over draws) goes to OUT/table.md and stdout;
``--merge A/results.jsonl B/results.jsonl`` writes one table of several files (categories and
engineers' runs side by side). The 2D runs keep their point probabilities (``probs.npz``, mean
and geometric view fusion) so that ``--decoders RUN...`` compares keypoint decoders on the same
networks.

Region mIoU: for the 2D networks, the per-point labels voted from the views ("dense"); for every
method also the regions grown around its predicted keypoints with the same radius ("from
keypoints"), so that the point networks, which predict keypoints only, are comparable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from kpengine.data.dataset import KeypointNetDataset
from kpengine.image.tasks import image_task
from kpengine.image.tasks.multiview_fewshot import (
    OWN_FIT_DOUBLINGS,
    OWN_FIT_LEVEL,
    default_steps,
    epochs_for,
    steps_by_own_fit,
)
from kpengine.learn.inference import load_run
from kpengine.learn.runs import train_run
from kpengine.metrics.evaluate import evaluate_correspondence
from kpengine.metrics.regions import REGION_RADIUS, region_labels, region_miou

THRESHOLDS = (0.01, 0.05, 0.10)
STEPS_3D = 200
#: the 2D runs' point probabilities are kept (``probs.npz``) under both view fusions, so that the
#: keypoint decoders can be compared on the same trained networks (``--decoders``)
FUSIONS = ("mean", "log")


def train_pck(args, k: int, draw: int, keypoints: dict[str, dict[int, int]], symmetry: str = "plain") -> list[float]:
    """PCK of a run on its own k labelled shapes: a run that does not fit them is underfit.
    ``symmetry="best"``: each shape against the rotational relabelling of its ground truth closest
    to the prediction, as the official test script scores."""
    from kpengine.data.shots import draw_shots

    ids = KeypointNetDataset(args.data, args.category, "train").model_ids
    shots = KeypointNetDataset(args.data, args.category, "train", model_ids=draw_shots(ids, k, draw))
    preds = {m: {int(s): int(i) for s, i in kp.items()} for m, kp in keypoints.items()}
    return evaluate_correspondence(shots, preds, thresholds=THRESHOLDS, symmetry=symmetry).metrics["pck"]


def score(test: KeypointNetDataset, keypoints: dict[str, dict[int, int]], dense: dict | None) -> dict:
    n = test.n_classes
    preds = {m: {int(s): int(i) for s, i in kp.items()} for m, kp in keypoints.items()}
    pck = evaluate_correspondence(test, preds, thresholds=THRESHOLDS).metrics["pck"]
    # the official test script's scoring: each shape against its best rotational relabelling
    pck_best = evaluate_correspondence(test, preds, thresholds=THRESHOLDS, symmetry="best").metrics["pck"]
    truths, grown, voted = [], [], []
    for shape in test:
        truths.append(region_labels(shape.points, shape.point_indices, shape.semantic_ids, n, REGION_RADIUS))
        kp = preds.get(shape.model_id, {})
        ids = np.array(sorted(kp), np.int64)
        grown.append(region_labels(shape.points, np.array([kp[s] for s in ids], np.int64), ids, n, REGION_RADIUS))
        if dense is not None:
            voted.append(dense.get(shape.model_id, np.full(len(shape.points), n)))
    out = {"pck": pck, "pck_best": pck_best, "miou_from_keypoints": region_miou(grown, truths, n)}
    if dense is not None:
        out["miou_dense"] = region_miou(voted, truths, n)
    return out


def run_2d(args, method: str, k: int, draw: int, out: Path, steps: int = 0) -> dict:
    """A multiview-fewshot run (``mvdecor*`` from ``--pretrain``, ``scratch*`` from random
    weights) with ``steps`` optimiser steps, else ``--steps-2d``, else the task's own step rule
    (``default_steps``: 60 per shape, at least 600); its test and own-shape keypoints, dense
    labels, and the point probabilities of both fusions saved to ``out/probs.npz`` (float16,
    ``split/fusion/model_id``)."""
    steps = steps or args.steps_2d
    task = image_task("multiview_fewshot")
    cfg = task.config_class(
        task="multiview_fewshot",
        data=args.data,
        category=args.category,
        views=args.views,
        shots=k,
        seed=draw,
        init=args.pretrain if method.startswith("mvdecor") else "",
        background_weight=args.background_weight,
        epochs=epochs_for(steps, k * 12) if steps else 0,
        lr=args.lr_2d,
        lr_schedule="cosine",
        position="-noxyz" not in method,
        distance_weight=distance_weight(args, method),
        device=args.device,
    )
    summary = train_run(task(cfg), out, resume=True, progress=False, time_limit_s=args.time_limit or None)
    model, state = load_run(out)
    model.to(args.device)
    fusions = tuple(dict.fromkeys(["mean", *args.fusions]))
    test = point_probabilities_of(model, state, args.data, "test", fusions=fusions)
    train = point_probabilities_of(model, state, args.data, "train", state["shots_ids"], fusions=fusions)
    save_probs(out / "probs.npz", {"test": test, "train": train})
    keypoints, dense = decode(args.data, args.category, "test", test["mean"], state["n_classes"], args.kernel)
    fitted, _ = decode(args.data, args.category, "train", train["mean"], state["n_classes"], args.kernel)
    steps = cfg.epochs * math.ceil(k * 12 / cfg.batch_size)
    return {"summary": summary, "keypoints": keypoints, "dense": dense, "train_keypoints": fitted, "steps": steps}


class MissingRung(Exception):
    """``--rungs-only``: the own-fit rule needs a rung that no ``--rungs`` file has (``steps``)."""

    def __init__(self, steps: int) -> None:
        super().__init__(f"no rung of {steps} steps")
        self.steps = steps


def first_rung(args, method: str, k: int) -> int:
    """The own-fit rule's first rung of a cell: the 2D task's ``default_steps(k)`` (600 at k = 5
    and 10, 1800 at k = 30), a point network's ``--steps-3d`` (200: the steps its rows had before
    the rule, sixth pass)."""
    return default_steps(k) if runner_kind(method) == "2d" else args.steps_3d


def ruled(args, method: str, k: int) -> bool:
    """Whether a cell's row comes from the own-fit rule: ``--steps-rule own-fit``, a few-shot k
    (not the full-data reference, k = 0), and a 2D or point network the rule can give steps to
    (``run_2d``, ``run_3d`` and the PointContrast row; not the nearest-embedding variants)."""
    return args.steps_rule == "own-fit" and k > 0 and runner_kind(method) in ("2d", "3d")


def next_rung(known: dict[int, float], start: int, level: float = OWN_FIT_LEVEL, doublings: int = OWN_FIT_DOUBLINGS):
    """The steps of the rung the own-fit rule needs next given the rungs ``known`` ({steps: own
    PCK@0.05}), or None when the known rungs already decide (``steps_by_own_fit`` itself, run on
    the known fits: a GPU queue trains rungs as separate jobs and asks this after each)."""

    def fit_at(steps: int) -> float:
        if steps not in known:
            raise MissingRung(steps)
        return known[steps]

    try:
        steps_by_own_fit(fit_at, start, level, doublings)
    except MissingRung as missing:
        return missing.steps
    return None


def own_fit_row(args, method: str, k: int, draw: int, out: Path, test: KeypointNetDataset, prior: list[dict]) -> dict:
    """A cell's row at the steps that fit its own k labelled shapes (``--steps-rule own-fit``,
    ``steps_by_own_fit``: from ``first_rung`` (a 2D run's ``default_steps(k)``, a point run's
    ``--steps-3d``), doubling while the own-shape PCK@0.05 is below ``--fit-level``, at most
    ``--fit-doublings`` times). A rung already trained, in ``prior`` (``--rungs`` files and
    ``OUT/rungs.jsonl``), is read, not retrained; a new one is trained into
    ``OUT/METHOD-kK-dD-sSTEPS`` and appended to ``OUT/rungs.jsonl`` (``--rungs-only``: raises
    ``MissingRung`` instead). The row is the chosen rung's, with ``steps_rule``: the level and
    every rung as [steps, own PCK@0.05, source]."""
    by_steps: dict[int, dict] = {}

    def fit_at(steps: int) -> float:
        row = find_rung(prior, args, method, k, draw, steps)
        if row is None:
            if getattr(args, "rungs_only", False):
                raise MissingRung(steps)
            row = measure(args, method, k, draw, out / f"{method}-k{k}-d{draw}-s{steps}", test, steps=steps)
            row["rung_source"] = str(out / "rungs.jsonl")
            append_row(out / "rungs.jsonl", row)
            prior.append(row)
        by_steps[steps] = row
        return row["train_pck"][1] if row.get("train_pck") else float("nan")

    steps, rungs = steps_by_own_fit(fit_at, first_rung(args, method, k), args.fit_level, args.fit_doublings)
    row = {key: v for key, v in by_steps[steps].items() if key != "rung_source"}
    row["steps_rule"] = {
        "rule": "own-fit",
        "level": args.fit_level,
        "doublings": args.fit_doublings,
        "rungs": [[s, f, by_steps[s].get("rung_source", "")] for s, f in rungs],
    }
    return row


def find_rung(prior: list[dict], args, method: str, k: int, draw: int, steps: int) -> dict | None:
    """The last complete row of ``prior`` for this category, method, k, draw and step count
    (and the same distance weight and decoder where the row records them), or None."""
    found = None
    for r in prior:
        key = (r.get("category"), r["method"], r["k"], r["draw"], r.get("steps"))
        if key != (args.category, method, k, draw, steps):
            continue
        if r.get("distance_weight", distance_weight(args, method)) != distance_weight(args, method):
            continue
        if r.get("kernel", args.kernel) != args.kernel or not complete(r) or not r.get("train_pck"):
            continue
        if runner_kind(method) == "3d" and r.get("relabel_margin", 0.0) != getattr(args, "relabel_margin", 0.0):
            continue
        found = r
    return found


def append_row(path: Path, row: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def distance_weight(args, method: str) -> float:
    """The distance head's loss weight of a 2D method: ``--distance-weight``, or 1 for a name
    ending in ``+dist`` (``mvdecor+dist``: the same run with the distance head as an auxiliary
    loss; its keypoints still by ``--kernel``, the ball unless told: on the 5 training beds of
    draw 0 the ball gave PCK@0.01 0.713 on the distance-trained network, the distance decoder
    0.595, docs/mvdecor.md)."""
    return args.distance_weight or (1.0 if method.endswith("+dist") else 0.0)


def point_probabilities_of(
    model, state: dict, data: str, split: str, ids: list[str] | None = None, fusions: tuple[str, ...] = FUSIONS
) -> dict:
    """{fusion: {model_id: (N, C + 1) point probabilities}} of a few-shot run on a split's shapes
    (``fusions``: "mean" first; the table's keypoints come from "mean")."""
    from kpengine.image.multiview.training import open_views
    from kpengine.image.tasks.multiview_fewshot import label_shape, load_shapes, saved_config

    cfg = saved_config(state, data=str(data))
    cache, shapes = open_views(cfg, list(load_shapes(cfg, split, ids)))
    return {
        f: {s.model_id: label_shape(model, cache, cfg, s, state["n_classes"], fusion=f) for s in shapes}
        for f in fusions
    }


def save_probs(path: Path, probs: dict) -> None:
    flat = {
        f"{split}/{f}/{m}": p.astype(np.float16)
        for split, by_fusion in probs.items()
        for f, by_id in by_fusion.items()
        for m, p in by_id.items()
    }
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **flat)
    tmp.replace(path)


def load_probs(path: Path) -> dict:
    """{split: {fusion: {model_id: (N, C + 1) float32}}} from ``save_probs``."""
    out: dict = {}
    with np.load(path) as z:
        for key in z.files:
            split, f, m = key.split("/")
            out.setdefault(split, {}).setdefault(f, {})[m] = z[key].astype(np.float32)
    return out


def decode(data: str, category: str, split: str, probs: dict, n_classes: int, kernel: str) -> tuple[dict, dict]:
    """Keypoints and argmax labels of a split's shapes from their point probabilities."""
    from kpengine.image.multiview.backproject import keypoints_from_probabilities

    ds = KeypointNetDataset(data, category, split, model_ids=sorted(probs))
    keypoints, labels = {}, {}
    for shape in ds:
        p = probs[shape.model_id]
        distance = p[:, n_classes + 1] if p.shape[1] > n_classes + 1 and kernel == "distance" else None
        p = p[:, : n_classes + 1]
        kernel_ = "ball" if kernel == "distance" else kernel
        keypoints[shape.model_id] = keypoints_from_probabilities(
            shape.points, p, n_classes, REGION_RADIUS, kernel_, distance=distance
        )
        labels[shape.model_id] = p.argmax(axis=1)
    return keypoints, labels


def run_nn(args, method: str, k: int, draw: int, out: Path) -> dict:
    """No fine-tuning: the pretrained (``mvdecor-nn``) or random (``random-nn``) U-Net's pixel
    embeddings voted onto each cloud; a test point takes the label of its 5 nearest labelled
    points, an id's keypoint is the test point nearest the mean descriptor of the k labelled
    shapes' keypoints of that id."""
    import torch

    from kpengine.data.shots import draw_shots
    from kpengine.image.multiview.training import MultiviewConfig, new_unet, open_views
    from kpengine.image.multiview.transfer import nearest_labels, point_embeddings, prototype_keypoints
    from kpengine.image.tasks.multiview_fewshot import shape_regions

    t0 = time.perf_counter()
    pre, state = load_run(args.pretrain)
    cfg = MultiviewConfig.from_json({**state["config"], "data": args.data, "views": args.views})
    if method == "random-nn":
        torch.manual_seed(draw)
        pre = new_unet(cfg).eval()
    train = KeypointNetDataset(args.data, args.category, "train")
    n = train.n_classes
    shots = [train.by_id(m) for m in draw_shots(train.model_ids, k, draw)]
    test = list(KeypointNetDataset(args.data, args.category, "test"))
    cache, _ = open_views(cfg, shots + test)
    bank, bank_labels, protos = [], [], {}
    for s in shots:
        e = point_embeddings(pre, cache.get(s.model_id), cfg.inputs, s.points)
        bank.append(e)
        bank_labels.append(shape_regions(s, n, 0.05))
        for sid, idx in zip(s.semantic_ids.tolist(), s.point_indices.tolist()):
            protos.setdefault(sid, []).append(e[idx])
    bank, bank_labels = np.concatenate(bank), np.concatenate(bank_labels)
    protos = {sid: np.mean(v, axis=0) for sid, v in protos.items()}
    keypoints, dense = {}, {}
    for s in test:
        e = point_embeddings(pre, cache.get(s.model_id), cfg.inputs, s.points)
        keypoints[s.model_id] = prototype_keypoints(e, protos)
        dense[s.model_id] = nearest_labels(e, bank, bank_labels)
    out.mkdir(parents=True, exist_ok=True)
    seconds = time.perf_counter() - t0
    (out / "history.json").write_text(json.dumps({"epochs": [{"seconds": seconds}]}))
    return {"summary": {"epochs": 0}, "keypoints": keypoints, "dense": dense}


def run_3d(args, backbone: str, k: int, draw: int, out: Path, init: str = "", steps: int = 0) -> dict:
    """A point network on the k shapes for ``steps`` optimiser steps (0: ``--steps-3d``; batches
    of 8 shapes, so ``ceil(k / 8)`` steps an epoch); ``init``: a pretraining run its backbone
    starts from (benchmarks/mvdecor_baselines.py's ``pointcontrast``), "" = from scratch.
    ``k = 0``: the full-data supervised reference, every train shape for ``--epochs-full``
    epochs (best by the validation split's loss, as the official protocol)."""
    steps = steps or args.steps_3d
    from kpengine.learn.config import TrainConfig
    from kpengine.learn.registry import TASKS

    cfg = TrainConfig(
        task="correspondence",
        data=args.data,
        category=args.category,
        backbone=backbone,
        backbone_kwargs={"width": 256} if backbone == "pointnet" else {},
        shots=k,
        seed=draw,
        epochs=epochs_for(steps, k) if k else args.epochs_full,
        lr_schedule="cosine",
        scale_augment=0.2,
        relabel_margin=getattr(args, "relabel_margin", 0.0),
        init=init,
        device=args.device,
    )
    summary = train_run(
        TASKS.get("correspondence")(cfg), out, resume=True, progress=False, time_limit_s=args.time_limit or None
    )
    from kpengine.data.shots import draw_shots

    ids = draw_shots(KeypointNetDataset(args.data, args.category, "train").model_ids, k, draw) if k else None
    return {
        "summary": summary,
        "keypoints": _keypoints_3d(out, args, "test"),
        "dense": None,
        "train_keypoints": _keypoints_3d(out, args, "train", ids) if k else None,
        "steps": steps if k else None,
    }


def _keypoints_3d(run: Path, args, split: str, ids: list[str] | None = None) -> dict[str, dict[int, int]]:
    """A point run's keypoints on a split's shapes (``ids``: those only, e.g. its own k training
    shapes), the network on ``--device`` (as ``kpengine predict`` does on the CPU)."""
    from kpengine.learn.config import TrainConfig
    from kpengine.learn.registry import TASKS

    model, state = load_run(run)
    model.to(args.device)
    cfg = TrainConfig.from_json(state["config"])
    shapes = KeypointNetDataset(args.data, args.category, split, n_points=cfg.n_points, model_ids=ids)
    preds = TASKS.get(cfg.task).predictor(run, model, state, args.data).predict(shapes)
    return {m: {int(s): int(i) for s, i in kp.items()} for m, kp in preds.items()}


def table(rows: list[dict]) -> str:
    lines = [
        "| category | method | k | draws | PCK@0.01 | PCK@0.05 | PCK@0.10 | mIoU dense | mIoU from keypoints"
        " | train-shape PCK@0.05 | steps | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r.get("category", ""), r["method"], r["k"]) for r in rows}, key=lambda t: (t[0], t[2], t[1]))
    for category, method, k in keys:
        sel = [r for r in rows if (r.get("category", ""), r["method"], r["k"]) == (category, method, k)]

        def ms(values: list[float]) -> str:
            v = np.array([x for x in values if x is not None and not np.isnan(x)])
            if len(v) == 0:
                return "–"
            return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"

        pck = [ms([r["pck"][t] for r in sel]) for t in range(3)]
        dense = ms([r.get("miou_dense") for r in sel])
        grown = ms([r["miou_from_keypoints"] for r in sel])
        fit = ms([r["train_pck"][1] if r.get("train_pck") else None for r in sel])
        secs = np.median([r["train_seconds"] for r in sel])
        steps = ", ".join(str(s) if s else "–" for s in sorted({r.get("steps") or 0 for r in sel})) if k else "–"
        lines.append(
            f"| {category} | {method} | {k} | {len(sel)} | {' | '.join(pck)} | {dense} | {grown} | {fit} | {steps}"
            f" | {secs:.0f} |"
        )
    return "\n".join(lines)


def rungs_table(rows: list[dict]) -> str:
    """The own-fit rule's rungs of every row that has them: per cell and draw, each rung's steps
    and own-shape PCK@0.05, the chosen (last) one in bold."""
    ruled = [r for r in rows if r.get("steps_rule")]
    if not ruled:
        return ""
    draws = sorted({r["draw"] for r in ruled})
    lines = [
        "| category | k | method | " + " | ".join(f"draw {d}" for d in draws) + " |",
        "|---|---|---|" + "---|" * len(draws),
    ]
    for category, k, method in sorted({(r.get("category", ""), r["k"], r["method"]) for r in ruled}):
        by_draw = {r["draw"]: r for r in ruled if (r.get("category", ""), r["k"], r["method"]) == (category, k, method)}
        cells = []
        for d in draws:
            rungs = by_draw[d]["steps_rule"]["rungs"] if d in by_draw else []
            text = [f"{s} ({f:.3f})" for s, f, _ in rungs]
            if text:
                text[-1] = f"**{text[-1]}**"
            cells.append(" -> ".join(text) or "–")
        lines.append(f"| {category} | {k} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def planned_epochs(row: dict) -> int | None:
    """The epochs a row's run was planned to train (None: unknown, e.g. rows of other runners)."""
    method, k, steps = row["method"], row["k"], row.get("steps")
    if runner_kind(method) == "2d" and steps:  # steps = planned epochs x steps per epoch (run_2d)
        return steps // math.ceil(k * 12 / 8)
    if runner_kind(method) == "3d" and k and steps:
        return epochs_for(steps, k)
    return None


def runner_kind(method: str) -> str:
    if method.split("+")[0].split("-")[0] in ("mvdecor", "scratch") and method not in ("mvdecor-nn",):
        return "2d"
    return "3d" if method in ("pointnet", "dgcnn", "pointnet2", "pointconv", "pointcontrast") else "other"


def complete(row: dict) -> bool:
    """False for a run its time limit stopped before its planned epochs (a GPU job's deadline)."""
    planned = planned_epochs(row)
    return planned is None or row["epochs"] >= planned


def goal_table(rows: list[dict], method: str = "mvdecor+dist") -> str:
    """MvDeCor against every other method of the same category and k, on the draws both ran:
    the mean ± std over those draws of the paired difference (MvDeCor minus baseline) and the
    draws MvDeCor won, per threshold and for the region mIoU from keypoints."""
    lines = [
        f"| category | k | {method} minus | draws | PCK@0.01 | PCK@0.05 | PCK@0.10 | mIoU from keypoints |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cells = sorted({(r.get("category", ""), r["k"]) for r in rows if r["method"] == method})
    for category, k in cells:
        ours = {r["draw"]: r for r in rows if (r.get("category", ""), r["k"], r["method"]) == (category, k, method)}
        others = sorted({r["method"] for r in rows if (r.get("category", ""), r["k"]) == (category, k)} - {method})
        for other in others:
            theirs = {
                r["draw"]: r for r in rows if (r.get("category", ""), r["k"], r["method"]) == (category, k, other)
            }
            draws = sorted(set(ours) & set(theirs))
            if not draws:
                continue

            def paired(get, ours=ours, theirs=theirs, draws=draws) -> str:
                d = np.array([get(ours[x]) - get(theirs[x]) for x in draws])
                wins = int((d > 0).sum())
                spread = f" ± {d.std():.3f}" if len(d) > 1 else ""
                return f"{d.mean():+.3f}{spread} ({wins}/{len(d)})"

            cols = [paired(lambda r, t=t: r["pck"][t]) for t in range(3)]
            cols.append(paired(lambda r: r["miou_from_keypoints"]))
            lines.append(f"| {category} | {k} | {other} | {len(draws)} | {' | '.join(cols)} |")
    return "\n".join(lines)


def fitted_rows(rows: list[dict], level: float) -> tuple[list[dict], list[dict]]:
    """The rows whose run fits its own k labelled shapes at PCK@0.10 >= ``level`` (rows without an
    own-shape PCK, e.g. the full-data reference, are kept), and those left out. A point network
    trained with the official loss (a minimum over each shape's rotational relabellings) can learn
    a relabelled id assignment for a whole draw: its own PCK@0.10 is then the fraction of shapes
    without that symmetry (bathtub: .1-.6), at any number of steps (docs/mvdecor.md, sixth pass)."""
    kept, out = [], []
    for r in rows:
        (out if r.get("train_pck") and r["train_pck"][2] < level else kept).append(r)
    return kept, out


def relabel_check(runs: list[str], data: str) -> list[dict]:
    """For point few-shot runs: per own labelled shape, the fraction of ids predicted within 0.10
    of the truth under the identity labelling (what the official PCK scores) and under the best of
    the shape's rotational relabellings (what the training loss takes the minimum over). A shape
    fitted under a relabelling only is a whole-shape miss of the official PCK, not an underfit."""
    import torch

    from kpengine.learn.config import TrainConfig
    from kpengine.metrics.relabel import rotational_relabellings

    out = []
    for run in runs:
        model, state = load_run(run)
        cfg = TrainConfig.from_json(state["config"])
        ids = draw_shots_of(data, cfg)
        shapes = list(KeypointNetDataset(data, cfg.category, "train", n_points=cfg.n_points, model_ids=ids))
        with torch.no_grad():
            logits = model.eval()(torch.from_numpy(np.stack([s.points for s in shapes]).astype(np.float32))).numpy()
        for shape, o in zip(shapes, logits):
            pred = o.argmax(axis=0)
            fits = []
            for lab in rotational_relabellings(shape, state["n_classes"]):
                lab = np.asarray(lab)
                have = lab >= 0
                fits.append(
                    float((np.linalg.norm(shape.points[pred[have]] - shape.points[lab[have]], axis=1) < 0.1).mean())
                )
            row = {"run": str(run), "model_id": shape.model_id, "relabellings": len(fits), "identity": fits[0]}
            row["best"] = max(fits)
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def draw_shots_of(data: str, cfg) -> list[str]:
    """The k labelled train shapes of a point run's config (``shots``, ``seed``)."""
    from kpengine.data.shots import draw_shots

    return draw_shots(KeypointNetDataset(data, cfg.category, cfg.train_split).model_ids, cfg.shots, cfg.seed)


def figure(args, path: str) -> None:
    """The nearest-embedding transfer between two test shapes, with the pretrained U-Net and,
    for comparison, the same network with random weights (seed 0)."""
    import torch

    from kpengine.image.multiview.training import MultiviewConfig, new_unet
    from kpengine.image.multiview.transfer import transfer_figure
    from kpengine.image.multiview.unet import view_inputs
    from kpengine.image.multiview.views import ViewCache

    pre, state = load_run(args.pretrain)
    cfg = MultiviewConfig.from_json({**state["config"], "data": args.data, "views": args.views})
    torch.manual_seed(0)
    rand = new_unet(cfg).eval()
    cache = ViewCache(args.views, cfg.category)
    test = KeypointNetDataset(args.data, args.category, "test").model_ids
    src, tgt = cache.get(test[0]), cache.get(test[1])
    rows = []
    with torch.no_grad():
        for a, b in ((0, 0), (0, 7)):
            for name, net in (("MvDeCor pretrained", pre), ("random weights", rand)):
                es = net(torch.from_numpy(view_inputs(src, cfg.inputs, [a])))[0]
                et = net(torch.from_numpy(view_inputs(tgt, cfg.inputs, [b])))[0]
                rows.append((f"{name}\nview {a} -> view {b}", src, a, tgt, b, es, et))
    transfer_figure(path, rows)
    print(f"figure: {path} ({test[0]} -> {test[1]})")


def fit_figure(runs: list[str], path: str, views: tuple[int, ...] = (0, 3, 6, 9)) -> None:
    """Per-view predictions of few-shot runs on the first of their own training shapes: the
    input colour, the target regions, and each run's argmax label per pixel (background black,
    off the object white). The runs must share their draw (the same training shapes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from kpengine.image.multiview.views import ViewCache
    from kpengine.image.tasks.multiview_fewshot import fewshot_inputs, saved_config, shape_regions

    loaded = [load_run(r) for r in runs]
    state = loaded[0][1]
    cfg = saved_config(state)
    model_id, n = state["shots_ids"][0], state["n_classes"]
    shape = KeypointNetDataset(cfg.data, cfg.category, "train", model_ids=[model_id]).by_id(model_id)
    sv = ViewCache(cfg.views, cfg.category).get(model_id)
    truth = shape_regions(shape, n, cfg.region_radius)
    colours = np.vstack([plt.get_cmap("tab20")(np.arange(20))[:, :3], plt.get_cmap("Set1")(np.arange(9))[:, :3]])
    colours = np.vstack([colours[:n], [[0.0, 0.0, 0.0]]])  # background last

    def paint(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
        img = np.ones((*labels.shape, 3))
        img[mask] = colours[labels[mask]]
        return img

    preds = []
    for model, st in loaded:
        c = saved_config(st, views=cfg.views)
        with torch.no_grad():
            preds.append(
                model.eval()(torch.from_numpy(fewshot_inputs(sv, c, list(views))))[:, : n + 1].argmax(1).numpy()
            )
    cols = 2 + len(runs)
    fig, axes = plt.subplots(len(views), cols, figsize=(2.4 * cols, 2.4 * len(views)), squeeze=False)
    heads = ["input colour", "target regions"] + [Path(r).name for r in runs]
    for row, v in enumerate(views):
        mask = sv.mask[v]
        target = truth[np.maximum(sv.index[v], 0).astype(np.int64)]
        images = [sv.color[v], paint(target, mask)] + [paint(p[row], mask) for p in preds]
        for col, img in enumerate(images):
            ax = axes[row, col]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(heads[col], fontsize=8)
        axes[row, 0].set_ylabel(f"view {v}", fontsize=8)
    fig.suptitle(f"{cfg.category} {model_id}: a training shape of the few-shot runs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"figure: {path}")


def runner(method: str):
    """The function that runs a method: the 2D few-shot runs, the nearest-embedding variants, the
    point networks from scratch here; any other name from ``RUNNERS`` of
    benchmarks/mvdecor_baselines.py (the other engineers' rows: same signature, same row format)."""
    if method in ("mvdecor-nn", "random-nn"):
        return run_nn
    if method.split("+")[0].split("-")[0] in ("mvdecor", "scratch"):
        return run_2d
    if method in ("pointnet", "dgcnn", "pointnet2", "pointconv"):
        return run_3d
    try:
        import mvdecor_baselines  # benchmarks/ is on sys.path when this file runs as a script
    except ImportError as exc:
        raise SystemExit(f"unknown method {method!r} (and no benchmarks/mvdecor_baselines.py: {exc})") from exc
    if method not in mvdecor_baselines.RUNNERS:
        raise SystemExit(
            f"unknown method {method!r}; mvdecor_baselines.RUNNERS has {sorted(mvdecor_baselines.RUNNERS)}"
        )
    return mvdecor_baselines.RUNNERS[method]


def key_of(row: dict) -> tuple:
    return (row.get("category", ""), row["method"], row["k"], row["draw"])


def rows_by_key(rows: list[dict]) -> dict[tuple, dict]:
    return {key_of(r): r for r in rows}


def latest_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Rows with one per (category, method, k, draw), the last read winning, and those replaced
    (a rung read back by ``--steps-rule own-fit`` replaces its own earlier row: same steps, same PCK)."""
    latest: dict[tuple, dict] = {}
    replaced = []
    for r in rows:
        key = key_of(r)
        if key in latest:
            replaced.append(latest[key])
        latest[key] = r
    return list(latest.values()), replaced


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def decoder_study(run_dirs: list[Path], data: str, category: str) -> list[dict]:
    """PCK of every (fusion, kernel) decoder on the saved point probabilities of 2D runs, on their
    own k training shapes (what a few-shot method may choose on) and on the test split."""
    from kpengine.image.multiview.backproject import KERNELS

    test = KeypointNetDataset(data, category, "test")
    out = []
    for run in run_dirs:
        probs = load_probs(run / "probs.npz")
        _, state = load_run(run)
        n = state["n_classes"]
        ids = KeypointNetDataset(data, category, "train", model_ids=state["shots_ids"])
        with_distance = next(iter(probs["test"]["mean"].values())).shape[1] > n + 1
        for fusion in FUSIONS:
            for kernel in KERNELS + (("distance",) if with_distance else ()):
                kp_test, _ = decode(data, category, "test", probs["test"][fusion], n, kernel)
                kp_train, _ = decode(data, category, "train", probs["train"][fusion], n, kernel)
                row = {
                    "run": run.name,
                    "fusion": fusion,
                    "kernel": kernel,
                    "train_pck": evaluate_correspondence(ids, kp_train, thresholds=THRESHOLDS).metrics["pck"],
                    "test_pck": evaluate_correspondence(test, kp_test, thresholds=THRESHOLDS).metrics["pck"],
                }
                print(json.dumps(row), flush=True)
                out.append(row)
    return out


def measure(args, method: str, k: int, draw: int, run_dir: Path, test: KeypointNetDataset, steps: int = 0) -> dict:
    """Train (or resume) one method's run on draw ``draw`` of k shapes into ``run_dir`` and score
    it: the results.jsonl row (test PCK and mIoU, own-shape PCK, steps, seconds, load).
    ``steps``: the run's optimiser steps (0: ``--steps-2d`` or the task's rule for a 2D run,
    ``--steps-3d`` for a point run)."""
    t0 = time.perf_counter()
    margin = getattr(args, "relabel_margin", 0.0)
    run = runner(method)
    res = run(args, method, k, draw, run_dir, **({"steps": steps} if steps else {}))
    wall = time.perf_counter() - t0
    return {
        "method": method,
        "category": args.category,
        "k": k,
        "draw": draw,
        **score(test, res["keypoints"], res["dense"]),
        "train_pck": train_pck(args, k, draw, res["train_keypoints"]) if res.get("train_keypoints") else None,
        **(
            {"train_pck_best": train_pck(args, k, draw, res["train_keypoints"], "best")}
            if res.get("train_keypoints")
            else {}
        ),
        "steps": res.get("steps", args.steps_3d),
        "train_seconds": sum(h["seconds"] for h in json.loads((run_dir / "history.json").read_text())["epochs"]),
        "wall_seconds": wall,
        "epochs": res["summary"]["epochs"],
        "loadavg_1m": os.getloadavg()[0],
        "device": args.device,
        **({"kernel": args.kernel, "distance_weight": distance_weight(args, method)} if run is run_2d else {}),
        **({"pretrain": args.pretrain} if method.startswith("mvdecor") else {}),
        **({"pretrain_3d": args.pretrain_3d} if method == "pointcontrast" else {}),
        **({"relabel_margin": margin} if runner_kind(method) == "3d" and margin else {}),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--views", required=True)
    p.add_argument("--pretrain", required=True, metavar="RUN_DIR")
    p.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    p.add_argument("--draws", type=int, default=2, help="draws 0..N-1 (or --draw-list)")
    p.add_argument("--draw-list", type=int, nargs="+", metavar="D", help="run these draws only")
    p.add_argument("--methods", nargs="+", default=["mvdecor", "scratch", "pointnet"])
    p.add_argument("--out", required=True)
    p.add_argument(
        "--steps-2d",
        type=int,
        default=0,
        help="optimiser steps of a 2D few-shot run (default: the task's, 60 per labelled shape, at least 600)",
    )
    p.add_argument(
        "--steps-rule",
        choices=("fixed", "own-fit"),
        default="fixed",
        help="fixed = --steps-2d or the task's (2D), --steps-3d (point runs); own-fit = every few-shot 2D and point"
        " row (not k = 0) from those steps, doubled while the run's PCK@0.05 on its own k labelled shapes is below"
        " --fit-level (at most --fit-doublings times; the test split is never looked at). Every rung goes to"
        " OUT/rungs.jsonl, the chosen one to results.jsonl",
    )
    p.add_argument(
        "--fit-level", type=float, default=OWN_FIT_LEVEL, help="own-fit: own-shape PCK@0.05 that counts as fitted"
    )
    p.add_argument("--fit-doublings", type=int, default=OWN_FIT_DOUBLINGS, help="own-fit: at most this many doublings")
    p.add_argument(
        "--rungs",
        nargs="+",
        metavar="RESULTS",
        help="own-fit: results.jsonl files whose 2D rows (same category, method, k, draw, steps) count as rungs"
        " already trained, e.g. the fixed-step table's 600-step runs",
    )
    p.add_argument(
        "--rungs-only",
        action="store_true",
        help="own-fit: train nothing; a cell whose rule needs a rung no --rungs file has is skipped and named",
    )
    p.add_argument(
        "--steps-3d",
        type=int,
        default=STEPS_3D,
        help="optimiser steps of a point few-shot run (own-fit: its first rung)",
    )
    p.add_argument(
        "--relabel-margin",
        type=float,
        default=0.0,
        metavar="NATS",
        help="point runs: the correspondence loss prefers the identity labelling by NATS over each rotational"
        " relabelling (0: the official minimum; rows trained with it record relabel_margin and are rungs of their own)",
    )
    p.add_argument(
        "--epochs-full",
        type=int,
        default=40,
        help="point runs with --shots 0 (every train shape: the full-data reference): epochs",
    )
    p.add_argument("--lr-2d", type=float, default=5e-3, help="2D runs: learning rate (cosine decay)")
    p.add_argument("--background-weight", type=float, default=0.2, help="2D runs: background label weight")
    p.add_argument(
        "--kernel", default="ball", help="2D runs: the keypoint decoder (ball | cone | distance: the distance head's)"
    )
    p.add_argument(
        "--distance-weight", type=float, default=0.0, help="2D runs: weight of the distance head's loss (0: none)"
    )

    p.add_argument("--device", default="cpu", help="cpu | cuda: where the runs train (inference of 2D runs too)")
    p.add_argument(
        "--time-limit", type=float, default=0, metavar="S", help="stop each training after the epoch past S seconds"
    )
    p.add_argument(
        "--fusions",
        nargs="+",
        default=list(FUSIONS),
        choices=FUSIONS,
        help="2D runs: the view fusions whose point probabilities are kept in probs.npz (the table uses mean)",
    )
    p.add_argument("--figure", metavar="PNG", help="only draw the nearest-embedding transfer figure")
    p.add_argument("--fit-figure", metavar="PNG", help="only draw --fit-runs' predictions on a training shape")
    p.add_argument("--fit-runs", nargs="+", metavar="RUN_DIR", help="few-shot runs of one draw for --fit-figure")
    p.add_argument(
        "--decoders", nargs="+", metavar="RUN_DIR", help="only compare the keypoint decoders on these 2D runs"
    )
    p.add_argument(
        "--relabel-check",
        nargs="+",
        metavar="RUN_DIR",
        help="only check point few-shot runs' own shapes under the identity and the rotational relabellings",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS",
        help="only write the table of these results.jsonl files (a later file's row replaces an earlier one's of the"
        " same category, method, k and draw: e.g. own-fit rows after the fixed-step table's)",
    )
    p.add_argument("--merge-draws", type=int, nargs="+", metavar="D", help="--merge: these draws only")
    p.add_argument("--merge-shots", type=int, nargs="+", metavar="K", help="--merge: these k only")
    p.add_argument(
        "--merge-fitted",
        type=float,
        default=0.0,
        metavar="LEVEL",
        help="--merge: also the paired table without the runs whose own-shape PCK@0.10 is below LEVEL",
    )
    try:  # the other methods' own options (benchmarks/mvdecor_baselines.py: add_arguments)
        import mvdecor_baselines
    except ImportError:
        mvdecor_baselines = None
    if mvdecor_baselines is not None and hasattr(mvdecor_baselines, "add_arguments"):
        mvdecor_baselines.add_arguments(p)
    args = p.parse_args()
    if args.figure:
        figure(args, args.figure)
        return
    if args.fit_figure:
        fit_figure(args.fit_runs, args.fit_figure)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.relabel_check:
        rows = relabel_check(args.relabel_check, args.data)
        (out / "relabel_check.json").write_text(json.dumps(rows, indent=1) + "\n")
        return
    if args.decoders:
        rows = decoder_study([Path(r) for r in args.decoders], args.data, args.category)
        (out / "decoders.json").write_text(json.dumps(rows, indent=1) + "\n")
        return
    if args.merge:
        rows = [
            r
            for f in args.merge
            for r in read_rows(Path(f))
            if (args.merge_draws is None or r["draw"] in args.merge_draws)
            and (args.merge_shots is None or r["k"] in args.merge_shots)
        ]
        rows, replaced = latest_rows(rows)
        now = rows_by_key(rows)  # a replaced row that is the same run read back is not news
        cut = [r for r in rows if not complete(r)]
        rows = [r for r in rows if complete(r)]
        text = table(rows) + "\n\n" + goal_table(rows)
        if args.merge_fitted:
            kept, out_ = fitted_rows(rows, args.merge_fitted)
            text += (
                f"\n\nThe same, on the draws where both runs fit their own shapes at PCK@0.10 >= {args.merge_fitted}"
                " (left out: "
                + (
                    ", ".join(f"{r.get('category', '')} {r['method']} k={r['k']} draw {r['draw']}" for r in out_)
                    or "none"
                )
                + "):\n\n"
                + goal_table(kept)
            )
        if rungs_table(rows):
            text += "\n\nSteps by the own-shape fit (steps (own PCK@0.05), chosen in bold):\n\n" + rungs_table(rows)
        changed = [
            r for r in replaced if (r.get("steps"), r["pck"]) != (now[key_of(r)].get("steps"), now[key_of(r)]["pck"])
        ]
        if changed:
            text += "\n\nReplaced by a later file's row of the same category, method, k and draw: " + ", ".join(
                f"{r.get('category', '')} {r['method']} k={r['k']} draw {r['draw']} ({r.get('steps')} steps)"
                for r in changed
            )
        if cut:
            text += "\n\nLeft out (training stopped by its time limit before its planned epochs): " + ", ".join(
                f"{r.get('category', '')} {r['method']} k={r['k']} draw {r['draw']} ({r['epochs']} epochs)" for r in cut
            )
        (out / "table.md").write_text(text + "\n")
        print(text)
        return
    results = out / "results.jsonl"
    rows = read_rows(results)
    done = {(r["method"], r["k"], r["draw"]) for r in rows}
    test = KeypointNetDataset(args.data, args.category, "test")
    prior = [{**r, "rung_source": f} for f in args.rungs or [] for r in read_rows(Path(f))] + read_rows(
        out / "rungs.jsonl"
    )
    for draw in args.draw_list or range(args.draws):
        for k in args.shots:
            for method in args.methods:
                if (method, k, draw) in done:
                    continue
                if ruled(args, method, k):
                    try:
                        row = own_fit_row(args, method, k, draw, out, test, prior)
                    except MissingRung as missing:  # --rungs-only
                        print(f"skipped {args.category} {method} k={k} draw {draw}: {missing}", flush=True)
                        continue
                else:
                    row = measure(args, method, k, draw, out / f"{method}-k{k}-d{draw}", test)
                rows.append(row)
                append_row(results, row)
                print(json.dumps(row), flush=True)
    text = table(rows)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
