"""The SPair-71k aeroplane pair through the 3D route, PCK@alpha_bbox beside two 2D baselines.

    python benchmarks/see_spair.py --pairs ../shared/data/images/spair/spair_aeroplane_pair.json \
        --knowledge ../shared/data/keypointnet --silhouette RUN --out OUT [--viewpoint RUN]

Each photo: the mask from the airplane ``--silhouette`` run, then the `understand` pipeline. With
``--viewpoint`` (an airplane viewpoint run) the network's estimate starts the fit; without it the
viewpoint is searched: every 30 deg of azimuth at 10 deg elevation is fitted (retrieval, 20
refinement steps) and the best silhouette IoU kept. The source keypoints then go through
:func:`kpengine.image.transfer.transfer_points`. Scored with SPair's threshold ``alpha * max(w, h)``
of the target box at alpha 0.05 / 0.1 / 0.15, beside ``identity`` (the source pixel) and
``box`` (the affine map between the two annotated boxes, which SPair gives to every method).
Writes ``OUT/spair.json`` and ``OUT/spair.png`` (both fits, the transferred points, the truth).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from kpengine.image.datasets import predict_mask
from kpengine.image.pipeline import KnowledgeBase, Networks, load_image_run, overlay_picture, understand
from kpengine.image.transfer import FittedPhoto, transfer_points
from kpengine.image.viewpoint import ViewpointNet
from kpengine.io.image import load_image
from kpengine.io.spair import load_spair_pairs
from kpengine.metrics.pck2d import transfer_pck
from kpengine.render.cameras import Viewpoint

ALPHAS = (0.05, 0.1, 0.15)


def fit_photo(image: np.ndarray, kb: KnowledgeBase, nets: Networks, searched: bool):  # noqa: ANN201
    mask = predict_mask(nets.silhouette, image, nets.silhouette_size)
    if not searched:
        return understand(image, kb, nets, mask=mask), mask
    best = None
    for az in range(0, 360, 30):
        u = understand(image, kb, nets, mask=mask, viewpoint_override=Viewpoint(float(az), 10.0, 1.0, 0.0))
        if best is None or u.iou_refined > best.iou_refined:
            best = u
    return best, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--knowledge", required=True)
    ap.add_argument("--silhouette", required=True)
    ap.add_argument("--viewpoint", default=None)
    ap.add_argument("--split", default="all")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kb = KnowledgeBase.load(args.knowledge, "airplane", args.split)
    sil, st = load_image_run(args.silhouette, "silhouette", "airplane")
    vp = load_image_run(args.viewpoint, "viewpoint", "airplane")[0] if args.viewpoint else ViewpointNet(64)
    nets = Networks(vp, sil, int(st["config"]["size"]))
    res = {"knowledge_shapes": [s.model_id for s in kb.shapes], "pairs": []}
    for pair in load_spair_pairs(args.pairs):
        ims = [load_image(pair.source_path), load_image(pair.target_path)]
        fits = [fit_photo(im, kb, nets, args.viewpoint is None) for im in ims]
        fitted = []
        for u, _ in fits:
            _, renderer, _ = kb.mesh(u.shape)
            fitted.append(FittedPhoto.from_render(u.shape, renderer.render(u.camera)))
        scale = float(np.max(pair.target_box[2:] - pair.target_box[:2]))
        s_box, t_box = pair.source_box, pair.target_box
        preds = {
            "3d": transfer_points(pair.source_points, fitted[0], fitted[1])[0],
            "identity": pair.source_points,
            "box": t_box[:2] + (pair.source_points - s_box[:2]) * (t_box[2:] - t_box[:2]) / (s_box[2:] - s_box[:2]),
        }
        row = {
            "source": pair.source_path.name,
            "target": pair.target_path.name,
            "fits": [
                {"model_id": u.shape.model_id, "iou": u.iou_refined, "pose": u.pose_json()["azimuth"]} for u, _ in fits
            ],
            "pck_bbox": {
                m: {f"{a:g}": float(transfer_pck(p, pair.target_points, scale, a).mean()) for a in ALPHAS}
                for m, p in preds.items()
            },
            "errors_px_3d": np.hypot(*(preds["3d"] - pair.target_points).T).round(1).tolist(),
        }
        res["pairs"].append(row)
        picture(ims, fits, pair, preds["3d"], out / "spair.png")
    (out / "spair.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def picture(ims: list, fits: list, pair, pred: np.ndarray, path: Path) -> None:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    axes[0].imshow(overlay_picture(fits[0][0]))
    axes[0].set_title(f"source fit: IoU {fits[0][0].iou_refined:.2f}", fontsize=9)
    axes[1].imshow(overlay_picture(fits[1][0]))
    axes[1].set_title(f"target fit: IoU {fits[1][0].iou_refined:.2f}", fontsize=9)
    axes[2].imshow(ims[1])
    t = pair.target_points
    axes[2].scatter(t[:, 0], t[:, 1], c="lime", s=25, label="truth")
    axes[2].scatter(pred[:, 0], pred[:, 1], c="red", s=25, label="3D route")
    for k in range(len(t)):
        axes[2].plot([t[k, 0], pred[k, 0]], [t[k, 1], pred[k, 1]], "y-", lw=1)
        axes[2].text(t[k, 0] + 4, t[k, 1] - 4, str(k), color="lime", fontsize=8)
    axes[2].legend(fontsize=8)
    axes[2].set_title("target: transferred source keypoints (red) vs truth (green)", fontsize=9)
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
