"""Viewpoint runs side by side on render sets: median azimuth error, Acc@30, half-turn flips (issue 11).

    python benchmarks/see_viewpoint_runs.py --category bed \
        --sets val=/work/renders/val128 newviews=/work/renders/train128_bed36s9 \
        --runs old=/work/runs_gpu/vp_bed_w new=/work/gpu_out9/vp9/vp_bed48 \
        --reference old --out vp_bed.json --figure vp_bed.png

Each run is scored on the crops of every set (true mask's box, the training crop), once from the
crop alone (what a run's ``history.json`` records during training) and once averaged with the
mirrored crop (what the pipeline does, ``image.pipeline.estimate_viewpoint``). A *flip* is an
azimuth error above 150 degrees (``viewpoint_metrics``' ``flips_150``). Against ``--reference``
each run gets a paired count on the same images: flipped by the reference only, by the run only,
and the two-sided sign-test p-value of that split (an exact binomial): with 56 validation images,
differences of a few flips are noise and this says so.

Sets may be any render set of the category: the validation split, or new views of *train* shapes
(a run that knows its training shapes by heart flips less there than on new shapes: the gap is
what "overfitting" means for the flips). ``--limit N`` takes the first N views of each set; ``--pool``
also scores all sets' images together.
The figure: per set, the flip rate of every run with its 95 % Wilson interval, and the azimuth
error's distribution (mirror-averaged).
"""

from __future__ import annotations

import argparse
import json
from math import comb, sqrt
from pathlib import Path

import numpy as np
import torch

from kpengine.image.datasets import ViewSet, predict_viewpoints
from kpengine.image.renders import load_image_set, view_set
from kpengine.image.tasks import image_task
from kpengine.image.viewpoint import angle_difference, viewpoint_metrics
from kpengine.learn.checkpoint import load_checkpoint

FLIP = 150.0


def named(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"{what} must be NAME=PATH, got {it!r}")
        k, v = it.split("=", 1)
        out[k] = v
    return out


def load_viewpoint_run(run: str, category: str) -> torch.nn.Module:
    """The network of a viewpoint run's best.pt (eval mode); refuses another task or category."""
    state = load_checkpoint(Path(run) / "best.pt", task="viewpoint", category=category)
    model = image_task("viewpoint").load_model(state)
    model.eval()
    return model


