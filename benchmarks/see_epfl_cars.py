"""EPFL cars viewpoint benchmark: train on sequences 1-10, test on 11-20 (the standard protocol).

    python benchmarks/see_epfl_cars.py --data ../shared/data/images/epfl_cars --run runs/epfl_vp \
        [--seed 0] [--resume] [--eval-only] [--half-weight 1] [--swa 8]

The defaults are the measured recipe (docs/benchmarks.md, "EPFL cars, fifth session"): 64 px from
96 px crops blanked outside the car box, widths 8-16-32-64, 16 epochs, channel swaps, grey and
erasing, weight decay 5e-4; ``benchmarks/epfl_sweep.py`` runs several recipes and seeds side by side
and scores their ensembles.

Writes the run (resumable) and, in --figures, ``epfl_test.json`` (metrics, per-frame
predictions) and ``epfl_failures.png`` (worst test frames: front/back flips).

``--swa K`` keeps a copy of the weights after every epoch (``RUN/snapshots/``) and also scores
the average of the last K (stochastic weight averaging, Izmailov et al. 2018; batch-norm
statistics recomputed on the training crops). K is fixed before training, never picked on the
test sequences. The test sequences are scored after every epoch only for the curve; the figures
reported are the last epoch's (or the fixed SWA window's).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from kpengine.image.datasets import ViewSet, predict_viewpoints, viewpoint_batch
from kpengine.image.tasks.viewpoint import ViewpointConfig, ViewpointTask
from kpengine.image.viewpoint import angle_difference, viewpoint_metrics
from kpengine.learn.runs import train_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--figures", default="docs/figures")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--crop-size", type=int, default=96, help="stored crop side (px)")
    ap.add_argument("--swap", type=float, default=0.5, help="probability of a colour-channel permutation")
    ap.add_argument("--grey", type=float, default=0.2, help="probability of a grey crop")
    ap.add_argument("--erase", type=float, default=0.3, help="probability of a blanked rectangle")
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--half-weight", type=float, default=0.0, help="weight of the front/back half head (0: none)")
    ap.add_argument("--swa", type=int, default=0, help="also score the average of the last K epochs' weights")
    ap.add_argument("--zoom-jitter", type=float, default=0.15)
    ap.add_argument("--shift-jitter", type=float, default=0.08)
    ap.add_argument("--widths", default="8,16,32,64", help="ResNet stage widths (8-64: docs/benchmarks.md)")
    ap.add_argument(
        "--blank-outside-box", action="store_true", help="grey every pixel outside the car's box (the default now)"
    )
    ap.add_argument("--keep-background", action="store_true", help="do not grey the pixels outside the car's box")
    ap.add_argument("--mix", type=float, default=None, help="share of crops mixed with another car at the same view")
    ap.add_argument("--mix-mode", choices=("cutmix", "blend"), default="cutmix")
    ap.add_argument("--mix-fraction", type=float, default=0.5)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--time-limit", type=float, default=None, help="stop after the epoch that passes this many seconds")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    t0 = time.time()
    config = ViewpointConfig(
        task="viewpoint", data=args.data, category="car", size=args.size, epochs=args.epochs, batch_size=64,
        lr=2e-3, lr_schedule="cosine", weight_decay=args.weight_decay, crop_size=args.crop_size,
        swap=args.swap, grey=args.grey, erase=args.erase, zoom_jitter=args.zoom_jitter,
        shift_jitter=args.shift_jitter, half_weight=args.half_weight,
        widths=[int(w) for w in args.widths.split(",")], seed=args.seed,
        blank_outside_box=False if args.keep_background else None, mix=args.mix, mix_mode=args.mix_mode,
        mix_fraction=args.mix_fraction, label_smoothing=args.label_smoothing, dropout=args.dropout,
    )  # fmt: skip
    task = SnapshotTask(config, Path(args.run)) if args.swa else ViewpointTask(config)
    train, test = task.sets()  # blanked outside the car boxes unless --keep-background (ViewpointTask)
    print(f"loaded crops in {time.time() - t0:.1f} s", flush=True)
    if not args.eval_only:
        train_run(task, args.run, resume=args.resume, time_limit_s=args.time_limit)
    state = torch.load(Path(args.run) / "last.pt", map_location="cpu", weights_only=False)
    model = ViewpointTask.load_model(state)
    gt = test.azimuth.numpy()
    history = state["history"] if isinstance(state["history"], list) else state["history"]["epochs"]
    variants = {"last": model}
    if args.swa:
        variants["swa"] = swa_model(task, Path(args.run), len(history), args.swa)
    res = {"epochs_trained": len(history), "train_seconds": float(sum(h["seconds"] for h in history))}
    res["load_1m_during_training"] = [h.get("loadavg_1m") for h in history]
    res["variants"] = {}
    for name, net in variants.items():
        for mirror in (False, True):
            for half in (False, True) if model.half_head else (False,):
                q = predict_viewpoints(net, test.crops, flip_average=mirror, use_half=half)
                key = f"{name}{' +mirror' if mirror else ''}{' +half' if half else ''}"
                res["variants"][key] = viewpoint_metrics(q["azimuth"], gt)
    chosen = variants["swa" if args.swa else "last"]  # the reported variant: fixed before looking
    p = predict_viewpoints(chosen, test.crops, flip_average=True)
    res["reported"] = f"{'swa' if args.swa else 'last'} +mirror{' +half' if chosen.half_head else ''}"
    res["test_flip_average"] = viewpoint_metrics(p["azimuth"], gt)
    err = angle_difference(p["azimuth"], gt)
    conf = p["confidence"]
    res["median_confidence_correct"] = float(np.median(conf[err < 30])) if (err < 30).any() else None
    res["median_confidence_wrong"] = float(np.median(conf[err >= 30])) if (err >= 30).any() else None
    per_seq = {}
    seqs = np.array([int(n.split("_")[2]) for n in test.names])
    for s in sorted(set(seqs.tolist())):
        m = seqs == s
        per_seq[s] = viewpoint_metrics(p["azimuth"][m], gt[m])
    res["per_sequence"] = per_seq
    res["by_true_azimuth"] = by_true_azimuth(p["azimuth"], gt)
    fig_dir = Path(args.figures)
    fig_dir.mkdir(parents=True, exist_ok=True)
    res["predictions"] = {
        n: {"azimuth_gt": float(g), "azimuth": float(a), "confidence": float(c)}
        for n, g, a, c in zip(test.names, gt, p["azimuth"], conf)
    }
    (fig_dir / "epfl_test.json").write_text(json.dumps(res, indent=1))
    shown = ("predictions", "per_sequence", "load_1m_during_training")
    print(json.dumps({k: v for k, v in res.items() if k not in shown}, indent=1))
    failures_png(test, p, gt, fig_dir / "epfl_failures.png")


def by_true_azimuth(pred: np.ndarray, gt: np.ndarray) -> dict[str, dict[str, float]]:
    """Acc@30 and flip rate per range of the true view (EPFL convention, 0 = the car faces the camera),
    and the Acc@30 an oracle that undid every > 150 deg flip would reach (how much the flips cost)."""
    err = angle_difference(pred, gt)
    epfl = np.abs(np.mod(gt - 180.0 + 180.0, 360.0) - 180.0)  # |EPFL azimuth| in [0, 180]; kpengine = EPFL + 180
    out = {}
    for lo, hi, name in (
        (0, 30, "front"),
        (30, 60, "front-side"),
        (60, 120, "side"),
        (120, 150, "rear-side"),
        (150, 181, "rear"),
    ):
        m = (epfl >= lo) & (epfl < hi)
        out[f"{name} {lo}-{min(hi, 180)}"] = {
            "n": int(m.sum()), "acc_30": float(np.mean(err[m] < 30)), "flips_150": float(np.mean(err[m] > 150))
        }  # fmt: skip
    unflipped = np.minimum(err, angle_difference(pred + 180.0, gt))
    out["acc_30_if_flips_undone"] = {"n": len(gt), "acc_30": float(np.mean(unflipped < 30)), "flips_150": 0.0}
    return out


class SnapshotTask(ViewpointTask):
    """The viewpoint task that also keeps each epoch's weights (``RUN/snapshots/NNN.pt``) for SWA."""

    def __init__(self, config: ViewpointConfig, run: Path):
        super().__init__(config)
        self.run = run

    def validate(self, model: torch.nn.Module) -> dict[str, float] | None:
        hist = self.run / "history.json"
        done = len(json.loads(hist.read_text())["epochs"]) if hist.is_file() else 0
        (self.run / "snapshots").mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), self.run / "snapshots" / f"{done + 1:03d}.pt")
        return super().validate(model)


