"""train -> predict -> evaluate over categories x backbones x tasks, with a Markdown and JSON table."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kpengine.categories import resolve_category
from kpengine.data.dataset import KeypointNetDataset
from kpengine.io.atomic import write_json, write_text
from kpengine.learn.config import TrainConfig
from kpengine.learn.decision import tune_saliency_decision
from kpengine.learn.predict import predict_split
from kpengine.learn.train import train
from kpengine.metrics.evaluate import evaluate_correspondence, evaluate_saliency, load_saliency_predictions

SHOWN = (0.01, 0.05, 0.10)


def evaluate_run(run: str | Path, data: str | Path, category: str, split: str = "test") -> dict[str, Any]:
    """Predict and score one run: PCK plain and symmetry-best; or saliency mIoU/mAP with the
    official decision (> 0.1, no suppression) and with kpengine's NMS decision chosen on the
    validation split (``miou_nms``, ``map_nms``, ``decision``)."""
    t0 = time.perf_counter()
    task, preds = predict_split(run, data, category, split, saliency_mode="official")
    t_pred = time.perf_counter() - t0
    ds = KeypointNetDataset(data, category, split)
    t1 = time.perf_counter()
    if task == "saliency":
        path = Path(run) / f"pred-{split}.json"
        write_json(path, preds)
        parsed, _ = load_saliency_predictions(path, ds)
        res = evaluate_saliency(ds, parsed)
        metrics = {"miou": res.metrics["miou"], "map": res.metrics["map"]}
        tuned = tune_saliency_decision(run, data, category, "val")
        _, nms_preds = predict_split(run, data, category, split)  # uses the decision just stored
        write_json(Path(run) / f"pred-{split}-nms.json", nms_preds)
        parsed, _ = load_saliency_predictions(Path(run) / f"pred-{split}-nms.json", ds)
        res_nms = evaluate_saliency(ds, parsed)
        metrics |= {
            "miou_nms": res_nms.metrics["miou"],
            "map_nms": res_nms.metrics["map"],
            "decision": {"threshold": tuned["threshold"], "nms_radius": tuned["nms_radius"]},
        }
    else:
        write_json(Path(run) / f"pred-{split}.json", preds)
        cp = {m: {int(k): v for k, v in d.items()} for m, d in preds.items()}
        metrics = {
            "pck": evaluate_correspondence(ds, cp).metrics["pck"],
            "pck_best": evaluate_correspondence(ds, cp, symmetry="best").metrics["pck"],
        }
    thresholds = (
        [round(t, 2) for t in res.thresholds] if task == "saliency" else [round(0.01 * i, 2) for i in range(11)]
    )
    return {
        "task": task,
        "thresholds": thresholds,
        **metrics,
        "predict_seconds": t_pred,
        "evaluate_seconds": time.perf_counter() - t1,
        "shapes_per_second": len(ds) / t_pred if t_pred > 0 else None,
        "n_shapes": len(ds),
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def at(row: dict[str, Any], key: str) -> str:
        if key not in row:
            return "–"
        return " / ".join(f"{row[key][row['thresholds'].index(t)]:.3f}" for t in SHOWN)

    lines = [
        "| category | backbone | task | epochs | PCK @.01/.05/.10 | PCK sym-best | mIoU | mAP "
        "| mIoU (NMS) | mAP (NMS) | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['category']} | {r['backbone']} | {r['train_task']} | {r['epochs']} | {at(r, 'pck')} | "
            f"{at(r, 'pck_best')} | {at(r, 'miou')} | {at(r, 'map')} | {at(r, 'miou_nms')} | {at(r, 'map_nms')} "
            f"| {r['seconds_per_epoch']:.1f} |"
        )
    return "\n".join(lines)


def run_benchmark(
    data: str | Path,
    categories: list[str],
    backbones: list[str],
    tasks: list[str],
    *,
    epochs: int = 50,
    out: str | Path = "runs/benchmark",
    seed: int = 0,
    backbone_kwargs: dict[str, dict[str, Any]] | None = None,
    overrides: dict[str, Any] | None = None,
) -> str:
    """Every combination, resumable (existing runs continue); writes results.json and results.md in ``out``.

    ``overrides`` sets other TrainConfig fields for every run (e.g. ``{"lr_schedule": "cosine"}``)."""
    out = Path(out)
    rows = []
    for cat in categories:
        name = resolve_category(cat).name
        for backbone in backbones:
            for task in tasks:
                run = out / f"{name}-{task}-{backbone}"
                cfg = TrainConfig(
                    task=task,
                    data=str(data),
                    category=name,
                    backbone=backbone,
                    epochs=epochs,
                    seed=seed,
                    backbone_kwargs=(backbone_kwargs or {}).get(backbone, {}),
                    **(overrides or {}),
                )
                summary = train(cfg, run, resume=True, progress=False)
                rows.append(
                    {
                        "category": name,
                        "backbone": backbone,
                        "train_task": task,
                        **summary,
                        **evaluate_run(run, data, name),
                        "loadavg": os.getloadavg(),
                    }
                )
    table = markdown_table(rows)
    write_json(out / "results.json", rows, indent=2)
    write_text(out / "results.md", table + "\n")
    return table
