"""Cost of `understand` on one photo: median wall and CPU seconds per stage over repeats, with the load.

    python benchmarks/see_cost.py --image PHOTO --mask MASK --category chair --knowledge ROOT \
        --runs RUN... [--split all] [--repeats 5] [--pose-hypotheses 1 4]

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

from kpengine.image.pipeline import POSE_HYPOTHESES, KnowledgeBase, Networks, understand
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
    args = ap.parse_args()
    torch.set_num_threads(1)
    image = load_image(args.image)
    mask = load_mask(args.mask, expected_shape=image.shape[:2]) if args.mask else None
    kb = KnowledgeBase.load(args.knowledge, args.category, args.split)
    nets = Networks.from_runs(args.runs, args.category, args.knowledge)
    understand(image, kb, nets, mask=mask, steps=args.steps)  # warm: meshes loaded, allocator warm
    counts = args.pose_hypotheses
    wall: dict[int, list] = {n: [] for n in counts}
    cpu: dict[int, list] = {n: [] for n in counts}
    stages: dict[int, list] = {n: [] for n in counts}
    tried: dict[int, int] = {}
    loads = []
    for _ in range(args.repeats):  # interleaved, so that every count sees the same load
        loads.append(os.getloadavg()[0])
        for n in counts:
            t, c = time.perf_counter(), time.process_time()
            u = understand(image, kb, nets, mask=mask, steps=args.steps, pose_hypotheses=n)
            wall[n].append(time.perf_counter() - t)
            cpu[n].append(time.process_time() - c)
            stages[n].append(u.seconds)
            tried[n] = len(u.hypotheses)
    out = {
        "image": args.image,
        "size": list(image.shape[:2]),
        "knowledge_shapes": len(kb.shapes),
        "steps": args.steps,
        "by_pose_hypotheses": {
            str(n): {
                "hypotheses_tried": tried[n],
                "median_wall_s": float(np.median(wall[n])),
                "median_cpu_s": float(np.median(cpu[n])),
                "median_stage_wall_s": {k: float(np.median([s[k] for s in stages[n]])) for k in stages[n][0]},
            }
            for n in counts
        },
        "loadavg_1m": [round(v, 1) for v in loads],
        "cores": os.cpu_count(),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
