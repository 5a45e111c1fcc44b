"""The 3D estimator's shape space (issue 12): the PCA basis of training grids, the left-right mirror
of grids, sketches and viewpoints (checked against the renderer: the mirrored scene must render as
the flipped sketches), and the basis network and its loss by hand."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from kpengine.image.reconstruct.data import sketch_tensor
from kpengine.image.reconstruct.nets import VoxelNet, basis_loss
from kpengine.image.reconstruct.shape_space import (
    mirror_azimuth,
    mirror_grids,
    mirror_sketches,
    pca_basis,
    project,
)


def test_mirror_of_a_hand_built_grid_and_involution() -> None:
    g = torch.zeros(4, 4, 4)
    g[0, 1, 2] = 1.0  # x index 0 -> 3; y and z stay
    g[1, 3, 0] = 0.5  # x index 1 -> 2
    m = mirror_grids(g)
    assert m[3, 1, 2] == 1.0 and m[2, 3, 0] == 0.5 and m.sum() == 1.5
    batch = torch.rand(3, 8, 8, 8)
    assert torch.equal(mirror_grids(mirror_grids(batch)), batch)
    assert torch.equal(mirror_grids(batch)[1], mirror_grids(batch[1]))  # batched as single


def test_mirror_of_hand_built_sketches_and_azimuth() -> None:
    x = torch.zeros(1, 5, 2, 3)
    x[0, :, 0, 0] = torch.tensor([1.0, 0.2, 0.6, -0.8, 0.0])  # a pixel at the left edge, normal to the right
    m = mirror_sketches(x)
    # the pixel moves to the right edge, the normal now points left; mask, depth and n_y, n_z unchanged
    np.testing.assert_allclose(m[0, :, 0, 2].numpy(), [1.0, 0.2, -0.6, -0.8, 0.0])
    assert m[0, :, 0, :2].abs().sum() == 0 and m[0, :, 1].abs().sum() == 0
    y = torch.randn(2, 5, 6, 6)
    assert torch.equal(mirror_sketches(mirror_sketches(y)), y)
    np.testing.assert_allclose(mirror_azimuth(torch.tensor([0.0, 30.0, 350.0, 180.0])).numpy(), [0, 330, 10, 180])


def _gl_or_skip() -> None:
    from kpengine.render.gl import INSTALL_HINT, gl_available

    if not gl_available():
        if os.environ.get("CI"):
            pytest.fail(f"no OpenGL context: {INSTALL_HINT}; CI must have it")
        pytest.skip(f"no OpenGL context: {INSTALL_HINT}")


def test_mirrored_scene_renders_as_the_mirrored_sketches() -> None:
    """A lopsided tetrahedron at azimuth a, and its reflection in x = 0 (of its box) at azimuth
    mirror_azimuth(a) and in-plane angle −θ: the second render's sketches are the first's mirrored
    (flip, normals' x negated). This is the identity the mirror augmentation relies on."""
    _gl_or_skip()
    from kpengine.geometry.transforms import bbox_centre
    from kpengine.io.mesh import Mesh
    from kpengine.render.cameras import Intrinsics, Viewpoint, make_camera
    from kpengine.render.gl import GLMeshRenderer

    v = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.05], [0.1, 0.4, -0.1], [0.35, 0.15, 0.45]])
    f = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    c = bbox_centre(v)
    w = v.copy()
    w[:, 0] = 2 * c[0] - w[:, 0]  # reflected in the plane x = c_x; winding reversed to keep faces outward
    intr = Intrinsics.from_fov(64, 64, 30.0)
    az, el, theta, dist = 37.0, 20.0, 8.0, 1.6
    sk = []
    az_m = float(mirror_azimuth(torch.tensor(az)))
    for mesh, a, t in ((Mesh(v, f), az, theta), (Mesh(w, f[:, ::-1].copy()), az_m, -theta)):
        cam = make_camera(Viewpoint(a, el, dist, t), intr, c)
        r = GLMeshRenderer(mesh).render(cam)
        on = torch.from_numpy(r.mask)[None].float()
        depth = torch.from_numpy(np.where(r.mask, r.depth - dist, 0.0))[None].float()
        n_cam = torch.from_numpy((r.normals @ cam.R.T).transpose(2, 0, 1).copy())[None].float() * on
        sk.append(sketch_tensor(on[0][None], depth, n_cam))
    mirrored, other = mirror_sketches(sk[0]), sk[1]
    m1, m2 = mirrored[0, 0] > 0.5, other[0, 0] > 0.5
    assert m1.sum() > 200
    assert (m1 ^ m2).sum() <= 0.02 * m1.sum()  # rasterisation ties at the silhouette's edge only
    both = m1 & m2
    np.testing.assert_allclose(mirrored[0, 1][both], other[0, 1][both], atol=2e-3)
    np.testing.assert_allclose(mirrored[0, 2:][:, both], other[0, 2:][:, both], atol=2e-3)
    # not a test that cannot fail: without the mirror the two differ (the shape is lopsided)
    assert (sk[0][0, 0] > 0.5).logical_xor(m2).sum() > 0.1 * m1.sum()


