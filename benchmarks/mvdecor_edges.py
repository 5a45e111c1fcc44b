"""Why MvDeCor loses at PCK@0.01: how far a one-pixel error of the predicted region edges moves
the decoded keypoints, at the default 96 px and at 192 px (issue 15).

No network: the *true* keypoint regions (each point's nearest keypoint id within the region
radius, else background; what the few-shot head is trained to predict) are painted into every
view through its index map, optionally corrupted the way a per-pixel classifier errs at region
edges, voted back onto the cloud exactly as the few-shot runs' predictions are
(``backproject.vote`` / ``point_probabilities``) and decoded with the same ball decoder. Test
split, official correspondence PCK. Corruptions, each view drawn independently (seeded):

``exact``     the true labels (the decoder's own ceiling at this resolution);
``shift1``    each view's label map moved by one pixel in a random one of 8 directions (the
              labels of on-object pixels only: the silhouette stays);
``shift2``    the same by two pixels;
``edge1``     each pixel within one pixel of a region edge takes a random neighbour's label
              (ragged, unbiased edges).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/mvdecor_edges.py \\
        --data ../shared/data/keypointnet --category bed --views runs/views/bed --views-fine runs/views192/bed
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kpengine.data.dataset import KeypointNetDataset
from kpengine.image.multiview.backproject import keypoints_from_probabilities, point_probabilities, vote
from kpengine.image.multiview.views import ViewCache, build_view_cache
from kpengine.metrics.evaluate import evaluate_correspondence
from kpengine.metrics.regions import REGION_RADIUS, region_labels, region_miou

THRESHOLDS = (0.01, 0.05, 0.10)
CORRUPTIONS = ("exact", "shift1", "shift2", "edge1")
DIRECTIONS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def corrupt(labels: np.ndarray, mask: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W) label map of one view corrupted as ``how`` (off-object pixels keep theirs)."""
    if how == "exact":
        return labels
    h, w = labels.shape
    if how.startswith("shift"):
        step = int(how[-1])
        dy, dx = DIRECTIONS[rng.integers(len(DIRECTIONS))]
        src_y = np.clip(np.arange(h)[:, None] - dy * step, 0, h - 1)
        src_x = np.clip(np.arange(w)[None, :] - dx * step, 0, w - 1)
        moved = labels[src_y, src_x]
        ok = mask & mask[src_y, src_x]  # a label moved from off the object is not a label
        return np.where(ok, moved, labels)
    if how == "edge1":
        pad = np.pad(labels, 1, mode="edge")
        neigh = np.stack([pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in DIRECTIONS])
        edge = mask & (neigh != labels[None]).any(0)
        k = rng.integers(len(DIRECTIONS), size=(h, w))  # one neighbour per pixel, for its label and its mask
        pick = neigh[k, np.arange(h)[:, None], np.arange(w)[None, :]]
        padm = np.pad(mask, 1)
        mneigh = np.stack([padm[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in DIRECTIONS])
        pick_on = mneigh[k, np.arange(h)[:, None], np.arange(w)[None, :]]
        return np.where(edge & pick_on, pick, labels)
    raise ValueError(f"unknown corruption {how!r}; choose from {', '.join(CORRUPTIONS)}")


def decode_truth(test: KeypointNetDataset, cache: ViewCache, how: str, seed: int) -> tuple[dict, float]:
    """{model_id: {semantic id: point}} decoded from the (corrupted) true regions of every view,
    and the dense region mIoU of the voted labels (the benchmark's "mIoU dense")."""
    n = test.n_classes
    rng = np.random.default_rng(seed)
    preds, voted, truths = {}, [], []
    for shape in test:
        truth = region_labels(shape.points, shape.point_indices, shape.semantic_ids, n, REGION_RADIUS)
        views = cache.get(shape.model_id)
        onehot = []
        for v in range(views.n_views):
            mask = views.index[v] >= 0
            labels = np.where(mask, truth[np.maximum(views.index[v], 0)], n)
            labels = corrupt(labels, mask, how, rng)
            onehot.append(np.eye(n + 1, dtype=np.float32)[labels].transpose(2, 0, 1))
        votes, counts = vote(views.index, np.stack(onehot), len(shape.points))
        probs = point_probabilities(shape.points, votes, counts, shape.model_id)
        preds[shape.model_id] = keypoints_from_probabilities(shape.points, probs, n, REGION_RADIUS, "ball")
        voted.append(probs.argmax(axis=1))
        truths.append(truth)
    return preds, region_miou(voted, truths, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--views", required=True, help="the benchmark's 96 px view cache")
    p.add_argument("--views-fine", help="a view cache at --fine-size px (rendered here on first use)")
    p.add_argument("--fine-size", type=int, default=192)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()
    test = KeypointNetDataset(args.data, args.category, "test")
    caches = {96: ViewCache(args.views, args.category)}
    if args.views_fine:
        build_view_cache(args.views_fine, list(test), args.category, size=args.fine_size)
        caches[args.fine_size] = ViewCache(args.views_fine, args.category)
    rows = []
    for size, cache in caches.items():
        for how in CORRUPTIONS:
            pcks, mious = [], []
            for seed in range(1 if how == "exact" else args.seeds):
                preds, miou = decode_truth(test, cache, how, seed)
                pcks.append(evaluate_correspondence(test, preds, thresholds=THRESHOLDS).metrics["pck"])
                mious.append(miou)
            row = {"category": args.category, "size": size, "corruption": how, "pck": np.mean(pcks, 0).tolist()}
            row["miou_dense"] = float(np.mean(mious))
            row["pck_seeds"] = pcks
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
