"""The soft rasteriser: exact hard silhouette at 0.5, gradients (gradcheck), and pose refinement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kpengine.errors import DataError
from kpengine.io.mesh import Mesh
from kpengine.render.cameras import Intrinsics, Viewpoint, make_camera, rt_to_viewpoint
from kpengine.render.raycast import MeshRenderer
from kpengine.render.refine import PoseRefiner
from kpengine.render.soft import project_torch, simplify, soft_silhouette


def boxes(specs: list[tuple[tuple[float, float, float], tuple[float, float, float]]]) -> Mesh:
    """Union of axis-aligned boxes given as (centre, size): an asymmetric test object."""
    import trimesh

    parts = [trimesh.creation.box(extents=size).apply_translation(centre) for centre, size in specs]
    m = trimesh.util.concatenate(parts)
    return Mesh(np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64))


def l_shape() -> Mesh:
    return boxes(
        [
            ((0.0, 0.0, 0.0), (0.5, 0.12, 0.3)),
            ((0.19, 0.2, 0.0), (0.12, 0.3, 0.3)),
            ((-0.2, -0.15, 0.1), (0.1, 0.2, 0.1)),
        ]
    )


def test_soft_silhouette_thresholds_to_the_hard_one() -> None:
    mesh = l_shape()
    k = Intrinsics.from_fov(40, 40, 40.0)
    cam = make_camera(Viewpoint(35.0, 25.0, 1.6), k)
    hard = MeshRenderer(mesh).render(cam).mask
    uv = project_torch(
        torch.from_numpy(mesh.vertices), torch.from_numpy(cam.R), torch.from_numpy(cam.t), k.fx, k.fy, k.cx, k.cy
    )
    soft = soft_silhouette(uv[torch.from_numpy(mesh.faces)], 40, 40, sigma=0.2).numpy()
    assert ((soft > 0.5) == hard).mean() > 0.99
    assert soft.min() >= 0 and soft.max() <= 1


def test_gradcheck_on_a_tiny_case() -> None:
    tri = torch.tensor(
        [[[2.3, 1.7], [6.6, 2.4], [3.1, 6.2]], [[5.2, 5.1], [7.4, 6.3], [6.1, 7.6]]], dtype=torch.float64
    )
    tri.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: soft_silhouette(x, 9, 9, sigma=1.5), (tri,), eps=1e-6, atol=1e-5)
    tri.grad = None
    soft_silhouette(tri, 9, 9).sum().backward()
    assert tri.grad is not None and tri.grad.abs().sum() > 0


def test_gradients_reach_the_camera() -> None:
    mesh = l_shape()
    k = Intrinsics.from_fov(24, 24, 40.0)
    cam = make_camera(Viewpoint(10.0, 10.0, 1.6), k)
    R = torch.from_numpy(cam.R).requires_grad_(True)
    t = torch.from_numpy(cam.t).requires_grad_(True)
    uv = project_torch(torch.from_numpy(mesh.vertices), R, t, k.fx, k.fy, k.cx, k.cy)
    soft_silhouette(uv[torch.from_numpy(mesh.faces)], 24, 24).sum().backward()
    assert t.grad[2] < 0  # moving away shrinks the silhouette
    assert torch.isfinite(R.grad).all() and R.grad.abs().sum() > 0


def test_refinement_recovers_a_perturbed_pose() -> None:
    mesh = l_shape()
    k = Intrinsics.from_fov(96, 96, 35.0)
    true = Viewpoint(40.0, 20.0, 1.8)
    mask = MeshRenderer(mesh).render(make_camera(true, k)).mask
    refiner = PoseRefiner(mesh)
    start = make_camera(Viewpoint(52.0, 28.0, 2.0, 4.0), k)
    result = refiner.refine(mask, start, steps=40, size=48)
    got = rt_to_viewpoint(result.camera.R, result.camera.t, refiner.center)
    assert result.iou_after > max(0.84, result.iou_before + 0.1)
    assert abs(got.azimuth - 40.0) < 4 and abs(got.elevation - 20.0) < 4 and abs(got.distance - 1.8) < 0.09
    assert abs(got.theta) < 4


def test_refinement_rejects_bad_masks() -> None:
    refiner = PoseRefiner(l_shape())
    cam = make_camera(Viewpoint(0.0, 0.0, 2.0), Intrinsics.from_fov(32, 32))
    with pytest.raises(DataError, match="photo_mask.png.*camera is 32x32"):
        refiner.refine(np.ones((16, 32), bool), cam, mask_name="photo_mask.png")
    with pytest.raises(DataError, match="empty"):
        refiner.refine(np.zeros((32, 32), bool), cam)


def test_simplify_keeps_the_silhouette() -> None:
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.4)
    mesh = Mesh(np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64))
    small = simplify(mesh, 800)
    assert len(small.faces) <= 800
    cam = make_camera(Viewpoint(0.0, 0.0, 2.0), Intrinsics.from_fov(48, 48))
    a, b = MeshRenderer(mesh).render(cam).mask, MeshRenderer(small).render(cam).mask
    assert (a & b).sum() / (a | b).sum() > 0.95


def test_coarse_search_finds_the_bin_and_fit_recovers_the_focal_length() -> None:
    from kpengine.render.refine import coarse_search, fit_pose_to_mask

    mesh = l_shape()
    k = Intrinsics.from_fov(80, 80, 40.0)
    true = Viewpoint(97.5, 22.5, 1.9)  # a bin centre
    mask = MeshRenderer(mesh).render(make_camera(true, k)).mask
    best = coarse_search(mesh, mask, center=np.zeros(3), fovs=(40.0,), size=40, keep=3)[0]
    assert (best.azimuth, best.elevation) == (97.5, 22.5) and best.iou > 0.9
    fit, _, _ = fit_pose_to_mask(mesh, mask, center=np.zeros(3), fovs=(30.0,), keep=1, steps=40, size=48)
    assert fit.iou_after > 0.85
    assert abs(fit.camera.intrinsics.fx / k.fx - 1) < 0.25
