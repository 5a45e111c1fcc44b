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

Choosing a recipe without the test cars (``--split cv,test``): ``cv`` is five folds of the training
cars, fold k training on eight of cars 1-10 and scoring the two it held out (2k+1, 2k+2), so every
training crop is scored once by a network that never saw its car. ``summary.json``'s ``chosen_by_cv``
applies the rule fixed before the sweep ran (:func:`choose`): the highest pooled cross-validated
Acc@30 with mirror averaging; the test split's runs of that recipe are then the reported number.
Jobs run in priority order (every fold of every variant for the first ``--val-seeds`` seed first,
then the test runs seed by seed), so a sweep cut off by ``--budget`` loses the least.

    python benchmarks/epfl_sweep.py --cache crops96.npz --variants candidates --split cv,test \
        --val-seeds 0 --seeds 0,1,2 --device cuda --workers 4 --budget 370 --out sweep

``--cache`` keeps the blanked crops (uint8, ``np.savez_compressed``) so the EPFL folder need not
travel to another machine; it is built from ``--data`` when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

BASE = dict(
    size=64, crop_size=96, epochs=16, batch_size=64, lr=2e-3, lr_schedule="cosine", weight_decay=5e-4,
    swap=0.5, grey=0.2, erase=0.3, blank_outside_box=False, mix=0.0,  # the crops are blanked in the cache
)  # fmt: skip
#: stronger augmentation: crop jitter, heavier erasing, label smoothing (one bundle, against memorisation)
STRONG = {"zoom_jitter": 0.25, "shift_jitter": 0.12, "erase": 0.6, "label_smoothing": 0.1}
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
    # seventh session (the GPU sweep, chosen by cross-validation on the training cars): all at 96 px
    "mid96": {"size": 96, "widths": [16, 32, 64, 128]},
    "wide96": {"size": 96, "widths": [32, 64, 128, 256]},
    "small96_long40": {"size": 96, "widths": [8, 16, 32, 64], "epochs": 40},
    "mid96_long40": {"size": 96, "widths": [16, 32, 64, 128], "epochs": 40},
    "small96_jitter": {"size": 96, "widths": [8, 16, 32, 64], "zoom_jitter": 0.25, "shift_jitter": 0.12},
    "small96_smooth10": {"size": 96, "widths": [8, 16, 32, 64], "label_smoothing": 0.1},
    "small96_erase60": {"size": 96, "widths": [8, 16, 32, 64], "erase": 0.6},
    "small96_grey50": {"size": 96, "widths": [8, 16, 32, 64], "grey": 0.5},
    "small96_reg": {"size": 96, "widths": [8, 16, 32, 64], "dropout": 0.5, "weight_decay": 5e-3},
    "small96_cutmix100": {"size": 96, "widths": [8, 16, 32, 64], "mix": 1.0},
    "small96_half": {"size": 96, "widths": [8, 16, 32, 64], "half_weight": 1.0},
    "small96_strong40": {"size": 96, "widths": [8, 16, 32, 64], "epochs": 40, **STRONG},
    "mid96_strong40": {"size": 96, "widths": [16, 32, 64, 128], "epochs": 40, **STRONG},
    "wide96_strong40": {"size": 96, "widths": [32, 64, 128, 256], "epochs": 40, **STRONG},
}
#: the seventh session's candidates, in the order the GPU runs them (cheapest first); the half head and
#: same-view mixing are left out: measured at 64 px with no gain (docs/benchmarks.md)
CANDIDATES = (
    "small96,mid96,wide96,small96_jitter,small96_smooth10,small96_erase60,small96_grey50,small96_reg,"
    "small96_long40,mid96_long40,small96_strong40,mid96_strong40,wide96_strong40"
)
#: cross-validation folds on the training cars 1-10: fold k holds out cars 2k+1 and 2k+2
FOLDS = {f"fold{k}": (2 * k + 1, 2 * k + 2) for k in range(5)}
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
    held = FOLDS.get(split, (9, 10))  # "val": train on cars 1-8, score on 9-10; "foldK": hold out two cars
    if split != "val" and split not in FOLDS:
        raise SystemExit(f"unknown split {split!r}: test, val or one of {list(FOLDS)}")
    out = np.isin(instance_ids([str(n) for n in z["train_names"]]), held)
    return views("train", ~out & every), views("train", out & every)


def _init(cache: str, threads: int, limit: int) -> None:
    torch.set_num_threads(threads)
    _SETS["cache"], _SETS["limit"] = cache, limit


