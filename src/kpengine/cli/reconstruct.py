"""``kpengine reconstruct``: a photo to a 3D mesh through 2.5D sketches and voxels (paper §4.2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RECONSTRUCT_HELP = """\
Reconstruct the object of a photo as a mesh: the sketch run predicts its 2.5D sketches
(silhouette, depth, camera-frame normals) on a crop around the object, the voxels run turns them
into an occupancy grid in the category's canonical frame (y up, model units, centred on the
shape), and marching cubes gives the mesh. --mask: the object mask (else the predicted
silhouette finds the object; one cut off by the photo's border is refused). Nothing is written
when a step fails. The last stdout line is JSON.

Train the two runs first (render sets from `kpengine render-views`):
  kpengine train --task sketch --data renders/train --category bathtub --out runs/sketch \\
      --epochs 20 --batch-size 32 --lr 2e-3 --config '{"val_data": "renders/val"}'
  kpengine train --task voxels --data renders/train --category bathtub --out runs/voxels \\
      --epochs 20 --batch-size 32 --lr 2e-3 \\
      --config '{"shapes": "../shared/data/keypointnet", "val_data": "renders/val"}'

A back-projecting voxels run ("backproject": true, either observation) also needs the photo's
viewpoint and camera: add a viewpoint run to --runs (with --mask), else the sketch run's viewpoint head
is used; the intrinsics come from --fov (the photo's horizontal field of view) and the object's
distance from the category's mean shape fitted to the silhouette's box. Several voxels runs (e.g. the
default and a cone run): their occupancy probabilities are averaged (docs/reconstruction.md, sixth pass).

Example:
  kpengine reconstruct --runs runs/sketch runs/voxels --image photo.png --mask photo_mask.png \\
      --out tub.obj --voxels tub.npy --png tub.png
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="photo -> 2.5D sketches -> voxels -> mesh", description=RECONSTRUCT_HELP)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--runs", required=True, nargs="+", metavar="RUN_DIR", help="sketch, voxels [viewpoint] runs")
    p.add_argument("--image", required=True, metavar="PHOTO")
    p.add_argument("--mask", metavar="MASK", help="object mask, same size as the photo")
    p.add_argument("--category", metavar="NAME", help="the photo's category (needed with a multi-category voxels run)")
    p.add_argument("--threshold", type=float, default=0.5, help="occupancy level of the surface (default 0.5)")
    p.add_argument("--fov", type=float, default=30.0, help="the photo's horizontal field of view (degrees), for a "
                   "backproject run (default 30)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="MESH.obj", help="mesh file (.obj, .ply, .off, ...)")
    p.add_argument("--voxels", metavar="V.npy", help="also write the occupancy probabilities (R, R, R)")
    p.add_argument("--png", metavar="P.png", help="also write the crop and its predicted sketches")
    p.set_defaults(func=cmd_reconstruct)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import time

    import torch

    from kpengine.categories import resolve_category
    from kpengine.errors import DataError
    from kpengine.image.pipeline import run_task
    from kpengine.image.reconstruct.photo import load_network, reconstruct_photo, sketch_picture
    from kpengine.io.image import load_image, load_mask, save_image
    from kpengine.io.mesh import save_mesh
    from kpengine.io.voxels import save_voxels

    torch.set_num_threads(1)
    by_task: dict[str, str] = {}
    voxel_runs: list[str] = []  # several: their probabilities averaged
    for run in args.runs:
        task, _ = run_task(run)
        if task not in ("sketch", "voxels", "viewpoint"):
            raise DataError(f"a {task} run; reconstruct takes a sketch run, a voxels run and a viewpoint run",
                            path=run)  # fmt: skip
        if task in by_task and task != "voxels":
            raise DataError(f"two {task} runs given ({by_task[task]} and {run}); pass one", path=run)
        by_task[task] = run
        voxel_runs += [run] if task == "voxels" else []
    missing = [t for t in ("sketch", "voxels") if t not in by_task]
    if missing:
        raise DataError(f"--runs lacks a {' and a '.join(missing)} run")
    category = resolve_category(args.category).name if args.category else None
    sketch_net = load_network(by_task["sketch"], "sketch", category=category)
    voxel_nets = [load_network(v, "voxels", category=category) for v in voxel_runs]
    for run, net in zip(voxel_runs, voxel_nets):
        if sketch_net.config["size"] != net.config["size"]:
            raise DataError(
                f"the sketch run predicts {sketch_net.config['size']} px sketches; the voxels run reads "
                f"{net.config['size']} px",
                path=run,
            )
    image = load_image(args.image)
    mask = load_mask(args.mask, expected_shape=image.shape[:2]) if args.mask else None
    viewpoint = None
    if "viewpoint" in by_task:
        from kpengine.image.pipeline import estimate_viewpoint, load_image_run

        if mask is None:
            raise DataError("a viewpoint run reads the object's crop: give --mask with it", path=by_task["viewpoint"])
        vp_net = load_image_run(by_task["viewpoint"], "viewpoint", category)[0].eval()
        viewpoint = estimate_viewpoint(vp_net, image, mask)
    t = time.perf_counter()
    r = reconstruct_photo(image, sketch_net, voxel_nets, mask, args.threshold, category=category,
                          viewpoint=viewpoint, fov=args.fov)  # fmt: skip
    seconds = time.perf_counter() - t
    # everything computed: now write
    save_mesh(args.out, r.mesh)
    if args.voxels:
        save_voxels(args.voxels, r.voxels)
    if args.png:
        save_image(args.png, sketch_picture(r))
    print(json.dumps({
        "out": str(Path(args.out)),
        "vertices": len(r.mesh.vertices),
        "faces": len(r.mesh.faces),
        "resolution": r.grid.resolution,
        "occupied": int((r.voxels > args.threshold).sum()),
        "seconds": round(seconds, 3),
        "voxels_runs": len(voxel_nets),
        **({"viewpoint": {k: round(float(v), 2) for k, v in r.view_used.items() if k in ("azimuth", "elevation")},
            "camera": [round(float(v), 4) for v in r.camera]} if r.camera is not None else {}),
    }))  # fmt: skip
    return 0
