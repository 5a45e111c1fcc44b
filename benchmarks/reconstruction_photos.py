"""Real photos through the reconstruction route (issue 12): the chair photo with its mask, and the two
SPair-71k aeroplanes (no masks: the sketch network's silhouette inside the annotated box is the mask).

For each photo: ``kpengine understand --shape reconstruct`` in library form (2.5D sketches -> voxels
-> marching cubes -> keypoints of the nearest training shape on the surface -> pose refinement ->
projection), written as ``<name>_sketches.png`` (crop, silhouette, depth, normals), ``<name>_voxels.png``
(the predicted grid), ``<name>_overlay.png`` and ``<name>_semantics.png``, and a JSON summary.

    python benchmarks/reconstruction_photos.py --runs RUN_SKETCH RUN_VOXELS \\
        --images ../shared/data/images --knowledge ../shared/data/keypointnet --out photos/
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kpengine.image.crops import crop_square, square_box
from kpengine.image.pipeline import KnowledgeBase, Networks, overlay_picture, semantics_picture, understand
from kpengine.image.reconstruct.figures import plot_voxel_grids
from kpengine.image.reconstruct.photo import RECON_MARGIN, load_network, predict_sketches, sketch_picture
from kpengine.image.silhouette import largest_component
from kpengine.io.image import load_image, load_mask
from kpengine.render.overlay import save_png


def mask_in_box(image: np.ndarray, box_xyxy, sketch_net) -> np.ndarray:
    """(H, W) bool: the sketch network's silhouette on the square crop around an annotated box
    (x0, y0, x1, y1), mapped back to the photo and kept inside the box (largest component)."""
    x0, y0, x1, y1 = box_xyxy
    box = (x0 - 0.5, y0 - 0.5, x1 - x0 + 1.0, y1 - y0 + 1.0)
    size = int(sketch_net.config["size"])
    crop = crop_square(image, box, RECON_MARGIN, size)
    small = predict_sketches(sketch_net, crop[None])["mask"][0].numpy() > 0
    small = largest_component(small) if small.any() else small
    cx, cy, side = square_box(box, RECON_MARGIN)
    h, w = image.shape[:2]
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    u = np.floor((jj - (cx - side / 2) + 0.5) / side * size).astype(int)
    v = np.floor((ii - (cy - side / 2) + 0.5) / side * size).astype(int)
    ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    out = np.zeros((h, w), bool)
    out[ok] = small[v[ok], u[ok]]
    inside = (jj >= x0) & (jj <= x1) & (ii >= y0) & (ii <= y1)
    return out & inside


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs=2, required=True, metavar=("SKETCH_RUN", "VOXELS_RUN"))
    ap.add_argument("--images", required=True)
    ap.add_argument("--knowledge", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sketch = load_network(args.runs[0], "sketch")
    voxels = load_network(args.runs[1], "voxels")
    images = Path(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photos = []
    chair = load_image(images / "chair_photo_rgb.png")
    photos.append(("chair", "chair", chair, load_mask(images / "chair_photo_mask.png", expected_shape=chair.shape[:2])))
    pair = json.loads((images / "spair" / "spair_aeroplane_pair.json").read_text())[0]
    for side in ("source", "target"):
        im = load_image(images / "spair" / pair[f"{side}_path"])
        photos.append(
            (Path(pair[f"{side}_path"]).stem, "airplane", im, mask_in_box(im, pair[f"{side}_bounding_box"], sketch))
        )
    summary = {}
    for name, cat, image, mask in photos:
        kb = KnowledgeBase.load(args.knowledge, cat, "train", require_meshes=False)
        nets = Networks(None, sketch=sketch, voxels=voxels)
        t = time.perf_counter()
        try:
            u = understand(image, kb, nets, mask=mask, steps=args.steps, shape_route="reconstruct")
        except Exception as e:  # noqa: BLE001 - a refusal is a result here (e.g. an object cut off by the frame)
            summary[name] = {"refused": str(e)}
            print(name, summary[name], flush=True)
            continue
        secs = time.perf_counter() - t
        from kpengine.image.reconstruct.photo import reconstruct_photo

        t = time.perf_counter()
        rec = reconstruct_photo(image, sketch, voxels, mask, category=cat)
        recon_secs = time.perf_counter() - t
        save_png(out / f"{name}_sketches.png", np.asarray(Image.fromarray(sketch_picture(rec)).resize((512, 128))))
        plot_voxel_grids(out / f"{name}_voxels.png", [rec.voxels > 0.5], [f"{name}: predicted {cat} (32³)"], 1)
        save_png(out / f"{name}_overlay.png", overlay_picture(u))
        save_png(out / f"{name}_semantics.png", semantics_picture(u))
        summary[name] = {
            "category": cat,
            "mask": "given" if name == "chair" else "sketch network inside the SPair box",
            "fitted_iou": round(u.iou_refined, 3),
            "azimuth": round(u.viewpoint["azimuth"], 1),
            "elevation": round(u.viewpoint["elevation"], 1),
            "visible_keypoints": sum(v["visible"] for v in u.keypoints.values()),
            "occupied_voxels": int((rec.voxels > 0.5).sum()),
            "understand_seconds": round(secs, 2),
            "reconstruction_seconds": round(recon_secs, 3),
        }
        print(name, json.dumps(summary[name]), flush=True)
    meta = {
        "runs": args.runs,
        "loadavg_1m": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out / "summary.json").write_text(json.dumps({**meta, "photos": summary}, indent=1))


if __name__ == "__main__":
    main()