def _sets(split: str):
    """The (train, scored) sets of one split, loaded once per worker process."""
    if split not in _SETS:
        _SETS[split] = load_cache(_SETS["cache"], split, _SETS["limit"])
    return _SETS[split]


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
    train, test = _sets(job["split"])

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
        "truth": gt.round(2).tolist(),
        "train_seconds": round(seconds, 1), "final_train_loss": run.history[-1]["train_loss"],
        "train": score(train_single, train.azimuth.numpy()),
        **{mode: score(p, gt) for mode, p in probs.items()},
        "probs": {mode: p.numpy() for mode, p in probs.items()},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/images/epfl_cars")
    ap.add_argument("--cache", default=".epfl/crops96.npz")
    ap.add_argument(
        "--variants", default="base", help=f"comma-separated ('candidates': {CANDIDATES}), of: {', '.join(VARIANTS)}"
    )
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the test split's runs")
    ap.add_argument(
        "--split", default="test",
        help="comma-separated: test (train 1-10, score 11-20), val (train 1-8, score 9-10), "
        "cv (= fold0,...,fold4: five folds, each holding out two training cars), foldK",
    )  # fmt: skip
    ap.add_argument("--val-seeds", default=None, help="seeds of the val / fold runs (default: --seeds)")
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
    variants = (CANDIDATES if args.variants == "candidates" else args.variants).split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    val_seeds = [int(s) for s in (args.val_seeds or args.seeds).split(",")]
    splits = [f for sp in args.split.split(",") for f in (FOLDS if sp == "cv" else [sp])]
    deadline = time.time() + args.budget if args.budget else float("inf")
    common = {"device": args.device, "cache": args.cache, "epochs": args.epochs, "multi": args.multi}
    # priority order (a run cut off by the budget loses the least): every validation split of every
    # variant for the first seed, fold-major, then more seeds the same way; the test runs only after
    # all of them, the recipe chosen by cross-validation first (seed by seed), then the others by rank
    val_jobs = [
        {"variant": v, "seed": s, "split": sp, "deadline": deadline, **common}
        for s in val_seeds
        for sp in splits
        if sp != "test"
        for v in variants
    ]  # fmt: skip
    results: list[dict] = []
    t0 = time.time()
    log = (out / "sweep.jsonl").open("a")
    ctx = get_context("spawn")
    ex = ProcessPoolExecutor(args.workers, ctx, initializer=_init, initargs=(args.cache, args.threads, args.limit))
    pending = {ex.submit(train_one, job) for job in val_jobs}
    submitted, test_submitted = len(val_jobs), "test" not in splits
    while pending or not test_submitted:
        if not pending:  # the validation runs are done (or cut off): queue the test runs by their rank
            chosen = choose(results)
            order = [v for _, v, _ in chosen["ranking"]] if chosen else []
            order += [v for v in variants if v not in order]
            jobs = [
                {"variant": v, "seed": s, "split": "test", "deadline": deadline, **common} for v in order for s in seeds
            ]
            pending = {ex.submit(train_one, job) for job in jobs}
            submitted, test_submitted = submitted + len(jobs), True
            continue
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            r = fut.result()
            if r is not None:
                results.append(r)
                record(r, out, log, t0)
                write_summary(results, out / "summary.json", args)
    ex.shutdown(wait=True, cancel_futures=True)
    print(f"{len(results)} of {submitted} runs in {time.time() - t0:.0f} s", flush=True)


def record(r: dict, out: Path, log, t0: float) -> None:
    """One finished run: its line in sweep.jsonl, its probabilities, one printed line."""
    log.write(json.dumps({k: v for k, v in r.items() if k != "probs"} | {"predictions": decoded(r)}) + "\n")
    log.flush()
    tag = r["variant"] if r["split"] == "test" else f"{r['variant']}_{r['split']}"
    # for later ensembles; float16 halves the files that travel back from a device
    np.savez_compressed(
        out / f"probs_{tag}_{r['seed']}.npz", **{k: p.astype(np.float16) for k, p in r["probs"].items()}
    )
    print(
        f"{time.time() - t0:6.0f} s  {r['variant']:>18} {r['split']:>5} seed {r['seed']}  "
        f"train {r['train_seconds']:.0f} s  "
        f"acc30 single {r['single']['acc_30']:.3f} mirror {r['mirror']['acc_30']:.3f} "
        f"multi {r.get('multi', {}).get('acc_30', float('nan')):.3f}  "
        f"median {r['mirror']['median_azimuth_error']:.1f}  "
        f"train acc {r['train']['acc_30']:.3f}",
        flush=True,
    )


