"""Hand-written geometry conventions vs library versions, side by side in one run (issue 10c).

1. so(3): ``geometry.transforms.so3_exp`` (``matrix_exp`` of the skew matrix) vs kornia's
   ``axis_angle_to_rotation_matrix`` (Rodrigues), at the sizes pose refinement uses (one
   rotation vector per step, forward + backward), and their values and gradients at 0.
2. Rotations of keypoints / clouds about y: NumPy ``rotate_about_y`` vs kornia through torch.
3. Farthest point sampling: ``learn.backbones.pointnet2.farthest_point_sample`` (vectorised
   torch, batch at once) vs ``fpsample.fps_sampling`` (C++, one cloud at a time), at the
   PointNet++ sizes (batch 8, 2048 -> 512 and 512 -> 128 points), and whether they pick the
   same points.

    python benchmarks/conventions.py --repeats 20 [--data ../shared/data/keypointnet] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def so3(repeats: int) -> dict:
    from kornia.geometry.conversions import axis_angle_to_rotation_matrix, vector_to_skew_symmetric_matrix

    from kpengine.geometry.transforms import skew, so3_exp

    rng = np.random.default_rng(0)
    ws = torch.from_numpy(rng.normal(scale=0.3, size=(1000, 3)))
    ours = torch.stack([so3_exp(w) for w in ws])
    theirs = axis_angle_to_rotation_matrix(ws)
    skew_diff = float((torch.stack([skew(w) for w in ws]) - vector_to_skew_symmetric_matrix(ws)).abs().max())

    target = torch.from_numpy(rng.normal(size=(3, 3)))

    def grad_at_zero(f):
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        (f(w) * target).sum().backward()
        return w.grad

    g_ours = grad_at_zero(so3_exp)
    g_theirs = grad_at_zero(lambda w: axis_angle_to_rotation_matrix(w[None])[0])

    def step(f):
        w = torch.full((3,), 0.01, dtype=torch.float64, requires_grad=True)
        f(w).sum().backward()

    return {
        "max_abs_difference_1000_random": float((ours - theirs).abs().max()),
        "skew_max_abs_difference": skew_diff,
        "grad_at_zero_max_abs_difference": float((g_ours - g_theirs).abs().max()),
        "ms_per_step_ours": _median_ms(lambda: [step(so3_exp) for _ in range(100)], repeats) / 100,
        "ms_per_step_kornia": _median_ms(
            lambda: [step(lambda w: axis_angle_to_rotation_matrix(w[None])[0]) for _ in range(100)], repeats
        )
        / 100,
    }


def rotations(repeats: int) -> dict:
    from kornia.geometry.conversions import axis_angle_to_rotation_matrix

    from kpengine.geometry.transforms import rotate_about_y

    rng = np.random.default_rng(1)
    out = {}
    for name, n in (("keypoints_20", 20), ("cloud_2048", 2048)):
        pts, centre = rng.normal(size=(n, 3)), rng.normal(size=3)

        def kornia_turn(pts=pts, centre=centre):
            r = axis_angle_to_rotation_matrix(torch.tensor([[0.0, 0.7, 0.0]], dtype=torch.float64))[0]
            p, c = torch.from_numpy(pts), torch.from_numpy(centre)
            return ((p - c) @ r.T + c).numpy()

        out[name] = {
            "max_abs_difference": float(np.abs(rotate_about_y(pts, 0.7, centre) - kornia_turn()).max()),
            "ms_numpy": _median_ms(lambda pts=pts, centre=centre: rotate_about_y(pts, 0.7, centre), repeats),
            "ms_kornia": _median_ms(kornia_turn, repeats),
        }
    return out


def fps(repeats: int) -> dict:
    from kpengine.learn.backbones.pointnet2 import farthest_point_sample, farthest_point_sample_torch

    rng = np.random.default_rng(2)
    out = {}
    for n, s in ((2048, 512), (512, 128)):
        xyz = torch.from_numpy(rng.uniform(-0.5, 0.5, size=(8, n, 3)).astype(np.float32))

        def theirs(xyz=xyz, s=s):  # fpsample as pointnet2 calls it (reversed cloud: first-index ties)
            return farthest_point_sample(xyz, s)

        a, b = farthest_point_sample_torch(xyz, s), theirs()
        out[f"B8_{n}_to_{s}"] = {
            "identical_indices": bool(torch.equal(a, b)),
            "same_sets_fraction": float(np.mean([set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b)])),
            "ms_torch": _median_ms(lambda xyz=xyz, s=s: farthest_point_sample_torch(xyz, s), repeats),
            "ms_fpsample": _median_ms(theirs, repeats),
        }
    return out


def fps_real(data: str, per_synset: int = 120) -> dict:
    """Whether both FPS pick the same points on real KeypointNet clouds (bathtub, bed), both levels."""
    from pathlib import Path

    from kpengine.io.pcd import load_pcd
    from kpengine.learn.backbones.pointnet2 import farthest_point_sample, farthest_point_sample_torch, gather_points

    files = [
        f for syn in ("02808440", "02818832") for f in sorted((Path(data) / "pcds" / syn).glob("*.pcd"))[:per_synset]
    ]
    same = total = 0
    for k in range(0, len(files), 8):
        xyz = torch.from_numpy(np.stack([load_pcd(f).points.astype(np.float32) for f in files[k : k + 8]]))
        for s in (512, 128):
            a, b = farthest_point_sample_torch(xyz, s), farthest_point_sample(xyz, s)
            same, total = same + int((a == b).all(dim=1).sum()), total + len(a)
            xyz = gather_points(xyz, a)
    return {"clouds": len(files), "fps_calls": total, "identical_index_rows": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--data", help="KeypointNet root (../shared/data/keypointnet): FPS agreement on real clouds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, torch 1 thread",
        "so3": so3(args.repeats),
        "rotate_about_y": rotations(args.repeats),
        "fps": fps(args.repeats),
    }
    if args.data:
        res["fps_real_clouds"] = fps_real(args.data)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
