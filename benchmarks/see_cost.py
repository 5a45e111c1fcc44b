"""Cost of `understand` on one photo: median wall and CPU seconds per stage over repeats, with the load.

    python benchmarks/see_cost.py --image PHOTO --mask MASK --category chair --knowledge ROOT \
        --runs RUN... [--split all] [--repeats 5] [--pose-hypotheses 1 4] [--fusion prior projection]

Networks and knowledge base are loaded once (as a server would); each repeat runs the whole
pipeline. CPU seconds (``time.process_time``) are what the photo costs; wall seconds on a shared
machine also carry everyone else's load (printed beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from kpengine.image.fusion import FUSION_MODES
from kpengine.image.pipeline import KnowledgeBase, Networks, understand
from kpengine.image.poses import POSE_HYPOTHESES
from kpengine.io.image import load_image, load_mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True)
    ap.add_argument("--mask")
    ap.add_argument("--category", required=True)
    ap.add_argument("--knowledge", required=True)
    ap.add_argument("--split", default="all")
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument(
        "--pose-hypotheses",
        type=int,
        nargs="+",
        default=[POSE_HYPOTHESES],
        help="one or more counts of starting viewpoints, measured side by side (interleaved repeats)",
    )
    ap.add_argument(
        "--fusion",
        nargs="+",
        default=["prior"],
        choices=FUSION_MODES,
        help="with a keypoint-heatmap run among --runs: fused keypoints (default) and/or the projections alone, "
        "measured side by side (interleaved repeats)",
    )
    ap.add_argument(
        "--rule",
        nargs="+",
        default=["rechoose"],
        choices=["rechoose", "screen"],
        help="the pose choice: a challenger finished beside the first start before choosing (default) and/or the "
        "screen deciding alone (the sixth session's rule), measured side by side (interleaved repeats)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    image = load_image(args.image)
    mask = load_mask(args.mask, expected_shape=image.shape[:2]) if args.mask else None
    kb = KnowledgeBase.load(args.knowledge, args.category, args.split)
    nets = Networks.from_runs(args.runs, args.category, args.knowledge)
    understand(image, kb, nets, mask=mask, steps=args.steps)  # warm: meshes loaded, allocator warm
    # one setting per (starts, fusion, rule); a key reads "4" (the defaults), "4/projection", "4/screen"
    counts = [(n, f, r) for n in args.pose_hypotheses for f in args.fusion for r in args.rule]

    def key(n: int, f: str, r: str) -> str:
        return "/".join([str(n)] + ([f] if f != "prior" else []) + ([r] if r != "rechoose" else []))

    wall: dict[str, list] = {key(*c): [] for c in counts}
    cpu: dict[str, list] = {key(*c): [] for c in counts}
    stages: dict[str, list] = {key(*c): [] for c in counts}
    tried: dict[str, int] = {}
    finished: dict[str, int] = {}
    loads = []
    for _ in range(args.repeats):  # interleaved, so that every setting sees the same load
        loads.append(os.getloadavg()[0])
        for n, f, r in counts:
            k = key(n, f, r)
            t, c = time.perf_counter(), time.process_time()
            u = understand(
                image, kb, nets, mask=mask, steps=args.steps, pose_hypotheses=n, fusion=f, rechoose=r == "rechoose"
            )
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
            stages[k].append(u.seconds)
            tried[k] = len(u.hypotheses)
            finished[k] = sum(h.finished for h in u.hypotheses)
    out = {
        "image": args.image,
        "size": list(image.shape[:2]),
        "knowledge_shapes": len(kb.shapes),
        "steps": args.steps,
        "heatmap_run": nets.heatmap is not None,
        "by_pose_hypotheses": {
            k: {
                "hypotheses_tried": tried[k],
                "hypotheses_finished": finished[k],
                "median_wall_s": float(np.median(wall[k])),
                "median_cpu_s": float(np.median(cpu[k])),
                "median_stage_wall_s": {st: float(np.median([s[st] for s in stages[k]])) for st in stages[k][0]},
            }
            for k in wall
        },
        "loadavg_1m": [round(v, 1) for v in loads],
        "cores": os.cpu_count(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