def test_pca_basis_reconstructs_training_grids_in_its_span_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    grids = (torch.rand(5, 6, 6, 6, generator=gen) > 0.6).float()
    mean, basis = pca_basis(grids, 4)  # 5 grids: 4 directions span them after centring
    np.testing.assert_allclose(mean.numpy(), grids.reshape(5, -1).mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose((basis @ basis.T).numpy(), np.eye(4), atol=1e-5)
    rec = mean + project(grids, mean, basis) @ basis
    np.testing.assert_allclose(rec.numpy(), grids.reshape(5, -1).numpy(), atol=1e-5)
    # fewer directions lose something; more than the rank add zero rows
    mean2, b2 = pca_basis(grids, 2)
    assert (mean2 + project(grids, mean2, b2) @ b2 - grids.reshape(5, -1)).abs().max() > 0.1
    _, b9 = pca_basis(grids, 9)
    assert b9.shape == (9, 216) and b9[4:].abs().sum() == 0
    # a grid outside the span: its projection is the nearest point of the span (residual orthogonal)
    other = (torch.rand(1, 6, 6, 6, generator=gen) > 0.5).float()
    res = other.reshape(1, -1) - (mean + project(other, mean, basis) @ basis)
    np.testing.assert_allclose((res @ basis.T).numpy(), 0.0, atol=1e-5)


def test_basis_network_starts_at_the_mean_and_blends_its_basis() -> None:
    torch.manual_seed(0)
    net = VoxelNet(8, 32, (8, 16), latent=16, n_categories=2, basis=3).eval()
    means = torch.stack([torch.full((512,), 0.2), torch.full((512,), 0.7)])
    bases = torch.zeros(2, 3, 512)
    bases[1, 0, :256] = 1.0 / 16.0  # unit norm over 256 voxels
    net.set_basis(means, bases)
    x, cat = torch.randn(2, 5, 32, 32), torch.tensor([0, 1])
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(net(x, cat)).numpy().reshape(2, -1), means.numpy(), atol=1e-5)
        net.coef[-1].bias.copy_(torch.tensor([8.0, 0.0, 0.0]))  # coefficient 8 on the first direction
        occ, view = net.occupancy(x, cat)
    flat = occ.reshape(2, -1)
    np.testing.assert_allclose(flat[1, :256].numpy(), 0.7 + 8.0 / 16.0, atol=1e-5)  # 1.2: past 1
    np.testing.assert_allclose(flat[1, 256:].numpy(), 0.7, atol=1e-5)
    np.testing.assert_allclose(flat[0].numpy(), 0.2, atol=1e-5)  # category 0's basis is zero
    assert view is not None and view["azimuth"].shape == (2, 24)
    with pytest.raises(ValueError, match="basis"):
        VoxelNet(8, 32, (8, 16), latent=16).occupancy(x)


def test_basis_loss_by_hand() -> None:
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    occ = torch.tensor([1.3, -0.2, 0.5, 0.5])  # two overshoots on the right side cost nothing
    assert basis_loss(occ, target, 1.0).item() == pytest.approx((0.25 + 0.25) / 4)
    assert basis_loss(occ, target, 4.0).item() == pytest.approx((4 * 0.25 + 0.25) / 4)
