"""Rendering throughput at 256x256 (depth + normals + silhouette): Embree vs trimesh's NumPy ray tracer vs splats.

    .venv/bin/python benchmarks/render_throughput.py [--mesh PATH] [--views 8] [--repeats 3]

Every renderer draws the same views of the same mesh in one run; medians of ``--repeats``.
The NumPy ray tracer is timed on one view (it is far slower). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from kpengine.geometry.sampling import sample_surface
from kpengine.io.mesh import load_mesh
from kpengine.render.cameras import Intrinsics, Viewpoint, fit_distance, make_camera
from kpengine.render.raycast import MeshRenderer
from kpengine.render.splat import render_points

DEFAULT = (
    Path(__file__).resolve().parents[2]
    / "shared/data/keypointnet/meshes/02808440/bc98f11895cecfeb3321831d2245cf06/models/model_normalized.obj"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh", default=str(DEFAULT))
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    mesh = load_mesh(args.mesh)
    k = Intrinsics.from_fov(256, 256, 30.0)
    center = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    cams = [
        make_camera(Viewpoint(a, 20.0, fit_distance(0.5, k)), k, center)
        for a in np.linspace(0, 360, args.views, endpoint=False)
    ]
    cloud = sample_surface(mesh, 20000, seed=0).points
    rows = []
    t = time.perf_counter()
    embree = MeshRenderer(mesh)
    build = time.perf_counter() - t

    def timed(fn, n_views: int) -> float:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return n_views / float(np.median(times))

    rows.append(("Embree ray casting, batch of views", timed(lambda: embree.render_batch(cams), len(cams))))
    rows.append(("Embree ray casting, one view per call", timed(lambda: [embree.render(c) for c in cams], len(cams))))
    rows.append(
        (
            "point splats (20k surface samples), NumPy z-buffer",
            timed(lambda: [render_points(cloud, c) for c in cams], len(cams)),
        )
    )
    slow = MeshRenderer(mesh, backend="numpy")
    reps, args.repeats = args.repeats, 1
    rows.append(("trimesh pure-NumPy ray/triangle (1 view)", timed(lambda: slow.render(cams[0]), 1)))
    args.repeats = reps
    print(f"mesh {args.mesh}: {len(mesh.faces)} triangles; BVH build {build * 1e3:.0f} ms; load {os.getloadavg()}")
    print("| renderer | views/s | vs Embree batch |\n|---|---|---|")
    for name, vps in rows:
        print(f"| {name} | {vps:.2f} | {vps / rows[0][1]:.3f}x |")


if __name__ == "__main__":
    main()
