"""PF-WILLOW keypoint transfer through 3D (winebottle <-> KeypointNet bottle), beside 2D baselines.

    python benchmarks/see_pf_willow.py --data ../shared/data/images/pf_willow \
        --knowledge ../shared/data/keypointnet --silhouette RUN --out OUT

For every photo of the three winebottle groups: the object mask (the ``--silhouette`` network, a
bottle silhouette run), the `understand` pipeline with the viewpoint fixed by the bottle's
rotational symmetry (azimuth 0 for every photo, elevation 10 deg as the start; the refinement
fits elevation, roll, scale and position), the retrieved bottle and its refined pose. Then every
ordered pair of a group (90 per group) is transferred by :func:`kpengine.image.transfer.transfer_points`
and scored with PCK@alpha_bbox (alpha * max(h, w) of the target keypoints' box, the PF-WILLOW
definition) at alpha = 0.05, 0.1, 0.15. In the same run, on the same pairs:

* ``identity``: each source keypoint's pixel coordinates taken as the prediction;
* ``mask box``: the affine map (per-axis scale and shift) from the source mask's box to the
  target mask's box, with the *same* predicted masks as the 3D route;
* ``keypoint box (oracle)``: the same map between the two photos' *keypoint* boxes; it uses the
  target's annotation and only shows how much of the task is box alignment.

``identity`` is also scored on all 900 pairs of the ten groups (the published figures' set).
Writes ``OUT/willow.json``, ``OUT/willow_pairs.png`` (worst and best pairs) and ``OUT/fits.png``
(every photo's mask and fitted bottle). Why the viewpoint network is not used: a wine bottle
looks the same from every azimuth, so the azimuth is a convention; fixing it for both photos
of a pair is what makes the left and right contour points correspond.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from kpengine.image.datasets import predict_mask
from kpengine.image.pipeline import KnowledgeBase, Networks, load_image_run, understand
from kpengine.image.transfer import FittedPhoto, transfer_points
from kpengine.image.viewpoint import ViewpointNet
from kpengine.io.image import load_image
from kpengine.io.pf_willow import load_pf_willow, willow_pairs
from kpengine.metrics.pck2d import keypoint_box_size, transfer_pck
from kpengine.render.cameras import Viewpoint

GROUPS = ("winebottle_M", "winebottle_wC", "winebottle_woC")
ALPHAS = (0.05, 0.1, 0.15)


def box_of(mask: np.ndarray) -> np.ndarray:
    ii, jj = np.nonzero(mask)
    return np.array([jj.min(), ii.min(), jj.max(), ii.max()], np.float64)


def box_map(points: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Points (K, 2) through the per-axis affine map taking box ``src`` onto box ``tgt`` (xmin, ymin, xmax, ymax)."""
    s = (tgt[2:] - tgt[:2]) / np.maximum(src[2:] - src[:2], 1e-9)
    return tgt[:2] + (points - src[:2]) * s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--knowledge", required=True)
    ap.add_argument("--silhouette", required=True, help="a silhouette run of category bottle")
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", default="all", help="knowledge-base split of annotated bottles (default all: 7)")
    ap.add_argument("--elevation", type=float, default=10.0, help="starting elevation (deg)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--groups", default=",".join(GROUPS), help="comma-separated winebottle groups")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    groups = load_pf_willow(args.data)
    kb = KnowledgeBase.load(args.knowledge, "bottle", args.split)
    sil, st = load_image_run(args.silhouette, "silhouette", "bottle")
    # the viewpoint network is not consulted (viewpoint_override below); Networks needs one to exist
    nets = Networks(ViewpointNet(64), sil, int(st["config"]["size"]))
    fits: dict[str, dict] = {}
    seconds = []
    chosen = tuple(args.groups.split(","))
    for g in chosen:
        for p in groups[g]:
            t0 = time.perf_counter()
            image = load_image(p.path)
            mask = predict_mask(sil, image, nets.silhouette_size)
            u = understand(
                image, kb, nets, mask=mask, steps=args.steps,
                viewpoint_override=Viewpoint(0.0, args.elevation, 1.0, 0.0),
            )  # fmt: skip
            _, renderer, _ = kb.mesh(u.shape)
            fit = FittedPhoto.from_render(u.shape, renderer.render(u.camera))
            seconds.append(time.perf_counter() - t0)
            fits[f"{g}/{p.name}"] = {"fit": fit, "mask": mask, "image": image, "u": u}
            print(
                f"{g}/{p.name}: shape {u.shape.model_id[:8]} IoU {u.iou_refined:.2f} ({seconds[-1]:.1f} s)", flush=True
            )

    methods = ("3d", "3d_box_only", "identity", "mask_box", "keypoint_box_oracle")
    scores: dict[str, dict[str, list]] = {m: {f"{a:g}": [] for a in ALPHAS} for m in methods}
    per_group: dict[str, dict[str, float]] = {}
    pair_rows = []
    for g in chosen:
        gs: dict[str, list] = {m: [] for m in methods}
        for s, t in willow_pairs(groups[g]):
            fs, ft = fits[f"{g}/{s.name}"], fits[f"{g}/{t.name}"]
            scale = keypoint_box_size(t.points)
            preds = {
                "3d": transfer_points(s.points, fs["fit"], ft["fit"], semantic=True)[0],
                "3d_box_only": transfer_points(s.points, fs["fit"], ft["fit"], semantic=False)[0],
                "identity": s.points,
                "mask_box": box_map(s.points, box_of(fs["mask"]), box_of(ft["mask"])),
                "keypoint_box_oracle": box_map(
                    s.points,
                    np.r_[s.points.min(0), s.points.max(0)],
                    np.r_[t.points.min(0), t.points.max(0)],
                ),
            }
            for m, pr in preds.items():
                for a in ALPHAS:
                    scores[m][f"{a:g}"].append(transfer_pck(pr, t.points, scale, a))
                gs[m].append(transfer_pck(pr, t.points, scale, 0.1))
            pair_rows.append((g, s, t, preds["3d"], float(np.mean(gs["3d"][-1]))))
        per_group[g] = {m: float(np.mean(v)) for m, v in gs.items()}
    res = {
        "pairs": len(pair_rows),
        "pck_bbox": {m: {a: float(np.mean(v)) for a, v in d.items()} for m, d in scores.items()},
        "per_group_pck_bbox@0.1": per_group,
        "median_seconds_per_photo": float(np.median(seconds)),
        "fits": {k: {"model_id": v["u"].shape.model_id, "iou": v["u"].iou_refined} for k, v in fits.items()},
    }
    every = []
    for photos in groups.values():
        for s, t in willow_pairs(photos):
            every.append(transfer_pck(s.points, t.points, keypoint_box_size(t.points), 0.1))
    res["identity_all_900_pairs@0.1"] = float(np.mean(every))
    (out / "willow.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "fits"}, indent=1))
    pairs_png(pair_rows, fits, out / "willow_pairs.png")
    fits_png(fits, out / "fits.png")


def _draw(image: np.ndarray, pts: np.ndarray, colour, ref: np.ndarray | None = None):  # noqa: ANN001, ANN202
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    d = ImageDraw.Draw(im)
    for k, (x, y) in enumerate(pts):
        if not np.isfinite([x, y]).all():
            continue
        if ref is not None:
            d.line([(x, y), tuple(ref[k])], fill=(255, 255, 0), width=1)
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        d.text((x + 4, y - 5), str(k), fill=colour)
    return np.asarray(im)


def pairs_png(rows: list, fits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r[4])
    chosen = rows[:3] + rows[-3:]
    fig, axes = plt.subplots(2, 6, figsize=(15, 7))
    for c, (g, s, t, pred, score) in enumerate(chosen):
        axes[0, c].imshow(_draw(fits[f"{g}/{s.name}"]["image"], s.points, (255, 0, 0)))
        axes[0, c].set_title(f"source {g[11:]}/{s.name}", fontsize=8)
        axes[1, c].imshow(_draw(fits[f"{g}/{t.name}"]["image"], pred, (0, 255, 255), ref=t.points))
        axes[1, c].set_title(f"target {t.name}: PCK@0.1 {score:.1f}", fontsize=8)
        for a in axes[:, c]:
            a.axis("off")
    fig.suptitle(
        "PF-WILLOW winebottle, 3D route: source keypoints (red), transferred (cyan), yellow line to the truth; "
        "3 worst and 3 best pairs",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fits_png(fits: dict, path: Path) -> None:
    """Every photo: the predicted mask's outline (green) and the fitted bottle's silhouette outline (red)."""
    from PIL import Image

    from kpengine.render.overlay import outline

    tiles = []
    for v in fits.values():
        im = v["image"].copy()
        im[outline(v["mask"])] = (0, 255, 0)
        im[outline(v["u"].object_mask)] = (255, 0, 0)
        pil = Image.fromarray(im)
        pil = pil.resize((150, round(150 * pil.size[1] / pil.size[0])))
        tile = np.zeros((210, 150, 3), np.uint8)
        a = np.asarray(pil)[:210]
        tile[: a.shape[0]] = a
        tiles.append(tile)
    while len(tiles) % 10:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 10], 1) for i in range(0, len(tiles), 10)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


if __name__ == "__main__":
    main()
