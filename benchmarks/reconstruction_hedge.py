"""The half-turn hedge's weights chosen on val renders by the rule pre-registered in docs/reconstruction.md
(eighth pass; issue 12).

Reads the per-view IoU grids that ``reconstruction_refined.py --hedge-grid N`` stores (one JSON per render set;
views of several sets are pooled per category) and applies the rule:

* score ``S(w, h)``: the mean over the categories of each category's mean IoU over its views;
* choice: the pair of largest ``S``; among pairs within ``--tol`` (0.001) of it, the one nearest the default
  ``(1/2, 0)`` (Euclidean in ``(w, h)``);
* "wins on val", out of sample: two folds by shape (each category's model ids sorted, alternate ones to fold A
  and B), the rule applied on one fold and scored on the other, paired view by view against the default; it
  wins iff the mean over the categories of that cross-validated gain is above 0 and the pair chosen on all
  of val is not the default.

    python benchmarks/reconstruction_hedge.py VAL.json [VAL2.json ...] --out CHOICE.json [--png S.png]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

#: today's re-placed reconstruction: the default and the cone at the refined pose, half each, no half turn
DEFAULT = (0.5, 0.0)

Pair = tuple[float, float]


def pair_key(key: str) -> Pair:
    """``"0.5000,0.0000"`` -> (0.5, 0.0)."""
    w, h = key.split(",")
    return float(w), float(h)


def scores(ious: dict[Pair, dict[str, np.ndarray]], keep: dict[str, np.ndarray] | None = None) -> dict[Pair, float]:
    """``S(w, h)``: per pair, the mean over categories of the mean IoU of the category's views (``keep``: a
    boolean mask per category selecting the views that count)."""
    return {
        p: float(np.mean([np.mean(v if keep is None else v[keep[c]]) for c, v in per_cat.items()]))
        for p, per_cat in ious.items()
    }


def choose(score: dict[Pair, float], default: Pair = DEFAULT, tol: float = 0.001) -> Pair:
    """The pair of largest score; among those within ``tol`` of it, the one nearest ``default``."""
    best = max(score.values())
    near = [p for p, s in score.items() if s >= best - tol]
    return min(near, key=lambda p: (np.hypot(p[0] - default[0], p[1] - default[1]), -score[p]))


def shape_folds(models: list[str]) -> np.ndarray:
    """(N,) bool, True for fold A: the distinct model ids sorted, every other one (the 1st, 3rd, ..) in A."""
    order = {m: k for k, m in enumerate(sorted(set(models)))}
    return np.array([order[m] % 2 == 0 for m in models])


def cross_validated_gain(
    ious: dict[Pair, dict[str, np.ndarray]], models: dict[str, list[str]], default: Pair = DEFAULT, tol: float = 0.001
) -> dict:
    """Choose on one fold of shapes, score on the other (paired against ``default``), both ways -> per category
    the mean out-of-fold gain over its views and its standard error, and the pair each fold chose."""
    fold_a = {c: shape_folds(m) for c, m in models.items()}
    out: dict = {"chosen": {}, "gain": {}, "gain_sem": {}}
    diffs = {c: np.zeros(len(m)) for c, m in models.items()}
    for name, train in (("A", True), ("B", False)):
        pick = choose(scores(ious, {c: a == train for c, a in fold_a.items()}), default, tol)
        out["chosen"][f"on {name}"] = pick
        for c, a in fold_a.items():
            held = a != train
            diffs[c][held] = ious[pick][c][held] - ious[default][c][held]
    for c, d in diffs.items():
        out["gain"][c] = float(d.mean())
        out["gain_sem"][c] = float(d.std() / np.sqrt(len(d)))
    out["gain_mean"] = float(np.mean(list(out["gain"].values())))
    return out


def gate_on_test(per_view: dict[str, dict[str, list[float]]], row: str, base: str = "refined") -> dict:
    """The pre-registered test gate: per category the paired IoU difference ``row`` - ``base`` over its views and
    its standard error; "does not lose" iff their mean over the categories is >= 0 and no category's is below
    -2 of its standard errors."""
    out: dict = {"paired": {}, "paired_sem": {}}
    for cat, pv in per_view.items():
        d = np.asarray(pv[row]) - np.asarray(pv[base])
        out["paired"][cat] = float(d.mean())
        out["paired_sem"][cat] = float(d.std() / np.sqrt(len(d)))
    out["paired_mean"] = float(np.mean(list(out["paired"].values())))
    out["does_not_lose"] = bool(
        out["paired_mean"] >= 0 and all(out["paired"][c] >= -2 * out["paired_sem"][c] for c in out["paired"])
    )
    return out


def load_grids(paths: list[str]) -> tuple[dict[Pair, dict[str, np.ndarray]], dict[str, list[str]]]:
    """The JSONs' per-view grids pooled per category -> ({pair: {category: (N,) IoU}}, {category: model ids})."""
    ious: dict[Pair, dict[str, list[float]]] = {}
    models: dict[str, list[str]] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        for cat, res in data["categories"].items():
            grid = res.get("hedge_grid")
            if not grid:
                raise SystemExit(f"{path}: {cat} has no hedge_grid (run reconstruction_refined.py with --hedge-grid)")
            models.setdefault(cat, []).extend(i.rsplit("_", 1)[0] for i in res["per_view"]["ids"])
            for key, v in grid.items():
                ious.setdefault(pair_key(key), {}).setdefault(cat, []).extend(v)
    return {p: {c: np.asarray(v) for c, v in d.items()} for p, d in ious.items()}, models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grids", nargs="*", help="reconstruction_refined.py --hedge-grid JSONs (val renders only)")
    ap.add_argument(
        "--test", metavar="T.json", help="instead: the gate on a test run of reconstruction_refined.py --hedge W,H"
    )
    ap.add_argument("--row", help="with --test: the hedge row, e.g. 'hedge(0.75,0.25)'")
    ap.add_argument("--tol", type=float, default=0.001)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png", help="S(w, h) on val as a picture")
    args = ap.parse_args()
    if args.test:
        data = json.loads(Path(args.test).read_text())
        pv = {c: r["per_view"] for c, r in data["categories"].items()}
        gate = {"test": args.test, "row": args.row, **gate_on_test(pv, args.row)}
        print(json.dumps(gate, indent=1))
        Path(args.out).write_text(json.dumps(gate, indent=2))
        return
    ious, models = load_grids(args.grids)
    if DEFAULT not in ious:
        raise SystemExit(f"the grid lacks the default pair {DEFAULT}")
    s = scores(ious)
    pick = choose(s, DEFAULT, args.tol)
    cv = cross_validated_gain(ious, models, DEFAULT, args.tol)
    per_cat = {
        c: {
            "views": len(models[c]),
            "shapes": len(set(models[c])),
            "default": round(float(ious[DEFAULT][c].mean()), 4),
            "chosen": round(float(ious[pick][c].mean()), 4),
            "paired": round(float((ious[pick][c] - ious[DEFAULT][c]).mean()), 4),
            "paired_sem": round(float((ious[pick][c] - ious[DEFAULT][c]).std() / np.sqrt(len(models[c]))), 4),
            "cv_gain": round(cv["gain"][c], 4),
            "cv_gain_sem": round(cv["gain_sem"][c], 4),
        }
        for c in ious[DEFAULT]
    }
    wins = cv["gain_mean"] > 0 and pick != DEFAULT
    out = {
        "grids": args.grids,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "chosen": pick,
        "score_chosen": round(s[pick], 4),
        "score_default": round(s[DEFAULT], 4),
        "categories": per_cat,
        "cv": {"chosen": cv["chosen"], "gain_mean": round(cv["gain_mean"], 4)},
        "wins_on_val": bool(wins),
        "top10": [(p, round(v, 4)) for p, v in sorted(s.items(), key=lambda x: -x[1])[:10]],
    }
    print(json.dumps(out, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=2))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ws, hs = sorted({p[0] for p in s}), sorted({p[1] for p in s})
        img = np.array([[s[(w, h)] - s[DEFAULT] for w in ws] for h in hs])
        fig, ax = plt.subplots(figsize=(7, 3.6))
        lim = 0.01  # the colours stop at ±0.01 so that the region near the default shows (w = 0 reaches -0.03)
        im = ax.imshow(img, origin="lower", cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto",
                       extent=(ws[0] - 0.5 / 12, ws[-1] + 0.5 / 12, hs[0] - 0.5 / 12, hs[-1] + 0.5 / 12))  # fmt: skip
        ax.plot(*DEFAULT, "ks", label="default (1/2, 0)")
        ax.plot(*pick, "k*", ms=12, label=f"chosen ({pick[0]:.3f}, {pick[1]:.3f})")
        ax.set_xlabel("w: the cone's weight")
        ax.set_ylabel("h: the half turn's share")
        ax.set_title("val: S(w, h) − S(default), mean over bathtub and bed of IoU@32³ (colours clipped at ±0.01)",
                     fontsize=9)  # fmt: skip
        ax.legend(loc="upper left", fontsize=8)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
