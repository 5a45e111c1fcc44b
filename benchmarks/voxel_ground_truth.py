"""Ground-truth voxels checked: mesh-filled vs cloud-filled grids of the same bathtubs (IoU), and a
PNG of a few to look at. python benchmarks/voxel_ground_truth.py ../shared/data/keypointnet OUT.png"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from kpengine.geometry.voxelize import voxelize_cloud, voxelize_mesh
from kpengine.image.reconstruct.data import shape_voxels
from kpengine.image.reconstruct.figures import plot_voxel_grids
from kpengine.io.mesh import load_mesh
from kpengine.io.pcd import load_pcd
from kpengine.metrics.shape3d import voxel_iou


def main(root: Path, out: Path) -> None:
    grids, titles, ious, secs = [], [], [], []
    for d in sorted((root / "meshes" / "02808440").iterdir()):
        pcd = root / "pcds" / "02808440" / f"{d.name}.pcd"
        if not pcd.is_file():
            continue
        t = time.perf_counter()
        m, _ = voxelize_mesh(load_mesh(d / "models" / "model_normalized.obj"), 32)
        secs.append(time.perf_counter() - t)
        c, _ = voxelize_cloud(load_pcd(pcd).points, 32)
        ious.append(float(voxel_iou(m, c)))
        print(f"bathtub {d.name}: mesh {m.sum()} voxels, cloud {c.sum()}, IoU {ious[-1]:.3f}")
        if len(grids) < 4:
            grids += [m, c]
            titles += [f"bathtub {d.name[:6]} mesh", f"{d.name[:6]} cloud (IoU {ious[-1]:.2f})"]
    print(
        f"mesh vs cloud IoU at 32^3 over {len(ious)} bathtubs: median {np.median(ious):.3f}, "
        f"min {min(ious):.3f}; mesh voxelization median {np.median(secs):.2f} s"
    )
    for mid in sorted(p.stem for p in (root / "pcds" / "02818832").iterdir())[:4]:
        g, src = shape_voxels(root, "bed", mid)
        grids.append(g)
        titles.append(f"bed {mid[:6]} ({src}, {g.sum()} voxels)")
    plot_voxel_grids(out, grids, titles, 4)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
