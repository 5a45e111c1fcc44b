"""The SPair-71k aeroplane pair through the 3D route, both directions, PCK@alpha_bbox beside 2D baselines.

    python benchmarks/see_spair.py --pairs ../shared/data/images/spair/spair_aeroplane_pair.json \\
        --knowledge ../shared/data/keypointnet --silhouette RUN --viewpoint RUN --out OUT [--mask-input box]

Each photo is fitted once per *route*, then every pair is transferred source -> target and target ->
source (the pair file's points read the other way), so one pair gives two scored transfers:

* ``3d net``: the `understand` pipeline as the command runs it (the airplane ``--viewpoint`` network's
  azimuth modes and their half turns as starts, retrieval over the knowledge base's annotated
  airplanes by mask IoU, 20 refinement steps), on the mask of the airplane ``--silhouette`` network;
* ``3d search``: the same with the viewpoint searched instead: every 30 deg of azimuth at elevations
  -10, 10 and 30 deg, each fitted (retrieval, refinement), the best silhouette IoU kept;
* ``identity``: the source pixel; ``mask box``: the per-axis affine map between the two *predicted*
  masks' boxes (the same masks as the 3D routes); ``SPair box``: the same map between SPair's two
  annotated boxes, which SPair gives every method.

Masks: ``--mask-input whole`` runs the silhouette network on the whole photo (as ``understand`` does
without a mask); ``box`` on the square crop around SPair's annotated box
(:func:`kpengine.image.datasets.predict_mask_in_box`), the framing of the training renders.
Transferred points go through :func:`kpengine.image.transfer.transfer_points` (lift on the source
fit, box map + semantic residuals between the two retrieved airplanes, project with the target
camera). Scored with SPair's threshold ``alpha * max(w, h)`` of the *target's* annotated box at
alpha 0.05 / 0.1 / 0.15. Writes ``OUT/spair.json``, ``OUT/spair.png`` (per direction, the transferred
points of each route against the truth) and ``OUT/fits.png`` (each photo's fit per route).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from see_pf_willow import _draw, box_map, box_of  # the same 2D maps and drawing as the PF-WILLOW benchmark

from kpengine.image.datasets import predict_mask, predict_mask_in_box
from kpengine.image.pipeline import KnowledgeBase, Networks, load_image_run, overlay_picture, understand
from kpengine.image.transfer import FittedPhoto, transfer_points
from kpengine.io.image import load_image
from kpengine.io.spair import load_spair_pairs
from kpengine.metrics.pck2d import transfer_pck
from kpengine.render.cameras import Viewpoint

ALPHAS = (0.05, 0.1, 0.15)
SEARCH_AZIMUTHS = tuple(range(0, 360, 30))
SEARCH_ELEVATIONS = (-10.0, 10.0, 30.0)


def fit_photo(image: np.ndarray, mask: np.ndarray, kb: KnowledgeBase, nets: Networks, route: str):  # noqa: ANN201
    """One photo's :class:`Understanding` by ``route`` (``net`` or ``search``) on the given mask."""
    if route == "net":
        return understand(image, kb, nets, mask=mask)
    best = None
    for el in SEARCH_ELEVATIONS:
        for az in SEARCH_AZIMUTHS:
            view = Viewpoint(az, el, 1.0, 0.0)
            u = understand(image, kb, nets, mask=mask, pose_hypotheses=1, viewpoint_override=view)
            if best is None or u.iou_refined > best.iou_refined:
                best = u
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="a SPair pair file (io/spair.py)")
    ap.add_argument("--knowledge", required=True, help="KeypointNet root: the annotated airplanes to retrieve")
    ap.add_argument("--silhouette", required=True, help="an airplane silhouette run")
    ap.add_argument("--viewpoint", required=True, help="an airplane viewpoint run")
    ap.add_argument("--split", default="all", help="knowledge-base split (default all)")
    ap.add_argument("--mask-input", choices=("whole", "box"), default="box")
    ap.add_argument("--routes", default="net,search", help="comma-separated: net, search")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    routes = [r for r in args.routes.split(",") if r]
    kb = KnowledgeBase.load(args.knowledge, "airplane", args.split)
    sil, st = load_image_run(args.silhouette, "silhouette", "airplane")
    vp, _ = load_image_run(args.viewpoint, "viewpoint", "airplane")
    nets = Networks(vp, sil, int(st["config"]["size"]))
    res: dict = {
        "knowledge_shapes": {s.model_id: ("mesh" if s.mesh_path else "cloud") for s in kb.shapes},
        "mask_input": args.mask_input,
        "transfers": [],
    }
    photos: dict[str, dict] = {}
    rows = []
    for pair in load_spair_pairs(args.pairs):
        ends = [
            (pair.source_path, pair.source_points, pair.source_box),
            (pair.target_path, pair.target_points, pair.target_box),
        ]
        for path, _, box in ends:
            if path.name in photos:
                continue
            image = load_image(path)
            t0 = time.perf_counter()
            if args.mask_input == "box":
                mask = predict_mask_in_box(sil, image, nets.silhouette_size, box)
            else:
                mask = predict_mask(sil, image, nets.silhouette_size)
            entry = {"image": image, "mask": mask, "fits": {}, "seconds": {}}
            for r in routes:
                t1 = time.perf_counter()
                u = fit_photo(image, mask, kb, nets, r)
                _, renderer, _ = kb.mesh(u.shape)
                entry["fits"][r] = (u, FittedPhoto.from_render(u.shape, renderer.render(u.camera)))
                entry["seconds"][r] = round(time.perf_counter() - t1, 1)
            entry["seconds"]["mask"] = round(time.perf_counter() - t0 - sum(entry["seconds"].values()), 2)
            photos[path.name] = entry
            print(
                f"{path.name}: "
                + "; ".join(
                    f"{r} az {u.pose_json()['azimuth']:.0f} el {u.pose_json()['elevation']:.0f} "
                    f"shape {u.shape.model_id[:8]} IoU {u.iou_refined:.2f}"
                    for r, (u, _) in entry["fits"].items()
                ),
                flush=True,
            )
        for (sp, spts, sbox), (tp, tpts, tbox) in (ends, ends[::-1]):
            s, t = photos[sp.name], photos[tp.name]
            scale = float(np.max(tbox[2:] - tbox[:2]))
            preds = {f"3d {r}": transfer_points(spts, s["fits"][r][1], t["fits"][r][1])[0] for r in routes}
            preds |= {
                "identity": spts.astype(np.float64),
                "mask box": box_map(spts, box_of(s["mask"]), box_of(t["mask"])),
                "SPair box": box_map(spts, sbox, tbox),
            }
            row = {
                "source": sp.name,
                "target": tp.name,
                "threshold_px@0.1": round(0.1 * scale, 2),
                "pck_bbox": {
                    m: {f"{a:g}": float(transfer_pck(p, tpts, scale, a).mean()) for a in ALPHAS}
                    for m, p in preds.items()
                },
                "errors_px": {m: np.hypot(*(p - tpts).T).round(1).tolist() for m, p in preds.items()},
            }
            res["transfers"].append(row)
            rows.append((sp.name, tp.name, spts, tpts, preds))
    methods = list(res["transfers"][0]["pck_bbox"])
    res["mean_over_transfers"] = {
        m: {f"{a:g}": float(np.mean([r["pck_bbox"][m][f"{a:g}"] for r in res["transfers"]])) for a in ALPHAS}
        for m in methods
    }
    res["fits"] = {
        name: {
            r: {
                "model_id": u.shape.model_id,
                "iou": round(u.iou_refined, 3),
                "azimuth": round(u.pose_json()["azimuth"], 1),
                "elevation": round(u.pose_json()["elevation"], 1),
                "network_azimuth": round(float(u.viewpoint["azimuth"]), 1),
                "network_confidence": round(float(u.viewpoint["confidence"]), 3),
            }
            for r, (u, _) in e["fits"].items()
        }
        | {"seconds": e["seconds"]}
        for name, e in photos.items()
    }
    (out / "spair.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "transfers"}, indent=1))
    for r in res["transfers"]:
        print(r["source"], "->", r["target"], json.dumps(r["pck_bbox"]))
    picture(rows, photos, routes, out / "spair.png")


def _tile(image: np.ndarray, side: int = 420) -> np.ndarray:
    """The photo scaled to fit a ``side`` x ``side`` black square (portrait and landscape photos side by side)."""
    from PIL import Image

    im = Image.fromarray(image)
    im.thumbnail((side, side))
    out = np.zeros((side, side, 3), np.uint8)
    a = np.asarray(im)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def picture(rows: list, photos: dict, routes: list[str], path: Path) -> None:
    """Two figures. ``path``: one row per direction, the source with its keypoints (red), then per route the
    target with the transferred points (cyan) joined to the truth (green) by yellow lines. ``fits.png``
    beside it: one row per route, each photo's fit (the mask in white, the fitted airplane in blue,
    its keypoints) with azimuth, elevation and silhouette IoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = 1 + len(routes)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(4.6 * ncol, 4.9 * len(rows)), squeeze=False)
    for i, (sname, tname, spts, tpts, preds) in enumerate(rows):
        s, t = photos[sname], photos[tname]
        axes[i, 0].imshow(_tile(_draw(s["image"], spts, (255, 40, 40))))
        axes[i, 0].set_title(f"source {sname}: its keypoints", fontsize=10)
        for c, r in enumerate(routes, start=1):
            im = _draw(t["image"], tpts, (40, 255, 40))
            axes[i, c].imshow(_tile(_draw(im, preds[f"3d {r}"], (0, 230, 255), ref=tpts)))
            axes[i, c].set_title(f"3d {r} -> {tname}\ncyan transferred, green truth", fontsize=10)
    for a in axes.ravel():
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

    names = list(photos)
    fig, axes = plt.subplots(len(routes), len(names), figsize=(4.6 * len(names), 4.9 * len(routes)), squeeze=False)
    for i, r in enumerate(routes):
        for j, name in enumerate(names):
            u = photos[name]["fits"][r][0]
            pj = u.pose_json()
            axes[i, j].imshow(_tile(overlay_picture(u)))
            axes[i, j].set_title(
                f"{r}: {name}\naz {pj['azimuth']:.0f} el {pj['elevation']:.0f} IoU {u.iou_refined:.2f} "
                f"shape {u.shape.model_id[:8]}",
                fontsize=10,
            )
            axes[i, j].axis("off")
    fig.tight_layout()
    fig.savefig(path.with_name("fits.png"), dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