@torch.no_grad()
def swa_model(task: ViewpointTask, run: Path, epochs: int, k: int) -> torch.nn.Module:
    """The mean of the last ``k`` epochs' weights, batch-norm statistics re-estimated on training batches."""
    net = task.model()
    states = [
        torch.load(run / "snapshots" / f"{e:03d}.pt", weights_only=True) for e in range(epochs - k + 1, epochs + 1)
    ]
    avg = {n: (sum(s[n].double() for s in states) / len(states)).to(t.dtype) for n, t in states[-1].items()}
    net.load_state_dict(avg)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
    net.train()
    train, _ = task.sets()
    c = task.config
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()
    for i in range(0, len(order), c.batch_size):
        x, _, _ = viewpoint_batch(train, order[i : i + c.batch_size], c.size, c.zoom_jitter, c.shift_jitter, c.flip)
        net(x)
    return net.eval()


def failures_png(test: ViewSet, p: dict, gt: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    err = angle_difference(p["azimuth"], gt)
    worst = np.argsort(-err)[:12]
    fig = plt.figure(figsize=(12, 7.5))
    ax = fig.add_subplot(3, 1, 1)
    ax.scatter(np.mod(gt - 180, 360), np.mod(p["azimuth"] - 180, 360), s=4, c=p["confidence"], cmap="viridis")
    ax.set_xlabel("ground-truth azimuth (EPFL convention: 0 = the car faces the camera, 90 = front to image-left)")
    ax.set_ylabel("predicted")
    ax.set_title(
        f"EPFL cars test (seq 11-20): median error {np.median(err):.1f} deg, "
        f"Acc@30 {np.mean(err < 30):.3f}, flips >150 deg {np.mean(err > 150):.3f} (colour = confidence)"
    )
    for j, i in enumerate(worst):
        a = fig.add_subplot(3, 6, 7 + j)
        a.imshow(test.crops[i].permute(1, 2, 0).numpy())
        g, q = (gt[i] - 180) % 360, (p["azimuth"][i] - 180) % 360  # shown in the EPFL convention
        a.set_title(
            f"{test.names[i][10:-4]}\ngt {g:.0f} pred {q:.0f}\nconf {p['confidence'][i]:.2f}",
            fontsize=7,
        )
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
