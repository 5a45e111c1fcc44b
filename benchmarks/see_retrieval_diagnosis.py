"""Why the image -> shape embedding loses to HoG nearest neighbour on held-out shapes: is the shape space
learnable from the pictures at all, and is the network underfit or overfit?

    python benchmarks/see_retrieval_diagnosis.py --category bed --space runs/shape_bed --runs runs/img_bed \
        --train /work/renders/train128 --test /work/renders/test128 --out bed_diagnosis.json

Measures (ranks of the query's own shape among all N shapes of the space, as see_retrieval.py):

* the space's geometry: nearest-neighbour against median pairwise distance, the points' distances from
  their centre; the rank of always predicting the centre;
* a noise oracle: the true point plus isotropic noise of a given length (a fraction of the points' root
  mean square distance from the centre), and a shrink oracle: the true point pulled towards the centre
  (a regression that has learnt part of the way): which errors cost rank?
* a linear oracle: ridge regression from the photo's HoG (the baseline's own descriptor) into the space,
  fitted on the training renders: on held-out test shapes, and on the seen-shape protocol (views 10 and
  11 of every training shape held out, fitted on views 0-9), each beside HoG nearest neighbour on the
  same queries;
* the networks (``--runs``): its rank on its own training views against the test shapes' (underfit or
  overfit?), and the spread of its outputs against the targets'.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from kpengine.image.crops import crop_square
from kpengine.image.retrieval.embedding import RankSummary, distances_to, embed, photo_input, ranks_of
from kpengine.image.retrieval.lightfield import LightFieldSpec, hog_descriptor, to_grey
from kpengine.image.retrieval.retrieve import Retriever
from kpengine.io.renderset import load_render_set
from kpengine.io.shapespace import load_shape_space


def views_of(root: str, category: str, split: str, index: dict[str, int]):
    rs = load_render_set(root).select(categories=[category], splits=[split])
    keep = [k for k, v in enumerate(rs.views) if v["model_id"] in index]
    images = rs.images(keep, masks=False)["image"]
    rows = np.array([index[rs.views[k]["model_id"]] for k in keep])
    view_no = np.array([int(rs.views[k]["id"].rsplit("_", 1)[1]) for k in keep])
    return images, rows, view_no


def photo_hogs(images: np.ndarray, spec: LightFieldSpec) -> np.ndarray:
    """The HoG baseline's descriptor of whole photos (as retrieve.hog_distances computes it)."""
    out = []
    for im in images:
        h, w = im.shape[:2]
        out.append(hog_descriptor(to_grey(crop_square(im, (0.0, 0.0, float(w), float(h)), 1.0, spec.size)), spec))
    return np.stack(out).astype(np.float64)


def summary(d: np.ndarray, rows: np.ndarray) -> dict:
    return RankSummary.of(ranks_of(d, rows)).to_json()


