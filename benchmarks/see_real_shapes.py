"""PCK of 2D keypoints on held-out real shapes (test split) rendered on real backgrounds, from the image alone.

    kpengine render-views --data ../shared/data/keypointnet --category bathtub,bed --split test --evaluation \
        --views-per-shape 4 --seed 11 --backgrounds ../shared/data/images --out /work/renders/test128
    python benchmarks/see_real_shapes.py --test /work/renders/test128 --knowledge ../shared/data/keypointnet \
        --categories bathtub bed --runs RUN... [--per-category N] [--seed 0] --out OUT_DIR

``--runs``: for each category a viewpoint, a silhouette and a keypoint_heatmap run (told apart by
the task and category in their checkpoints), trained on the train split's renders only. The
knowledge base is the train split (its shapes' own meshes, or surfaces reconstructed from their
clouds). Every test image is of a shape outside it. Rows of OUT_DIR/pck.json, per category:

* ``full``: predicted mask, estimated viewpoint, shape retrieved by silhouette, 20 refinement steps,
  from ``--pose-hypotheses`` starting viewpoints (the azimuth distribution's modes and half turns,
  the best silhouette fit kept: docs/understanding.md, "Pose hypotheses");
* ``full_place``: the same with the pose chosen by the silhouette alone (the heatmap only places the
  keypoints: ``understand(..., heatmap_choice=False)``);
* ``full_screen``: the same with the screen's winner finished alone (the sixth session's default,
  ``understand(..., rechoose=False)``); ``full`` finishes a challenger beside the most probable start
  and chooses again on the finished poses;
* ``full_3d``: the same without the heatmap network: the pose chosen by the silhouette alone and the
  keypoints the projections (the pipeline before the fusion; the paper's keypoints);
* ``full_1``: the same from the network's estimate alone (one hypothesis: the paper);
* ``full_iou``: ``full`` with the best silhouette fit always winning (no switch margin);
* ``no_refine``: the same without refinement (the paper's Table 5);
* ``gt_view`` / ``gt_shape`` / ``gt_mask``: one stage replaced by its ground truth (Table 6): the
  rendered azimuth, elevation and roll; the test shape itself (its reconstructed surface and its
  annotation) as the only knowledge; the true mask;
* ``template``: a fixed mean-template shape (mean annotated keypoints on the train shape nearest
  them, :mod:`kpengine.image.baselines`) posed by the estimated viewpoint and refinement (CSM-like);
* ``heatmap``: the keypoint-heatmap network's arg-max per semantic id (the 2D competitor).

Every pipeline row but ``full_3d`` runs as ``understand`` does by default with a heatmap run: the
heatmap's likelihood joins the silhouette in choosing the pose hypothesis, and each projection is
fused with the heatmap (its arg-max under a Gaussian prior of ``--fusion-sigma`` x the mask box
around the projection; ids the shape lacks from the heatmap alone: :mod:`kpengine.image.fusion`).
The same call's projections, before the fusion, are the row ``<variant>/3d``.

PCK over the keypoints visible in the render; a semantic id the method does not place counts as
wrong. ``either_end`` (a diagnostic beside each row, not the issue's measure): PCK@0.1 with each
image scored under its ids as predicted or as a half turn about the vertical axis relabels them,
whichever is better (:func:`half_turn_ids`): how much of a row's miss is the front/back choice.
``--per-category N`` draws a fixed seeded subset of N test images per category. ``--split val`` scores a
render set of the val split instead (for choosing a rule or a run without the test shapes). Also
OUT_DIR/overlays_<category>.png: for the first images, three pictures each: the full pipeline (white:
the predicted mask's outline, blue: the fitted shape's; dots: its keypoints), the heatmap network's
keypoints, the true visible keypoints (the first two show only the ids visible in the truth, so
the same colours should sit on the same places).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from kpengine.image.baselines import mean_template
from kpengine.image.fusion import FUSION_SIGMA
from kpengine.image.heatmap import predict_keypoints
from kpengine.image.pipeline import KnowledgeBase, Networks, run_task, understand
from kpengine.image.poses import POSE_HYPOTHESES, SWITCH_MARGIN
from kpengine.image.renders import load_render_views, mask_box
from kpengine.metrics.pck2d import pck
from kpengine.render.cameras import Viewpoint
from kpengine.render.overlay import draw_keypoints, outline, save_png, tile

VARIANTS = (
    "full",
    "full_place",
    "full_screen",
    "full_3d",
    "full_1",
    "full_iou",
    "no_refine",
    "gt_view",
    "gt_shape",
    "gt_mask",
    "template",
    "heatmap",
)


def annotation(item) -> dict:
    """A render-set view as :func:`kpengine.metrics.pck2d.pck` reads it (box from the true mask)."""
    x, y, w, h = mask_box(item.mask)
    kp = item.annotation["keypoints"]
    return {
        "category": item.annotation["category"],
        "image_width": int(item.image.shape[1]),
        "image_height": int(item.image.shape[0]),
        "bndbox": [x + 0.5, y + 0.5, x + w - 0.5, y + h - 0.5],  # inclusive pixel indices
        "kps": kp["uv"],
        "kps_ids": kp["semantic_ids"],
        "kps_visible": kp["visible"],
    }


def picture(image: np.ndarray, kps: dict, scale: int = 3, masks: tuple = ()) -> np.ndarray:
    """``image`` enlarged ``scale`` x (nearest), mask outlines (white, then blue), keypoints ``{sid: [u, v]}``
    as dots in their semantic colours without names (names crowd a 128 px render)."""
    big = np.repeat(np.repeat(image, scale, 0), scale, 1)
    for m, colour in zip(masks, ((255, 255, 255), (40, 90, 255))):
        big[outline(np.repeat(np.repeat(m, scale, 0), scale, 1))] = colour
    ids = np.array(sorted(int(k) for k in kps), np.int64)
    uv = np.array([kps[str(i)] for i in ids], np.float64).reshape(-1, 2)
    return draw_keypoints(big, (uv + 0.5) * scale - 0.5, ids, radius=scale + 1)


def half_turn_ids(shapes) -> dict[int, int]:
    """Semantic id -> the id a half turn about the vertical axis puts in its place: KeypointNet's bathtub and
    bed ids are positions in the canonical frame (id 0 of every bathtub at +x, -z), so each id's mean
    position (box-normalised, over ``shapes``) turned (x, z) -> (-x, -z) lands on its partner's."""
    from kpengine.geometry.transforms import bbox_centre

    pos: dict[int, list] = {}
    for s in shapes:
        c, e = bbox_centre(s.points), np.maximum((s.points.max(0) - s.points.min(0)) / 2, 1e-9)
        for p, sid in zip(s.keypoints, s.semantic_ids):
            pos.setdefault(int(sid), []).append((p - c) / e)
    ids = sorted(pos)
    means = np.array([np.mean(pos[i], 0) for i in ids])
    return {i: ids[int(np.argmin(np.linalg.norm(means - m * [-1, 1, -1], axis=1)))] for i, m in zip(ids, means)}


