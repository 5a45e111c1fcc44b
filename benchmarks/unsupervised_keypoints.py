"""Unsupervised keypoints against KeypointNet's human keypoints, side by side in one run.

For one category's split: trained unsupervised runs (``--run NAME=DIR``, repeatable: Skeleton
Merger, symmetric keypoints, ...), farthest-point sampling,
random points and ISS, each giving K ordered keypoints per shape, and optionally a supervised
saliency run (``--saliency-run``) as the upper reference (its keypoints are unordered, so it gets
mIoU only). Reports DAS (forward, backward, mean), keypoint consistency and mIoU at 0.05 and
0.10 (kpengine.metrics.unsupervised), seconds per shape, and draws the keypoints of a few
shapes coloured by keypoint index (the same colour on every shape = the same keypoint k).

    PYTHONPATH=src .venv/bin/python benchmarks/unsupervised_keypoints.py \\
        --data ../shared/data/keypointnet --category bed --run skeleton-merger=runs/bed-sm \\
        --run symmetric=runs/bed-sym --saliency-run runs/bed-sal --out runs/bench-unsup-bed
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kpengine.data import KeypointNetDataset  # noqa: E402
from kpengine.geometry.detectors import farthest_point_keypoints, iss_keypoints, random_keypoints  # noqa: E402
from kpengine.learn.inference import load_run  # noqa: E402
from kpengine.learn.registry import TASKS  # noqa: E402
from kpengine.metrics.evaluate import saliency_ground_truth_distances  # noqa: E402
from kpengine.metrics.unsupervised import evaluate_unsupervised  # noqa: E402
from kpengine.viz.figures import save_figure, to_plot_frame  # noqa: E402
from kpengine.viz.palette import semantic_rgba  # noqa: E402


def timed(fn, shapes) -> tuple[dict, float]:
    t0 = time.perf_counter()
    preds = fn(shapes)
    return preds, (time.perf_counter() - t0) / max(len(shapes), 1)


def as_arrays(preds: dict) -> dict:
    return {
        m: (np.array([int(i) for i, _ in v], np.int64), np.array([float(s) for _, s in v])) for m, v in preds.items()
    }


def predictions_json(preds: dict) -> dict:
    return {m: [[int(i), float(s)] for i, s in v] for m, v in preds.items()}


def detector(fn, k: int):
    def run(shapes):  # scores descend with the index, so mAP's ranking keeps the keypoint order
        return {s.model_id: [[int(i), 1.0 - j / k] for j, i in enumerate(fn(s.points, k))] for s in shapes}

    return run


def figure(path: Path, shapes, methods: dict, k: int) -> None:
    rows, cols = len(shapes), len(methods) + 1
    fig = plt.figure(figsize=(3.0 * cols, 3.0 * rows))
    for r, shape in enumerate(shapes):
        pts = to_plot_frame(shape.points)
        lo, hi = pts.min(0), pts.max(0)
        centre, half = (lo + hi) / 2, (hi - lo).max() / 2
        panels = [("human", shape.keypoints, semantic_rgba(shape.semantic_ids))]
        for name, preds in methods.items():
            idx = preds[shape.model_id][0]
            colours = semantic_rgba(np.arange(len(idx))) if len(idx) == k else "black"
            panels.append((name, shape.points[idx], colours))
        for c, (name, kp, colours) in enumerate(panels):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1, projection="3d")
            ax.scatter(*pts.T, s=1.0, c="0.45", alpha=0.45)
            ax.scatter(*to_plot_frame(kp).T, s=40, c=colours, edgecolors="black", linewidths=0.5, depthshade=False)
            for axis, m in zip("xyz", centre):
                getattr(ax, f"set_{axis}lim")(m - half, m + half)
            ax.set_box_aspect((1, 1, 1), zoom=1.25)
            ax.view_init(elev=25, azim=-60)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(name, fontsize=10)
    fig.suptitle("human keypoints coloured by semantic id; the others by keypoint index k", fontsize=10)
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="an unsupervised run (kpengine train --task unsupervised-keypoints), shown as NAME; repeatable",
    )
    ap.add_argument("--saliency-run", help="a supervised saliency run: the upper reference (mIoU only)")
    ap.add_argument("--keypoints", type=int, default=10, help="K for the baselines (the run's own K wins)")
    ap.add_argument("--figure-shapes", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = KeypointNetDataset(args.data, args.category, args.split)
    shapes = list(dataset)
    k = args.keypoints
    methods: dict[str, tuple[dict, float]] = {}
    for item in args.run:
        name, run = item.split("=", 1) if "=" in item else ("skeleton-merger", item)
        model, state = load_run(run)
        k = state["config"]["n_keypoints"]
        predictor = TASKS.get(state["config"]["task"]).predictor(run, model, state, args.data)
        methods[name] = timed(predictor.predict, shapes)
    methods["fps"] = timed(detector(farthest_point_keypoints, k), shapes)
    methods["random"] = timed(detector(random_keypoints, k), shapes)
    methods["iss"] = timed(detector(iss_keypoints, k), shapes)
    if args.saliency_run:
        model, state = load_run(args.saliency_run, task="saliency")
        predictor = TASKS.get("saliency").predictor(args.saliency_run, model, state, args.data)
        methods["saliency (supervised)"] = timed(predictor.predict, shapes)
    for name, (preds, _) in methods.items():  # saliency format: the crowd benchmark's suggestions
        (out / f"{name.split()[0]}.predictions.json").write_text(json.dumps(predictions_json(preds)))
    truth = saliency_ground_truth_distances(dataset)
    rows = []
    for name, (preds, secs) in methods.items():
        res = evaluate_unsupervised(dataset, as_arrays(preds), gt_distances=truth)
        ordered = not name.startswith("saliency")
        rows.append(
            {
                "method": name,
                "k": float(np.mean([len(v) for v in preds.values()])),
                "das": res["das"] if ordered else None,
                "das_forward": res["das_forward"] if ordered else None,
                "das_backward": res["das_backward"] if ordered else None,
                "consistency": res["consistency"] if ordered else None,
                "miou_0.05": res["miou"][0.05],
                "miou_0.10": res["miou"][0.1],
                "seconds_per_shape": secs,
                "modal_ids": res["modal_ids"] if ordered else None,
                "per_keypoint": res["per_keypoint"] if ordered else None,
            }
        )
    meta = {
        "category": args.category,
        "split": args.split,
        "shapes": len(shapes),
        "k": k,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "loadavg_1m": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "runs": args.run,
        "saliency_run": args.saliency_run,
    }
    (out / "unsupervised.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))

    def distinct(r) -> str:  # how many human ids the K keypoints' modal ids cover (collapse lowers it)
        return "–" if r["modal_ids"] is None else f"{len(set(r['modal_ids']))} / {k}"

    def f(v):
        return "–" if v is None else f"{100 * v:.1f}"

    lines = [
        f"{args.category}/{args.split}, {len(shapes)} shapes, K = {k}",
        "",
        "| method | DAS | fwd | bwd | consistency | distinct ids | mIoU@0.05 | mIoU@0.10 | s/shape |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {f(r['das'])} | {f(r['das_forward'])} | {f(r['das_backward'])} | "
            f"{f(r['consistency'])} | {distinct(r)} | {f(r['miou_0.05'])} | {f(r['miou_0.10'])} | "
            f"{r['seconds_per_shape']:.3f} |"
        )
    lines += ["", "Per-keypoint consistency (% of shapes on the modal semantic id; the id in brackets):", ""]
    for r in rows:
        if r["per_keypoint"] is not None:
            cells = " ".join(f"{100 * c:.0f}[{m}]" for c, m in zip(r["per_keypoint"], r["modal_ids"]))
            lines.append(f"- {r['method']}: {cells}")
    (out / "unsupervised.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ordered = {n: as_arrays(p) for n, (p, _) in methods.items() if not n.startswith(("saliency", "random"))}
    figure(out / "keypoints.png", shapes[: args.figure_shapes], ordered, k)


if __name__ == "__main__":
    main()