def ridge(x_fit: np.ndarray, y_fit: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised features -> centred targets: (feature mean, feature std, weights)."""
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    x = (x_fit - mu) / sd
    w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ (y_fit - y_fit.mean(0)))
    return mu, sd, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--category", required=True)
    ap.add_argument("--space", required=True, help="shape-embedding run (its shape_space.npz)")
    ap.add_argument("--runs", nargs="*", default=[], help="image-embedding runs to diagnose")
    ap.add_argument("--train", required=True, help="the training render set")
    ap.add_argument("--test", required=True, help="render set of test-split views")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[100.0, 1000.0, 10000.0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    space = load_shape_space(Path(args.space) / "shape_space.npz", need=("coords", "hog"))
    spec = LightFieldSpec.from_json(space.meta["spec"])
    index = space.index()
    c = np.asarray(space.coords, np.float64)
    centre = c.mean(0)
    tr_im, tr_rows, tr_view = views_of(args.train, args.category, "train", index)
    te_im, te_rows, _ = views_of(args.test, args.category, "test", index)
    f_tr, f_te = photo_hogs(tr_im, spec), photo_hogs(te_im, spec)
    flat = space.hog.reshape(-1, space.hog.shape[-1]).astype(np.float64)

    def hog_nn(f: np.ndarray) -> np.ndarray:
        d2 = (f * f).sum(1)[:, None] + (flat * flat).sum(1)[None] - 2 * f @ flat.T
        return np.sqrt(np.clip(d2, 0, None)).reshape(len(f), *space.hog.shape[:2]).min(2)

    pair = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    np.fill_diagonal(pair, np.inf)
    nn_d = pair.min(1)
    np.fill_diagonal(pair, np.nan)
    norms = np.linalg.norm(c - centre, axis=1)
    spread = float(np.sqrt((norms**2).mean()))
    rep: dict = {
        "command": "python benchmarks/" + Path(__file__).name + " " + " ".join(os.sys.argv[1:]),
        "loadavg_start": round(os.getloadavg()[0], 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "shapes": len(c),
        "train_views": len(tr_rows),
        "test_views": len(te_rows),
        "space": {
            "nearest_neighbour_distance_median": round(float(np.median(nn_d)), 3),
            "pairwise_distance_median": round(float(np.nanmedian(pair)), 3),
            "distance_from_centre_min_median_max": [round(float(v), 3) for v in np.percentile(norms, [0, 50, 100])],
            "rms_distance_from_centre": round(spread, 3),
        },
        "test_shapes": {
            "hog_nn": summary(hog_nn(f_te), te_rows),
            "centre": summary(distances_to(np.repeat(centre[None], len(te_rows), 0), c), te_rows),
        },
    }
    rng = np.random.default_rng(0)
    rep["noise_oracle"] = {}
    for frac in (0.5, 1.0, 1.5, 2.0):
        noise = rng.normal(size=(len(te_rows), c.shape[1]))
        noise *= frac * spread / np.linalg.norm(noise, axis=1, keepdims=True)
        rep["noise_oracle"][f"noise_{frac}_x_rms"] = summary(distances_to(c[te_rows] + noise, c), te_rows)
    # a regression that has learnt part of the way: the true point pulled towards the centre
    rep["shrink_oracle"] = {
        f"shrink_{a}": summary(distances_to(centre + a * (c[te_rows] - centre), c), te_rows) for a in (0.1, 0.25, 0.5)
    }
    rep["ridge_hog_to_space"] = {}
    for lam in args.lambdas:
        mu, sd, w = ridge(f_tr, c[tr_rows], lam)
        y0 = c[tr_rows].mean(0)
        rep["ridge_hog_to_space"][f"lambda_{lam:g}"] = {
            "test_shapes": summary(distances_to((f_te - mu) / sd @ w + y0, c), te_rows),
            "own_training_views": summary(distances_to((f_tr - mu) / sd @ w + y0, c), tr_rows),
        }
    fit, hold = tr_view < 10, tr_view >= 10
    seen: dict = {"queries": int(hold.sum()), "hog_nn": summary(hog_nn(f_tr[hold]), tr_rows[hold])}
    for lam in args.lambdas:
        mu, sd, w = ridge(f_tr[fit], c[tr_rows[fit]], lam)
        p = (f_tr[hold] - mu) / sd @ w + c[tr_rows[fit]].mean(0)
        seen[f"ridge_lambda_{lam:g}"] = summary(distances_to(p, c), tr_rows[hold])
    rep["seen_shapes_views_10_11"] = seen
    rep["networks"] = {}
    for run in args.runs:
        r = Retriever.from_run(run, args.category)
        net: dict = {}
        for name, ims, rows in (("own_training_views", tr_im, tr_rows), ("test_shapes", te_im, te_rows)):
            p = embed(r.model, torch.cat([photo_input(im, r.size) for im in ims]))
            net[name] = {
                **summary(distances_to(p, c), rows),
                "mean_squared_error": round(float(((p - c[rows]) ** 2).sum(1).mean()), 4),
                "output_spread": round(float(((p - p.mean(0)) ** 2).sum(1).mean()), 4),
                "target_spread": round(float(((c[rows] - c[rows].mean(0)) ** 2).sum(1).mean()), 4),
            }
        rep["networks"][run] = net
    rep["seconds"] = round(time.perf_counter() - t0, 1)
    rep["loadavg_end"] = round(os.getloadavg()[0], 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rep, indent=2) + "\n")
    print(json.dumps(rep))


if __name__ == "__main__":
    main()
