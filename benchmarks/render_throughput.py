"""Rendering throughput at 256x256 (depth + normals + silhouette + shaded colour): OpenGL (moderngl on
llvmpipe) vs Embree vs trimesh's NumPy ray tracer, meshes and splats.

    .venv/bin/python benchmarks/render_throughput.py [--mesh PATH] [--views 8] [--repeats 3] [--skip-numpy]

Reference for the mesh renderers: Embree, one view per call; for the splat renderers: the NumPy splatter.
Every renderer draws the same views of the same mesh in one run, interleaved repeat by repeat so that
a change in the machine's load hits them alike; medians of ``--repeats``. Also reports CPU seconds per
view (all threads of the process), which a shared machine's load disturbs less than wall time.
The NumPy ray tracer is timed on one view (it is far slower). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from kpengine.geometry.sampling import sample_surface
from kpengine.geometry.transforms import bbox_centre
from kpengine.io.mesh import load_mesh
from kpengine.render.cameras import Intrinsics, Viewpoint, fit_distance, make_camera
from kpengine.render.gl import GLMeshRenderer, GLSplatRenderer
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
    ap.add_argument("--skip-numpy", action="store_true", help="leave out trimesh's NumPy ray tracer (minutes)")
    args = ap.parse_args()
    mesh = load_mesh(args.mesh)
    k = Intrinsics.from_fov(256, 256, 30.0)
    center = bbox_centre(mesh.vertices)
    cams = [
        make_camera(Viewpoint(a, 20.0, fit_distance(0.5, k)), k, center)
        for a in np.linspace(0, 360, args.views, endpoint=False)
    ]
    cloud = sample_surface(mesh, 20000, seed=0).points
    t = time.perf_counter()
    embree = MeshRenderer(mesh)
    build = time.perf_counter() - t
    t = time.perf_counter()
    gl_mesh = GLMeshRenderer(mesh)
    gl_build = time.perf_counter() - t
    gl_splat = GLSplatRenderer(cloud)
    gl_surfel = GLSplatRenderer(cloud, oriented=True)
    gl_mesh.render(cams[0])  # the first call compiles the shaders and makes the context
    gl_splat.render(cams[0])
    gl_surfel.render(cams[0])
    runs = {
        "Embree ray casting, batch of views": lambda: embree.render_batch(cams),
        "Embree ray casting, one view per call": lambda: [embree.render(c) for c in cams],
        "OpenGL mesh (moderngl, EGL, llvmpipe)": lambda: [gl_mesh.render(c) for c in cams],
        "OpenGL mesh, no world locations": lambda: [gl_mesh.render(c, with_location=False) for c in cams],
        "point splats (20k surface samples), NumPy z-buffer": lambda: [render_points(cloud, c) for c in cams],
        "OpenGL splats (20k surface samples)": lambda: [gl_splat.render(c) for c in cams],
        "OpenGL oriented surfels (20k surface samples)": lambda: [gl_surfel.render(c) for c in cams],
    }
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    rows = [(name, len(cams) / float(np.median(wall[name])), float(np.median(cpu[name])) / len(cams)) for name in runs]
    if not args.skip_numpy:
        slow = MeshRenderer(mesh, backend="numpy")
        t0, c0 = time.perf_counter(), time.process_time()
        slow.render(cams[0])
        rows.append(
            ("trimesh pure-NumPy ray/triangle (1 view)", 1 / (time.perf_counter() - t0), time.process_time() - c0)
        )
    print(
        f"mesh {args.mesh}: {len(mesh.faces)} triangles; Embree BVH build {build * 1e3:.0f} ms; "
        f"GL upload {gl_build * 1e3:.0f} ms; load {os.getloadavg()}; {os.cpu_count()} CPUs"
    )
    base = dict((name, (vps, cpu_s)) for name, vps, cpu_s in rows)
    ref = {"splat": base["point splats (20k surface samples), NumPy z-buffer"]}
    ref["mesh"] = base["Embree ray casting, one view per call"]
    print("| renderer | views/s | vs reference (wall) | CPU ms/view | vs reference (CPU) |\n|---|---|---|---|---|")
    for name, vps, cpu_s in rows:
        r_vps, r_cpu = ref["splat" if ("splat" in name or "surfel" in name) else "mesh"]
        print(f"| {name} | {vps:.1f} | {vps / r_vps:.2f}x | {cpu_s * 1e3:.1f} | {r_cpu / cpu_s:.2f}x |")


if __name__ == "__main__":
    main()