def either_end_pck(anns: dict, preds: dict, turn: dict[int, int], cat: str) -> tuple[float, float]:
    """PCK@0.1 (α_img, α_bbox) with each image's predictions relabelled by ``turn`` where that scores better."""
    hit_img = hit_box = n = 0.0
    for name, ann in anns.items():
        pred = preds.get(name, {})
        turned = {str(turn.get(int(k), int(k))): v for k, v in pred.items()}
        a, b = pck({name: ann}, {name: pred})[cat], pck({name: ann}, {name: turned})[cat]
        best = a if a["n"] == 0 or a["img@0.1"] >= b["img@0.1"] else b
        hit_img += best.get("img@0.1", 0.0) * best["n"] if best["n"] else 0.0
        hit_box += best.get("bbox@0.1", 0.0) * best["n"] if best["n"] else 0.0
        n += best["n"]
    return (hit_img / n, hit_box / n) if n else (float("nan"), float("nan"))


def runs_by(runs: list[str]) -> dict[tuple[str, str], str]:
    out = {}
    for r in runs:
        out[run_task(r)] = r
    return out


def true_viewpoint(item) -> Viewpoint:
    a = item.annotation
    return Viewpoint(a["azimuth"], a["elevation"], a["distance"], a["theta"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--test",
        required=True,
        help="render set of the test split (kpengine render-views --evaluation), or of --split val",
    )
    ap.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="split the images come from: test (the benchmark) or val (choosing a rule without the test shapes)",
    )
    ap.add_argument("--knowledge", required=True, help="KeypointNet root (its train split is the knowledge base)")
    ap.add_argument("--categories", nargs="+", default=["bathtub", "bed"])
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--per-category", type=int, default=None, help="a seeded subset of N test images per category")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--knowledge-limit",
        type=int,
        default=None,
        help="retrieve from a seeded subset of M train shapes (retrieval costs one fit per shape)",
    )
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--pose-hypotheses", type=int, default=POSE_HYPOTHESES, help="starts of the full pipeline")
    ap.add_argument("--fusion-sigma", type=float, default=FUSION_SIGMA, help="the fusion prior, x the mask box")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    by = runs_by(args.runs)
    results: dict = {"categories": {}, "variants": args.variants}
    t_start = time.perf_counter()
    load0 = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else None
    for cat in args.categories:
        items = load_render_views(args.test, cat)
        if any(it.annotation["split"] != args.split for it in items):
            raise SystemExit(f"{args.test}: {cat} has views outside the {args.split} split")
        n_all = len(items)
        if args.per_category is not None and args.per_category < len(items):
            pick = np.sort(np.random.default_rng(args.seed).choice(len(items), args.per_category, replace=False))
            items = [items[i] for i in pick]
        t0 = time.perf_counter()
        kb = KnowledgeBase.load(args.knowledge, cat, "train")
        template = mean_template(kb.shapes)  # the means over every train shape
        n_kb = len(kb.shapes)
        if args.knowledge_limit is not None and args.knowledge_limit < n_kb:
            keep = np.sort(np.random.default_rng(args.seed).choice(n_kb, args.knowledge_limit, replace=False))
            kb.shapes = [kb.shapes[i] for i in keep]
        held = {s.model_id for s in kb.shapes} & {it.annotation["model_id"] for it in items}
        if held:
            raise SystemExit(f"{len(held)} {args.split} shapes are in the knowledge split: not held out")
        for s in kb.shapes:  # surfaces once, outside the timings
            kb.mesh(s)
        test_kb = KnowledgeBase.load(args.knowledge, cat, args.split)  # the images' own shapes (gt_shape)
        test_shapes = {s.model_id: s for s in test_kb.shapes}
        template_kb = KnowledgeBase(kb.category, [template], kb.names)
        print(f"{cat}: knowledge {len(kb.shapes)} shapes ready in {time.perf_counter() - t0:.0f} s", flush=True)
        hm_run = by[("keypoint_heatmap", cat)]
        nets = Networks.from_runs([by[("viewpoint", cat)], by[("silhouette", cat)], hm_run], cat, args.knowledge)
        hm_net, hm_size = nets.heatmap, nets.heatmap_size
        anns = {it.name: annotation(it) for it in items}
        rows_of = [v for v in args.variants] + [f"{v}/3d" for v in args.variants if v not in ("heatmap", "full_3d")]
        preds: dict[str, dict] = {v: {} for v in rows_of}
        stats: dict[str, dict[str, list]] = {
            v: {"seconds": [], "iou": [], "az_err": [], "final_az_err": []} for v in rows_of
        }
        pictures = []
        for n, it in enumerate(items):
            for v in args.variants:
                t = time.perf_counter()
                if v == "heatmap":
                    kp = predict_keypoints(hm_net, it.image, hm_size)
                    preds[v][it.name] = {k: p["uv"] for k, p in kp.items()}
                    stats[v]["seconds"].append(time.perf_counter() - t)
                    continue
                knowledge = kb
                if v == "gt_shape":
                    knowledge = KnowledgeBase(kb.category, [test_shapes[it.annotation["model_id"]]], kb.names)
                elif v == "template":
                    knowledge = template_kb
                u = understand(
                    it.image,
                    knowledge,
                    nets,
                    mask=it.mask if v == "gt_mask" else None,
                    viewpoint_override=true_viewpoint(it) if v == "gt_view" else None,
                    refine=v != "no_refine",
                    steps=args.steps,
                    pose_hypotheses=1 if v == "full_1" else args.pose_hypotheses,
                    switch_margin=0.0 if v == "full_iou" else SWITCH_MARGIN,
                    fusion_sigma=args.fusion_sigma,
                    fusion="projection" if v == "full_3d" else "prior",
                    heatmap_choice=v != "full_place",
                    rechoose=v != "full_screen",
                )
                stats[v]["seconds"].append(time.perf_counter() - t)
                stats[v]["iou"].append(u.iou_refined)
                d = abs((u.viewpoint["azimuth"] - it.annotation["azimuth"] + 180) % 360 - 180)
                stats[v]["az_err"].append(d)
                fin = u.pose_json()["azimuth"]
                stats[v]["final_az_err"].append(abs((fin - it.annotation["azimuth"] + 180) % 360 - 180))
                preds[v][it.name] = {k: p["uv"] for k, p in u.keypoints.items() if p["uv"] is not None}
                if v == "full_3d":
                    continue
                preds[f"{v}/3d"][it.name] = {  # the same call's projections: the paper's keypoints
                    k: p.get("projected_uv", p["uv"])
                    for k, p in u.keypoints.items()
                    if p.get("source") != "heatmap" and p.get("projected_uv", p["uv"]) is not None
                }
                for key in stats[v]:
                    if key != "seconds":
                        stats[f"{v}/3d"][key].append(stats[v][key][-1])
                if v == "full" and len(pictures) < args.examples:
                    pictures.append((it, (u.mask, u.object_mask)))
            if (n + 1) % 10 == 0:
                print(f"{cat}: {n + 1}/{len(items)} images, {time.perf_counter() - t0:.0f} s", flush=True)
        rows = {}
        turn = half_turn_ids(kb.shapes)
        for v in rows_of:
            res = pck(anns, preds[v])[cat]
            st = stats[v]
            ee = either_end_pck(anns, preds[v], turn, cat)
            rows[v] = {
                **res,
                "either_end_img@0.1": ee[0],
                "either_end_bbox@0.1": ee[1],
                **({"median_seconds": float(np.median(st["seconds"]))} if st["seconds"] else {}),
                **({"mean_fitted_iou": float(np.mean(st["iou"]))} if st["iou"] else {}),
                **({"median_network_azimuth_error": float(np.median(st["az_err"]))} if st["az_err"] else {}),
                **(
                    {
                        "median_final_azimuth_error": float(np.median(st["final_az_err"])),
                        "final_flips_90": float(np.mean(np.array(st["final_az_err"]) > 90)),
                    }
                    if st["final_az_err"]
                    else {}
                ),
            }
            print(cat, v, json.dumps({k: round(x, 3) for k, x in rows[v].items()}), flush=True)
        results["categories"][cat] = {
            "images": len(items),
            "test_images": n_all,
            "knowledge_shapes": len(kb.shapes),
            "train_shapes": n_kb,
            "template": template.model_id,
            "rows": rows,
        }
        (out / f"predictions_{cat}.json").write_text(json.dumps(preds))
        if pictures and "heatmap" in args.variants:
            tiles = []
            for it, masks in pictures:
                kp = it.annotation["keypoints"]
                seen = {str(s): uv for s, uv, vis in zip(kp["semantic_ids"], kp["uv"], kp["visible"]) if vis}
                full = preds["full"][it.name]
                hm = preds["heatmap"][it.name]
                tiles += [
                    picture(it.image, {k: full[k] for k in seen if k in full}, masks=masks),
                    picture(it.image, {k: hm[k] for k in seen if k in hm}),
                    picture(it.image, seen),
                ]
            save_png(out / f"overlays_{cat}.png", tile(tiles, 6))
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "loadavg_start": load0,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else None,
        "seconds": time.perf_counter() - t_start,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "per_category": args.per_category,
        "seed": args.seed,
        "split": args.split,
        "runs": args.runs,
        "pose_hypotheses": args.pose_hypotheses,
        "switch_margin": SWITCH_MARGIN,
        "fusion_sigma": args.fusion_sigma,
        "steps": args.steps,
    }
    (out / "pck.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
