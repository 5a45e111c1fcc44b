"""EPFL cars: training recipes against instance memorisation, several seeds each, side by side in one run.

    python benchmarks/epfl_sweep.py --data ../shared/data/images/epfl_cars --cache .epfl/crops96.npz \\
        --variants base,cutmix50,smooth10 --seeds 0,1,2 --device cuda --workers 5 --out sweep

Every variant is the blanked 64 px recipe (``BASE``) with a few settings changed (``VARIANTS``),
trained by the same loop as ``kpengine train`` (:class:`kpengine.learn.runs.Run`) on sequences 1-10
and scored on 11-20 (``--split test``), or trained on 1-8 and scored on 9-10 (``--split val``: a
check that a choice made on the test cars also holds on cars the test never saw). Each trained
network is scored three ways: one centred crop; with its mirror image; and ten crops (five
zoom/shift windows, each also mirrored), probabilities averaged. The seeds of a variant are also
scored as an ensemble (mean probabilities). Results go to ``OUT/sweep.jsonl`` one line per run as
it ends (a run cut short keeps what finished) and ``OUT/summary.json``.

``--cache`` keeps the blanked crops (uint8, ``np.savez_compressed``) so the EPFL folder need not
travel to another machine; it is built from ``--data`` when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BASE = dict(
    size=64, crop_size=96, epochs=16, batch_size=64, lr=2e-3, lr_schedule="cosine", weight_decay=5e-4,
    swap=0.5, grey=0.2, erase=0.3, blank_outside_box=False, mix=0.0,  # the crops are blanked in the cache
)  # fmt: skip
VARIANTS: dict[str, dict] = {
    "base": {},
    "long40": {"epochs": 40},
    "cutmix50": {"mix": 0.5},
    "cutmix100": {"mix": 1.0},
    "cutmix100_big": {"mix": 1.0, "mix_fraction": 0.7},
    "blend50": {"mix": 0.5, "mix_mode": "blend"},
    "smooth10": {"label_smoothing": 0.1},
    "small": {"widths": [8, 16, 32, 64]},
    "tiny": {"widths": [8, 16, 16, 32]},
    "small_half": {"widths": [8, 16, 32, 64], "half_weight": 1.0},
    "small96": {"widths": [8, 16, 32, 64], "size": 96},
    "reg": {"dropout": 0.5, "weight_decay": 5e-3},
    "cutmix50_long40": {"mix": 0.5, "epochs": 40},
    "cutmix100_long40": {"mix": 1.0, "epochs": 40},
    "cutmix100_smooth": {"mix": 1.0, "label_smoothing": 0.1},
    "cutmix100_reg": {"mix": 1.0, "dropout": 0.5, "weight_decay": 5e-3},
    "size96": {"size": 96, "crop_size": 96},
    "erase60": {"erase": 0.6},
    "jitter": {"zoom_jitter": 0.25, "shift_jitter": 0.12},
    "short8": {"epochs": 8},
    "keepcolour": {"swap": 0.0, "grey": 0.0},
    "keepcolour_cutmix100": {"swap": 0.0, "grey": 0.0, "mix": 1.0},
    "keepcolour_smooth10": {"swap": 0.0, "grey": 0.0, "label_smoothing": 0.1},
    "cutmix100_jitter": {"mix": 1.0, "zoom_jitter": 0.25, "shift_jitter": 0.12},
}
#: test-time windows (zoom factor, x shift, y shift in crop widths); each is also mirrored
WINDOWS = ((1.0, 0.0, 0.0), (0.92, 0.0, 0.0), (1.08, 0.0, 0.0), (1.0, 0.04, 0.0), (1.0, -0.04, 0.0))

_SETS: dict = {}


def build_cache(data: str, path: Path, crop_size: int = 96) -> None:
    from kpengine.image.datasets import CROP_MARGIN
    from kpengine.image.instance_cues import blank_outside_box
    from kpengine.image.renders import view_sets
    from kpengine.io.epfl_cars import TEST_SEQUENCES, TRAIN_SEQUENCES, load_epfl_cars

    train, test = view_sets(data, None, crop_size)
    out = {}
    for name, views, seqs in (("train", train, TRAIN_SEQUENCES), ("test", test, TEST_SEQUENCES)):
        blank_outside_box(views.crops, [f.bbox for f in load_epfl_cars(data, seqs)], CROP_MARGIN)
        out[f"{name}_crops"] = views.crops.numpy()
        out[f"{name}_azimuth"] = views.azimuth.numpy()
        out[f"{name}_names"] = np.array(views.names)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)


def load_cache(path: str, split: str, limit: int = 0):
    from kpengine.image.datasets import ViewSet
    from kpengine.image.instance_cues import instance_ids

    z = np.load(path)

    def views(prefix: str, keep: np.ndarray | None = None) -> ViewSet:
        crops, az, names = z[f"{prefix}_crops"], z[f"{prefix}_azimuth"], [str(n) for n in z[f"{prefix}_names"]]
        if keep is not None:
            crops, az, names = crops[keep], az[keep], [n for n, k in zip(names, keep) if k]
        az_t = torch.from_numpy(az.astype(np.float32))
        return ViewSet(torch.from_numpy(np.ascontiguousarray(crops)), az_t, torch.full_like(az_t, float("nan")), names)

    every = np.arange(len(z["train_azimuth"])) % max(1, limit) == 0 if limit else np.ones(len(z["train_azimuth"]), bool)
    if split == "test":
        return views("train", every), views("test", np.arange(len(z["test_azimuth"])) % max(1, limit) == 0)
    seq = instance_ids([str(n) for n in z["train_names"]])
    return views("train", (seq <= 8) & every), views("train", (seq >= 9) & every)


def _init(cache: str, split: str, threads: int, limit: int) -> None:
    torch.set_num_threads(threads)
    _SETS["sets"] = load_cache(cache, split, limit)


@torch.no_grad()
def azimuth_probs(model, crops: torch.Tensor, size: int, device: str, window=(1.0, 0.0, 0.0), mirror=False):
    """(N, 24) azimuth probabilities of crops seen through one window, mirrored back where ``mirror``."""
    from kpengine.image.crops import normalise, resample
    from kpengine.image.datasets import CROP_MARGIN, VIEW_MARGIN
    from kpengine.image.viewpoint import with_half

    out = []
    for i in range(0, len(crops), 512):
        c = crops[i : i + 512]
        n = len(c)
        shift = torch.tensor([window[1], window[2]]).expand(n, 2)
        flip = torch.full((n,), mirror, dtype=torch.bool)
        x = normalise(resample(c, size, VIEW_MARGIN / CROP_MARGIN * window[0], shift, flip))
        logits = model(x.to(device))
        p = F.softmax(logits["azimuth"].float(), -1)
        if "half" in logits:  # the front/back head weights each bin by its half (cos(-a) = cos(a): mirror-safe)
            p = with_half(p, logits["half"])
        p = p.cpu()
        out.append(p.flip(-1) if mirror else p)  # a mirror image's bin k is the view's bin 23 - k
    return torch.cat(out)


def score(prob: torch.Tensor, gt: np.ndarray) -> dict:
    from kpengine.image.viewpoint import decode_azimuth, viewpoint_metrics

    az, conf = decode_azimuth(prob)
    m = viewpoint_metrics(az.numpy(), gt)
    m.pop("n")
    return {k: round(v, 4) for k, v in m.items()}


def train_one(job: dict) -> dict:
    from kpengine.image.tasks.viewpoint import ViewpointConfig, ViewpointTask
    from kpengine.learn.runs import Run

    if time.time() > job["deadline"]:  # the sweep's budget is spent: start no more
        return None
    train, test = _SETS["sets"]

    class SweepTask(ViewpointTask):
        def load_sets(self):
            return train, test

        def validate(self, model):
            return {"val_loss": None}

    settings = {**BASE, **VARIANTS[job["variant"]]}
    if job.get("epochs"):
        settings["epochs"] = job["epochs"]
    config = ViewpointConfig(
        task="viewpoint", data=job["cache"], category="car", seed=job["seed"], device=job["device"],
        threads=torch.get_num_threads(), **settings,
    )  # fmt: skip
    t0 = time.time()
    run = Run(SweepTask(config), None, progress=False)
    run.run()
    seconds = time.time() - t0
    model, dev = run.model.eval(), job["device"]
    gt = test.azimuth.numpy()
    single = azimuth_probs(model, test.crops, config.size, dev)
    mirrored = 0.5 * (single + azimuth_probs(model, test.crops, config.size, dev, mirror=True))
    probs = {"single": single, "mirror": mirrored}
    if job["multi"]:
        windows = [azimuth_probs(model, test.crops, config.size, dev, w, m) for w in WINDOWS for m in (False, True)]
        probs["multi"] = torch.stack(windows).mean(0)
    train_single = azimuth_probs(model, train.crops, config.size, dev)
    return {
        "variant": job["variant"], "seed": job["seed"], "split": job["split"], "settings": settings,
        "train_seconds": round(seconds, 1), "final_train_loss": run.history[-1]["train_loss"],
        "train": score(train_single, train.azimuth.numpy()),
        **{mode: score(p, gt) for mode, p in probs.items()},
        "probs": {mode: p.numpy() for mode, p in probs.items()},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/images/epfl_cars")
    ap.add_argument("--cache", default=".epfl/crops96.npz")
    ap.add_argument("--variants", default="base", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--epochs", type=int, default=None, help="override every variant's epochs (smoke tests)")
    ap.add_argument("--multi", action="store_true", help="also score ten test-time windows (10 more passes)")
    ap.add_argument("--budget", type=float, default=0, help="start no new run after this many seconds (0: none)")
    ap.add_argument("--limit", type=int, default=0, help="keep every LIMIT-th crop only (smoke tests)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not Path(args.cache).is_file():
        build_cache(args.data, Path(args.cache))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [
        {
            "variant": v,
            "seed": s,
            "split": args.split,
            "device": args.device,
            "cache": args.cache,
            "epochs": args.epochs,
            "multi": args.multi,
            "deadline": time.time() + args.budget if args.budget else float("inf"),
        }
        for s in seeds
        for v in variants
    ]
    _, test = load_cache(args.cache, args.split, args.limit)
    gt = test.azimuth.numpy()
    results: list[dict] = []
    t0 = time.time()
    log = (out / "sweep.jsonl").open("a")
    ctx = get_context("spawn")
    ex = ProcessPoolExecutor(
        args.workers, ctx, initializer=_init, initargs=(args.cache, args.split, args.threads, args.limit)
    )
    futures = [ex.submit(train_one, job) for job in jobs]
    for fut in as_completed(futures):
        r = fut.result()
        if r is None:
            continue
        results.append(r)
        log.write(json.dumps({k: v for k, v in r.items() if k != "probs"} | {"predictions": decoded(r)}) + "\n")
        log.flush()
        np.savez_compressed(out / f"probs_{r['variant']}_{r['seed']}.npz", **r["probs"])  # for later ensembles
        print(
            f"{time.time() - t0:6.0f} s  {r['variant']:>18} seed {r['seed']}  train {r['train_seconds']:.0f} s  "
            f"acc30 single {r['single']['acc_30']:.3f} mirror {r['mirror']['acc_30']:.3f} "
            f"multi {r.get('multi', {}).get('acc_30', float('nan')):.3f}  "
            f"median {r['mirror']['median_azimuth_error']:.1f}  "
            f"train acc {r['train']['acc_30']:.3f}",
            flush=True,
        )
        write_summary(results, gt, out / "summary.json", args, test.names)
    ex.shutdown(wait=True, cancel_futures=True)
    print(f"{len(results)} of {len(jobs)} runs in {time.time() - t0:.0f} s", flush=True)


def decoded(r: dict) -> dict:
    """Azimuth and confidence of each test crop, per scoring mode (for per-car tables and pictures)."""
    from kpengine.image.viewpoint import decode_azimuth

    out = {}
    for mode, p in r["probs"].items():
        az, conf = decode_azimuth(torch.as_tensor(np.asarray(p)))
        out[mode] = {"azimuth": az.numpy().round(2).tolist(), "confidence": conf.numpy().round(4).tolist()}
    return out


def write_summary(results: list[dict], gt: np.ndarray, path: Path, args, names: list[str]) -> None:
    summary: dict = {"split": args.split, "device": args.device, "host_cpus": os.cpu_count(), "names": names}
    summary["variants"] = {}
    if torch.cuda.is_available():
        summary["gpu"] = torch.cuda.get_device_name(0)
    for v in dict.fromkeys(r["variant"] for r in results):
        rs = [r for r in results if r["variant"] == v]
        row: dict = {"seeds": [r["seed"] for r in rs], "train_seconds": [r["train_seconds"] for r in rs]}
        for mode in [m for m in ("single", "mirror", "multi") if m in rs[0]]:
            accs = [r[mode]["acc_30"] for r in rs]
            row[mode] = {
                "acc_30_each": accs, "acc_30_mean": round(float(np.mean(accs)), 4),
                "median_each": [r[mode]["median_azimuth_error"] for r in rs],
                "flips_each": [r[mode]["flips_150"] for r in rs],
            }  # fmt: skip
            if len(rs) > 1:
                mean = {"probs": {mode: np.mean([r["probs"][mode] for r in rs], 0)}}
                row[mode]["ensemble"] = score(torch.as_tensor(mean["probs"][mode]), gt)
                row[mode]["ensemble_predictions"] = decoded(mean)[mode]
        row["train_acc_30_each"] = [r["train"]["acc_30"] for r in rs]
        summary["variants"][v] = row
    path.write_text(json.dumps(summary, indent=1))


def report() -> None:
    """``--report OUT [OUT ...] --variant V[,V...] [--mode mirror] [--png P]``: the variants' runs, gathered from
    the ``probs_V_SEED.npz`` of the given sweep folders, scored alone and as their ensemble (mean
    probabilities), with per-car and per-view tables of the ensemble and its failure picture."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from see_epfl_cars import by_true_azimuth, failures_png

    from kpengine.image.viewpoint import angle_difference, decode_azimuth, viewpoint_metrics

    ap = argparse.ArgumentParser()
    ap.add_argument("--report", nargs="+", required=True)
    ap.add_argument("--variant", required=True)
    ap.add_argument("--mode", default="mirror")
    ap.add_argument("--cache", default=".epfl/crops96.npz")
    ap.add_argument("--png", default=None)
    args, _ = ap.parse_known_args()
    variants = args.variant.split(",")  # several: one ensemble over all their seeds
    files = sorted(f for d in args.report for v in variants for f in Path(d).glob(f"probs_{v}_[0-9]*.npz"))
    if not files:
        raise SystemExit(f"no probs_{args.variant}_*.npz in {args.report}")
    _, test = load_cache(args.cache, "test")
    gt = test.azimuth.numpy()
    probs = [np.load(f)[args.mode] for f in files]
    out: dict = {"runs": {f.name: score(torch.as_tensor(p), gt) for f, p in zip(files, probs)}}
    az, conf = (t.numpy() for t in decode_azimuth(torch.as_tensor(np.mean(probs, 0))))
    seqs = np.array([int(n.split("_")[2]) for n in test.names])
    out["ensemble"] = viewpoint_metrics(az, gt)
    out["ensemble_per_sequence_acc_30"] = {
        int(q): round(viewpoint_metrics(az[seqs == q], gt[seqs == q])["acc_30"], 3) for q in np.unique(seqs)
    }
    out["ensemble_by_true_azimuth"] = by_true_azimuth(az, gt)
    err = angle_difference(az, gt)
    out["ensemble_median_confidence_right_wrong"] = [
        float(np.median(conf[err < 30])),
        float(np.median(conf[err >= 30])),
    ]
    print(json.dumps(out, indent=1))
    if args.png:
        failures_png(test, {"azimuth": az, "confidence": conf}, gt, Path(args.png))


if __name__ == "__main__":
    import sys

    report() if "--report" in sys.argv else main()