def sign_test(a_only: int, b_only: int) -> float:
    """Two-sided exact binomial p-value of a split of discordant pairs under p = 1/2."""
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * sum(comb(n, i) for i in range(k + 1)) / 2.0**n)


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--category", required=True)
    ap.add_argument("--sets", nargs="+", required=True, help="NAME=RENDER_SET ...")
    ap.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR ... (viewpoint runs with best.pt)")
    ap.add_argument("--reference", help="the run the others are compared with, image by image (default: the first)")
    ap.add_argument("--pool", action="store_true", help="also score every set's images together (set 'pooled')")
    ap.add_argument("--limit", type=int, default=None, help="first N views of each set")
    ap.add_argument("--crop-size", type=int, default=128, help="stored crop side the runs were trained on")
    ap.add_argument("--out", required=True, help="JSON of every metric and the per-image errors")
    ap.add_argument("--figure", help="PNG: flip rates with intervals and error distributions")
    a = ap.parse_args()
    torch.set_num_threads(1)
    sets, runs = named(a.sets, "--sets"), named(a.runs, "--runs")
    ref = a.reference or next(iter(runs))
    if ref not in runs:
        raise SystemExit(f"--reference {ref!r} is not among --runs ({', '.join(runs)})")
    models = {k: load_viewpoint_run(v, a.category) for k, v in runs.items()}
    result: dict = {"category": a.category, "sets": sets, "runs": runs, "reference": ref, "scores": {}}
    errors: dict = {}
    views = {k: view_set(load_image_set(v, a.category, a.limit), a.crop_size) for k, v in sets.items()}
    if a.pool and len(views) > 1:
        parts = list(views.values())
        views["pooled"] = ViewSet(
            torch.cat([v.crops for v in parts]),
            torch.cat([v.azimuth for v in parts]),
            torch.cat([v.elevation for v in parts]),
            [f"{k}/{n}" for k, v in views.items() for n in v.names],
        )
        sets = {**sets, "pooled": "+".join(sets)}
    for sname, vs in views.items():
        gt_az, gt_el = vs.azimuth.numpy(), vs.elevation.numpy()
        result["scores"][sname] = {}
        for rname, model in models.items():
            row = {}
            for mode, avg in (("crop", False), ("mirror_avg", True)):
                p = predict_viewpoints(model, vs.crops, flip_average=avg)
                met = viewpoint_metrics(p["azimuth"], gt_az, p["elevation"], gt_el)
                err = angle_difference(p["azimuth"], gt_az)
                errors[(sname, rname, mode)] = err
                lo, hi = wilson(met["flips_150"], len(err))
                row[mode] = {**met, "flips_ci95": [lo, hi], "median_confidence": float(np.median(p["confidence"]))}
            result["scores"][sname][rname] = row
        for rname in models:
            if rname == ref:
                continue
            for mode in ("crop", "mirror_avg"):
                fr, fo = errors[(sname, ref, mode)] > FLIP, errors[(sname, rname, mode)] > FLIP
                a_only, b_only = int((fr & ~fo).sum()), int((fo & ~fr).sum())
                result["scores"][sname][rname][mode]["paired_vs_reference"] = {
                    "flipped_by_reference_only": a_only,
                    "flipped_by_this_only": b_only,
                    "sign_test_p": sign_test(a_only, b_only),
                }
        result["scores"][sname]["_names"] = vs.names
    result["per_image_azimuth_error"] = {
        f"{s}/{r}/{m}": [round(float(x), 2) for x in e] for (s, r, m), e in errors.items()
    }
    Path(a.out).write_text(json.dumps(result, indent=1))
    for sname in sets:
        print(f"{sname}:")
        for rname in runs:
            for mode in ("crop", "mirror_avg"):
                m = result["scores"][sname][rname][mode]
                pv = m.get("paired_vs_reference")
                extra = (
                    f"  vs {ref}: {pv['flipped_by_reference_only']}/{pv['flipped_by_this_only']}"
                    f" p={pv['sign_test_p']:.3f}"
                    if pv
                    else ""
                )
                print(
                    f"  {rname:>12} {mode:>10}  n={int(m['n'])}  median az {m['median_azimuth_error']:6.1f}  "
                    f"Acc@30 {m['acc_30']:.3f}  flips {m['flips_150']:.3f}"
                    f" [{m['flips_ci95'][0]:.2f}, {m['flips_ci95'][1]:.2f}]"
                    f"  el {m['median_elevation_error']:.1f}{extra}"
                )
    if a.figure:
        figure(result, errors, sets, runs, a.figure)


def figure(result: dict, errors: dict, sets: dict, runs: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(sets), figsize=(4.2 * len(sets), 6.4), squeeze=False)
    bins = np.linspace(0, 180, 19)
    for j, sname in enumerate(sets):
        ax = axes[0, j]
        for i, rname in enumerate(runs):
            m = result["scores"][sname][rname]["mirror_avg"]
            lo, hi = m["flips_ci95"]
            ax.bar(i, m["flips_150"], color=f"C{i}")
            ax.plot([i, i], [lo, hi], color="k", lw=1.2)
        ax.set_xticks(range(len(runs)), list(runs), rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 0.6)
        ax.set_title(
            f"{sname} (n={int(result['scores'][sname][next(iter(runs))]['crop']['n'])}): flips > 150°", fontsize=9
        )
        ax = axes[1, j]
        for i, rname in enumerate(runs):
            ax.hist(
                errors[(sname, rname, "mirror_avg")],
                bins=bins,
                histtype="step",
                lw=1.5,
                color=f"C{i}",
                label=rname,
                density=True,
            )
        ax.set_xlabel("azimuth error (°), mirror-averaged", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['category']}: viewpoint runs side by side", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
