"""Photo commands (paper §4): viewpoint (the viewpoint network on photos) and understand (photo -> pixel semantics)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VIEWPOINT_HELP = """\
Estimate each photo's viewpoint with a trained viewpoint run (kpengine train --task viewpoint).
The object is cropped by its mask's box when --masks are given, else the whole photo is taken
as the object's box (the object centred and filling the photo). Writes
{"<image>": {"azimuth": deg, "elevation": deg, "theta": deg, "confidence": p}}: angles in
kpengine's camera convention (docs/rendering.md: azimuth 0 looks at a ShapeNet object's back,
180 at its front), theta 0 (not estimated by the network; `understand` refines it), confidence
in [0, 1] (the azimuth distribution's mean resultant length: low when front and back compete).
"""

UNDERSTAND_HELP = """\
From one photo to pixel-level semantics (You et al. §4): the object mask (given, or the
silhouette run's), the viewpoint (the viewpoint run), the nearest annotated shapes of the
knowledge base (silhouette IoU at that viewpoint), semantic keypoints on the shape (an embedding
run's transfer, or the shape's own annotation), the pose refined against the mask with the soft
silhouette (--steps, the paper's ~20), and projection with visibility. Writes in OUT_DIR:
  keypoints.json  {"<semantic_id>": {"uv": [u, v], "visible": bool, "confidence": p, "name": str}}
  pose.json       camera, azimuth/elevation/theta/distance, the network's estimate, retrieved shapes, timings
  semantics.png   the fitted shape's semantic regions; overlay.png  the photo with keypoints and outlines
  (mask.png when the mask was predicted; embedding.png/.npy with an embedding run)

--shape reconstruct takes the shape from the photo itself (a sketch run and a voxels run among
--runs: 2.5D sketches -> voxels -> marching cubes, docs/reconstruction.md); the keypoints of the
nearest knowledge shape (or an embedding run's transfer) go onto the reconstructed surface, then
the same pose refinement and projection. --shape both poses the retrieved and the reconstructed
shape and keeps the better fit to the mask. --viewpoint-from sketches reads the viewpoint off the
predicted 2.5D sketches (the voxels run's head) instead of the RGB crop (the paper's Table 5).

Pose hypotheses: near-symmetric objects (bathtubs, beds, cars) split the viewpoint network's azimuth
distribution between a view and its half turn. --pose-hypotheses N starts the refinement from the
distribution's modes and their half turns (N in all), refines each a few steps, keeps the most
probable unless another's silhouette fits the mask better by more than 0.05 IoU (on bathtubs and
beds the silhouette cannot tell a view from its half turn; on a chair it can); such a challenger
is finished beside the most probable start and must win again on the finished poses (one the
heatmap's vote chose within the margin is finished alone).
pose.json lists every start with its IoU (and "finished") and gives pose_confidence, the chosen start's share of
the network's probability, which also scales each keypoint's confidence. docs/understanding.md.

2D-3D fusion: with a keypoint-heatmap run among --runs (kpengine train --task keypoint-heatmap),
each projected keypoint moves to the heatmap's arg-max under a Gaussian prior around the
projection (--fusion-sigma x the object box's long side: the 3D route says which corner, the
heatmap exactly where), and the ids the retrieved shape lacks come from the heatmap alone.
keypoints.json then gives each id's "source" (fused / heatmap) and "projected_uv". --fusion
projection keeps the projections (the paper). A departure from the paper: docs/understanding.md.

Example (generated sample data):
  kpengine understand --image photo.png --category chair --knowledge sample/ \\
      --runs runs/viewpoint runs/silhouette --out understood/
  kpengine understand --image photo.png --category bathtub --knowledge keypointnet/ \\
      --runs runs/vp_bathtub runs/sil_bathtub runs/hm_bathtub --out understood/   # fused keypoints
"""


#: kept in step with kpengine.image.poses.POSE_HYPOTHESES and kpengine.image.fusion.FUSION_SIGMA (not imported:
#: the CLI imports heavy modules lazily)
POSE_HYPOTHESES = 4
FUSION_SIGMA = 0.1


def register(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("viewpoint", help="azimuth/elevation/confidence of photos from a viewpoint run",
                       description=VIEWPOINT_HELP, formatter_class=fmt)  # fmt: skip
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a viewpoint run")
    p.add_argument("--images", required=True, nargs="+", metavar="PATH")
    p.add_argument("--masks", nargs="+", metavar="PATH", help="one object mask per image (same order)")
    p.add_argument("--out", required=True, metavar="V.json", help="- for stdout")
    p.set_defaults(func=cmd_viewpoint)

    p = sub.add_parser("understand", help="photo -> viewpoint, shape, pose, 2D keypoints and pixel semantics",
                       description=UNDERSTAND_HELP, formatter_class=fmt)  # fmt: skip
    p.add_argument("--image", required=True, metavar="PHOTO")
    p.add_argument("--mask", metavar="MASK", help="object mask (else the silhouette run predicts it)")
    p.add_argument("--category", required=True, metavar="NAME")
    p.add_argument(
        "--knowledge", required=True, metavar="ROOT", help="annotated shapes with meshes (KeypointNet layout)"
    )
    p.add_argument("--split", default="train", help="which annotated shapes to retrieve from (default train)")
    p.add_argument("--runs", required=True, nargs="+", metavar="RUN_DIR",
                   help="a viewpoint run; also silhouette, keypoint-heatmap, embedding, image-embedding, sketch, "
                        "voxels")  # fmt: skip
    p.add_argument(
        "--shape",
        default="retrieve",
        choices=("retrieve", "reconstruct", "both"),
        help="where the shape comes from (default retrieve; reconstruct/both need sketch and voxels runs)",
    )
    p.add_argument(
        "--viewpoint-from",
        default="rgb",
        choices=("rgb", "sketches"),
        help="the viewpoint from the RGB crop (default) or from the predicted 2.5D sketches",
    )
    p.add_argument(
        "--retrieval",
        default="silhouette",
        choices=("silhouette", "embedding"),
        help="rank shapes by mask IoU at the estimated view (default) or by the joint embedding "
        "(needs an image-embedding run among --runs; kpengine retrieve --help)",
    )
    p.add_argument("--steps", type=int, default=20, help="pose refinement steps (0 = none; default 20, the paper's)")
    p.add_argument("--top", type=int, default=3, help="retrieved shapes listed in pose.json (default 3)")
    p.add_argument(
        "--pose-hypotheses",
        type=int,
        default=POSE_HYPOTHESES,
        metavar="N",
        help="starting viewpoints refined: the azimuth distribution's modes and their half turns, each "
        f"screened a few steps, one finished (default {POSE_HYPOTHESES}; 1 = the network's "
        "estimate only, the paper's single refinement)",
    )
    p.add_argument(
        "--fusion",
        default="prior",
        choices=("prior", "projection"),
        help="with a keypoint-heatmap run: fuse each projection with the heatmap (default prior) or keep the "
        "projections (the paper)",
    )
    p.add_argument(
        "--fusion-sigma",
        type=float,
        default=FUSION_SIGMA,
        metavar="F",
        help=f"the fusion prior's standard deviation, a fraction of the object box's long side "
        f"(default {FUSION_SIGMA})",
    )
    p.add_argument(
        "--heatmap-choice",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with a keypoint-heatmap run: let the heatmap's agreement join the silhouette in choosing the pose "
        "hypothesis (default on; --no-heatmap-choice: the silhouette alone, the heatmap only places keypoints)",
    )
    p.add_argument("--out", required=True, metavar="OUT_DIR")
    p.set_defaults(func=cmd_understand)


def cmd_viewpoint(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from kpengine.cli.common import emit_json
    from kpengine.errors import DataError
    from kpengine.image.pipeline import estimate_viewpoint, load_image_run
    from kpengine.io.image import load_image, load_mask

    torch.set_num_threads(1)
    if args.masks and len(args.masks) != len(args.images):
        raise DataError(f"{len(args.masks)} masks for {len(args.images)} images: give one mask per image")
    model, _ = load_image_run(args.run, "viewpoint")
    out = {}
    for k, path in enumerate(args.images):
        image = load_image(path)
        if args.masks:
            mask = load_mask(args.masks[k], expected_shape=image.shape[:2])
        else:
            mask = np.ones(image.shape[:2], bool)
        v = estimate_viewpoint(model, image, mask)
        out[str(path)] = {key: round(v[key], 3) for key in ("azimuth", "elevation", "theta", "confidence")}
    emit_json(out, args.out)
    return 0


def cmd_understand(args: argparse.Namespace) -> int:
    import time

    import torch

    from kpengine.categories import resolve_category
    from kpengine.image.pipeline import KnowledgeBase, Networks, understand, write_understanding
    from kpengine.io.image import load_image, load_mask

    torch.set_num_threads(1)
    category = resolve_category(args.category).name
    image = load_image(args.image)
    mask = load_mask(args.mask, expected_shape=image.shape[:2]) if args.mask else None
    # the reconstruction route needs no knowledge meshes: cloud-only shapes give it their keypoints
    knowledge = KnowledgeBase.load(args.knowledge, category, args.split, require_meshes=args.shape != "reconstruct")
    nets = Networks.from_runs(args.runs, category, args.knowledge)
    t = time.perf_counter()
    result = understand(image, knowledge, nets, mask=mask, steps=args.steps, top=args.top, shape_route=args.shape,
                        viewpoint_source=args.viewpoint_from, retrieval=args.retrieval,
                        pose_hypotheses=args.pose_hypotheses, fusion=args.fusion,
                        fusion_sigma=args.fusion_sigma, heatmap_choice=args.heatmap_choice)  # fmt: skip
    result.seconds["total"] = time.perf_counter() - t
    written = write_understanding(result, args.out)
    pose = result.pose_json()
    print(json.dumps({
        "out": str(Path(args.out)),
        "files": [p.name for p in written],
        "model_id": pose["model_id"],
        "shape_source": pose["shape_source"],
        "azimuth": round(pose["azimuth"], 1),
        "elevation": round(pose["elevation"], 1),
        "iou": round(result.iou_refined, 3),
        "visible_keypoints": sum(v["visible"] for v in result.keypoints.values()),
        "seconds": round(result.seconds["total"], 2),
    }))  # fmt: skip
    return 0
