"""The geometric part of the aggregation on real human clicks: the Dutagaci et al. (2012) benchmark.

    .venv/bin/python benchmarks/aggregate_dutagaci.py --data ../shared/data/dutagaci --set B --row 4

``GT_MODEL`` is 10 x 15 x 2 per mesh (set B): row = the consensus radius index, column =
the vote-threshold index; cell ``[row, col, 0]`` holds the consensus vertex ids (1-based)
and ``[row, col, 1]`` one string of clicked vertex ids per consensus point. For each mesh,
the clicks behind the consensus points of ``[row, col]`` are aggregated by kpengine's own-model
fidelity term (``FidelityConfig.self_weight`` = 1: Gaussian click saliency, sigma 0.03 of
the bounding-box diagonal, geodesic on the mesh edge graph; support threshold; non-minimum
suppression within 2 sigma) and by geodesic clustering (Dutagaci's own method, radius 0.05),
then scored against ``GT_MODEL[row, col, 0]`` with Dutagaci's measures: false negative error
FNE = 1 - matched GT / GT, false positive error FPE = 1 - matched detections / detections,
and weighted miss error WME (each GT point weighted by its number of clicks), at geodesic
radii 0.01 ... 0.12 of the bounding-box diagonal (Dutagaci use the model's diameter; the
diagonal is our stand-in).

What this can and cannot tell: the files keep only the clicks that formed a consensus
point, so there are no mis-clicks and no scattered minority clicks here, and the ground
truth was built by geodesic clustering of these very clicks: the comparison is biased
towards geodesic clustering, and it tests localisation and separation of nearby points,
not robustness to wrong clicks. One mesh per object: no cross-model ids to test (the
embedding and clustering parts of kpengine need a category).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import scipy.io as sio
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from shared_data import shared_data  # a sibling script

from kpengine.aggregate.baselines import geodesic_clustering
from kpengine.aggregate.saliency import SIGMA, gaussian

RADII = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.12)


class MeshGraph:
    """Edge graph of a triangle mesh; ``from_sources`` as :class:`kpengine.geometry.geodesic.GeodesicGraph`."""

    def __init__(self, v: np.ndarray, f: np.ndarray):
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        w = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
        self.n_points = len(v)
        self.graph = coo_matrix((w, (e[:, 0], e[:, 1])), shape=(len(v), len(v))).tocsr()
        self.protocol = "strict"

    def from_sources(self, sources: np.ndarray, limit: float | None = None) -> np.ndarray:
        return dijkstra(self.graph, directed=False, indices=np.asarray(sources, np.int64), limit=limit or np.inf)


def kpengine_geometric(
    graph: MeshGraph, clicks: np.ndarray, n_subjects: int, min_support: float, nms_radius: float = 2 * SIGMA
) -> np.ndarray:
    """Minima of the own-model fidelity F = sqrt2 (1 - sum_c w_c / n_subjects) within ``nms_radius``.

    Only points with support ``sum_c w_c / n_subjects >= min_support`` compete.

    Each click counts as its own annotator (the files do not say who clicked what).
    """
    d = graph.from_sources(clicks, limit=3 * SIGMA)  # (C, N)
    support = gaussian(d).sum(axis=0) / n_subjects
    cand = np.flatnonzero(support >= min_support)
    if len(cand) == 0:
        return cand
    dc = graph.from_sources(cand, limit=nms_radius)  # (Y, N)
    better = (support[None, :] > support[cand][:, None]) | (
        (support[None, :] == support[cand][:, None]) & (np.arange(graph.n_points)[None, :] < cand[:, None])
    )
    keep = ~((dc <= nms_radius) & better).any(axis=1)
    return cand[keep]


def score(graph: MeshGraph, gt: np.ndarray, weight: np.ndarray, pred: np.ndarray) -> dict[str, list[float]]:
    """Dutagaci's FNE, FPE, WME at every radius of RADII."""
    if len(pred) == 0:
        return {"fne": [1.0] * len(RADII), "fpe": [0.0] * len(RADII), "wme": [1.0] * len(RADII)}
    d = graph.from_sources(gt, limit=max(RADII))[:, pred]  # (G, P)
    out: dict[str, list[float]] = {"fne": [], "fpe": [], "wme": []}
    for r in RADII:
        hit_gt = d.min(axis=1) <= r
        out["fne"].append(1.0 - hit_gt.mean())
        out["fpe"].append(1.0 - (d.min(axis=0) <= r).mean())
        out["wme"].append(float((weight * ~hit_gt).sum() / weight.sum()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=shared_data("dutagaci"))
    ap.add_argument("--set", default="B", choices=["A", "B"])
    ap.add_argument("--row", type=int, default=4, help="GT_MODEL row: consensus radius index (0-9)")
    ap.add_argument("--col", type=int, default=2, help="GT_MODEL column: vote-threshold index (0-14)")
    ap.add_argument("--min-support", type=float, default=0.10)
    ap.add_argument("--nms-radius", type=float, default=2 * SIGMA)
    args = ap.parse_args()
    root = Path(args.data)
    t0 = time.perf_counter()
    totals: dict[str, dict[str, list[list[float]]]] = {"kpengine (geometric)": {}, "geodesic clustering": {}}
    counts = {"meshes": 0, "gt": 0, "clicks": 0, "kpengine (geometric)": 0, "geodesic clustering": 0}
    for path in sorted((root / f"GROUND_TRUTH_{args.set}").glob("*.mat")):
        gt_model = sio.loadmat(path)["GT_MODEL"]
        mesh = sio.loadmat(root / "MODEL_DATASET" / path.name)
        v, f = mesh["V"].astype(np.float64), mesh["F"].astype(np.int64) - 1
        v = v / np.linalg.norm(v.max(axis=0) - v.min(axis=0))  # bounding-box diagonal 1
        gt = np.ravel(gt_model[args.row, args.col, 0]).astype(np.int64) - 1
        groups = [
            np.array(str(np.ravel(c)[0]).split(), np.int64) - 1 for c in np.ravel(gt_model[args.row, args.col, 1])
        ]
        if len(gt) == 0:
            continue
        clicks = np.concatenate(groups)
        weight = np.array([len(g) for g in groups], np.float64)
        graph = MeshGraph(v, f)
        n_subjects = int(weight.max())
        preds = {
            "kpengine (geometric)": kpengine_geometric(graph, clicks, n_subjects, args.min_support, args.nms_radius),
            "geodesic clustering": geodesic_clustering(
                graph,  # type: ignore[arg-type]
                clicks,
                np.arange(len(clicks)),
                radius=0.05,
                min_votes=2,
            ),
        }
        counts["meshes"] += 1
        counts["gt"] += len(gt)
        counts["clicks"] += len(clicks)
        for name, pred in preds.items():
            counts[name] += len(pred)
            for k, vals in score(graph, gt, weight, pred).items():
                totals[name].setdefault(k, []).append(vals)
    for name, per in totals.items():
        mean = {k: [round(float(x), 3) for x in np.mean(v, axis=0)] for k, v in per.items()}
        print(json.dumps({"method": name, "set": args.set, "row": args.row, "col": args.col,
                          "nms_radius": args.nms_radius, "radii": RADII, **mean,
                          "detections": counts[name], **{k: counts[k] for k in ("meshes", "gt", "clicks")},
                          "time_s": round(time.perf_counter() - t0, 1), "loadavg": os.getloadavg()}))  # fmt: skip


if __name__ == "__main__":
    main()