def decoded(r: dict) -> dict:
    """Azimuth and confidence of each test crop, per scoring mode (for per-car tables and pictures)."""
    from kpengine.image.viewpoint import decode_azimuth

    out = {}
    for mode, p in r["probs"].items():
        az, conf = decode_azimuth(torch.as_tensor(np.asarray(p)))
        out[mode] = {"azimuth": az.numpy().round(2).tolist(), "confidence": conf.numpy().round(4).tolist()}
    return out


def write_summary(results: list[dict], path: Path, args) -> None:
    """Per variant and split ("test", "val", or "cv": the folds pooled, each crop of cars 1-10 scored once by
    the network that did not see its car), each seed and the seeds' ensemble (mean probabilities)."""
    summary: dict = {"split": args.split, "device": args.device, "host_cpus": os.cpu_count(), "variants": {}}
    if torch.cuda.is_available():
        summary["gpu"] = torch.cuda.get_device_name(0)
    for v in dict.fromkeys(r["variant"] for r in results):
        summary["variants"][v] = {}
        for group in ("test", "val", "cv"):
            rs = [r for r in results if r["variant"] == v and (r["split"] in FOLDS) == (group == "cv")]
            rs = [r for r in rs if group == "cv" or r["split"] == group]
            if rs:
                summary["variants"][v][group] = group_summary(rs)
    summary["chosen_by_cv"] = choose(results)
    path.write_text(json.dumps(summary, indent=1))


def choose(results: list[dict]) -> dict | None:
    """The recipe rule fixed before the sweep ran: the highest cross-validated Acc@30 of a variant's
    networks with mirror averaging (folds pooled per seed, mean over seeds); the test cars play no
    part. Only the folds that every variant finished for the first seed count (a sweep cut short by
    its budget compares like with like). Returns {"variant", "cv_acc_30", "folds", "ranking"}."""
    cv = [r for r in results if r["split"] in FOLDS]
    if not cv:
        return None
    s0 = min(r["seed"] for r in cv)
    variants = list(dict.fromkeys(r["variant"] for r in cv))
    folds = sorted(
        set.intersection(*({r["split"] for r in cv if r["variant"] == v and r["seed"] == s0} for v in variants))
    )
    if not folds:
        return None
    ranking = []
    for v in variants:
        accs = []
        for s in sorted({r["seed"] for r in cv if r["variant"] == v}):
            parts = {r["split"]: r for r in cv if r["variant"] == v and r["seed"] == s and r["split"] in folds}
            if len(parts) == len(folds):
                prob = np.concatenate([parts[f]["probs"]["mirror"] for f in folds])
                gt = np.concatenate([np.asarray(parts[f]["truth"]) for f in folds])
                accs.append(score(torch.as_tensor(prob), gt)["acc_30"])
        ranking.append((round(float(np.mean(accs)), 4), v, len(accs)))
    ranking.sort(reverse=True)
    return {"variant": ranking[0][1], "cv_acc_30": ranking[0][0], "folds": folds, "ranking": ranking}


def group_summary(rs: list[dict]) -> dict:
    """Runs of one variant on one split group -> per-seed and ensemble scores; folds are pooled per seed
    (only the folds every seed finished count, so the seeds are scored on the same crops)."""
    seeds = sorted({r["seed"] for r in rs})
    folds = sorted(set.intersection(*({r["split"] for r in rs if r["seed"] == s} for s in seeds)))
    row: dict = {"seeds": seeds, "splits": folds, "train_seconds": [r["train_seconds"] for r in rs]}
    for mode in [m for m in ("single", "mirror", "multi") if m in rs[0]]:
        per_seed, gt = [], None
        for s in seeds:
            parts = sorted((r for r in rs if r["seed"] == s and r["split"] in folds), key=lambda r: r["split"])
            per_seed.append(np.concatenate([r["probs"][mode] for r in parts]))
            gt = np.concatenate([np.asarray(r["truth"]) for r in parts])
        each = [score(torch.as_tensor(p), gt) for p in per_seed]
        row[mode] = {
            "acc_30_each": [m["acc_30"] for m in each],
            "acc_30_mean": round(float(np.mean([m["acc_30"] for m in each])), 4),
            "median_each": [m["median_azimuth_error"] for m in each], "flips_each": [m["flips_150"] for m in each],
            "n": len(gt),
        }  # fmt: skip
        if len(seeds) > 1:
            row[mode]["ensemble"] = score(torch.as_tensor(np.mean(per_seed, 0)), gt)
    row["train_acc_30_each"] = [r["train"]["acc_30"] for r in rs]
    return row


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
    probs = [np.load(f)[args.mode].astype(np.float32) for f in files]
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
