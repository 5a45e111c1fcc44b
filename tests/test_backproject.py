"""The back-projecting 3D estimator (issue 12, fifth pass): the batched camera rotation against the
renderer's own, the observation grid of a cube worked out by hand, sketch-size intrinsics, the
completion network's start at the mean shape (the run through learn.runs: tests/test_reconstruct.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kpengine.image.reconstruct.backproject import (
    camera_rotation,
    cone_grid,
    fit_camera,
    observation_grid,
    observe,
    view_camera,
    viewpoint_noise,
    voxel_centres,
)
from kpengine.image.reconstruct.nets import CompletionNet
from kpengine.render.cameras import Intrinsics, Viewpoint, make_camera, viewpoint_to_rt


def test_camera_rotation_is_the_renderers() -> None:
    """Batched torch rotations against ``render.cameras.viewpoint_to_rt`` (numpy, look_at + roll)."""
    rng = np.random.default_rng(0)
    views = [(rng.uniform(0, 360), rng.uniform(-80, 80), rng.uniform(-20, 20)) for _ in range(20)] + [(30.0, 90.0, 5.0)]
    az, el, th = (torch.tensor([v[k] for v in views]) for k in range(3))
    got = camera_rotation(az, el, th).numpy()
    for g, (a, e, t) in zip(got, views):
        want, _ = viewpoint_to_rt(Viewpoint(a, e, 2.0, t))
        np.testing.assert_allclose(g, want, atol=1e-5)


def test_observation_grid_of_a_cube_seen_from_the_front() -> None:
    """A cube |x|, |y| <= 0.2, front face at world z = 0.26, seen from azimuth 0 (camera on +z at distance
    d, image x = world x, image y = -world y). Its front face has z-depth d - 0.26 at every pixel, so
    along every ray through it the voxel centres (z = (k + 0.5) / 32 - 0.5) at z = 0.266 are the
    surface (0.006 in front, under half a voxel), those at z >= 0.297 are seen free, those at
    z <= 0.234 hidden; voxels that project off the cube are free."""
    d, s, f = 2.0, 128, 200.0
    cx = (s - 1) / 2
    jj, ii = np.meshgrid(np.arange(s), np.arange(s))
    x = (jj - cx) / f * (d - 0.26)  # where each pixel's ray meets the face's plane
    y = -(ii - cx) / f * (d - 0.26)
    on = (np.abs(x) <= 0.2) & (np.abs(y) <= 0.2)
    mask = torch.from_numpy(on.astype(np.float32))[None]
    depth = torch.from_numpy(np.where(on, -0.26, 0.0).astype(np.float32))[None]  # z-depth minus d
    camera = torch.tensor([[f, f, cx, cx, 0.0, 0.0, d, d]])
    rot = camera_rotation(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    obs = observation_grid(mask, depth, camera, rot, 32)[0].numpy()
    c = voxel_centres(32).numpy().reshape(32, 32, 32, 3)
    # a voxel centre projects onto the face when |x| <= 0.2 (d - 0.26) / (d - z): well inside / outside
    scale = (d - 0.26) / (d - c[..., 2])
    inner = (np.abs(c[..., 0]) * scale < 0.18) & (np.abs(c[..., 1]) * scale < 0.18)
    outer = (np.abs(c[..., 0]) * scale > 0.22) | (np.abs(c[..., 1]) * scale > 0.22)
    z = c[..., 2]
    surface, free, hidden = obs[2] > 0.5, obs[1] > 0.5, obs[3] > 0.5
    assert inner.sum() > 500 and outer.sum() > 10000
    assert (surface[inner] == np.isclose(z[inner], 0.265625)).all()
    assert (free[inner] == (z[inner] > 0.27)).all()
    assert (hidden[inner] == (z[inner] < 0.26)).all()
    assert free[outer].all() and not surface[outer].any() and not hidden[outer].any()
    assert (obs[0][inner] == 1).all() and (obs[0][outer] == 0).all()
    # the truncated distance: (z_cam - z_obs) / 3 voxels = (0.26 - z) * 32 / 3, clamped to ±1
    np.testing.assert_allclose(obs[4][inner], np.clip((0.26 - z[inner]) * 32 / 3, -1, 1), atol=1e-4)
    # the channels of one voxel exclude each other
    assert (surface.astype(int) + free + hidden <= 1).all()


def _sphere_mask(d: float, r: float, s: int, f: float) -> torch.Tensor:
    """The image of a sphere of radius r at distance d, centred: the tangent cone's half-angle is asin(r / d),
    so the disc's radius is f tan(asin(r / d)) = f r / sqrt(d² - r²) pixels."""
    c = (s - 1) / 2
    jj, ii = np.meshgrid(np.arange(s), np.arange(s))
    rad = f * r / np.sqrt(d * d - r * r)
    return torch.from_numpy((((jj - c) ** 2 + (ii - c) ** 2) <= rad * rad).astype(np.float32))[None]


@pytest.mark.parametrize("azimuth", [0.0, 90.0])
def test_cone_grid_of_a_sphere(azimuth: float) -> None:
    """A sphere of radius 0.3 at the origin seen from distance 2 at azimuth 0 (camera on +z) or 90 (on +x).
    Along the view axis a (world-frame coordinate, away from the camera: -z resp. -x) and across it ρ (the
    other two), a voxel centre lies in the silhouette's cone when ρ / (d + a) < r / sqrt(d² - r²); the
    cone voxels' ray channel is their depth behind the centre over half the grid, 2a, clamped; voxels off
    the cone are seen free, and no channel holds a surface or a hidden voxel (no depth)."""
    d, r, s, f = 2.0, 0.3, 128, 150.0
    mask = _sphere_mask(d, r, s, f)
    cx = (s - 1) / 2
    camera = torch.tensor([[f, f, cx, cx, 0.0, 0.0, d, d]])
    rot = camera_rotation(torch.tensor([azimuth]), torch.zeros(1), torch.zeros(1))
    obs = cone_grid(mask, camera, rot, 32)[0].numpy()
    c = voxel_centres(32).numpy().reshape(32, 32, 32, 3)
    axis = 2 if azimuth == 0.0 else 0
    a = -c[..., axis]
    rho = np.sqrt((c**2).sum(-1) - c[..., axis] ** 2)
    t = rho / (d + a) / (r / np.sqrt(d * d - r * r))  # < 1 inside the cone
    inner, outer = t < 0.95, t > 1.05  # away from the disc's pixel-sized edge
    assert inner.sum() > 3000 and outer.sum() > 10000
    assert (obs[0][inner] == 1).all() and (obs[0][outer] == 0).all()
    assert (obs[1][outer] == 1).all() and (obs[1][inner] == 0).all()
    assert not obs[2].any() and not obs[3].any()
    np.testing.assert_allclose(obs[4][inner], np.clip(2 * a[inner], -1, 1), atol=1e-5)
    assert (obs[4][outer] == 0).all()


def test_cone_observation_ignores_the_depth() -> None:
    """The depth-free grid is the same whatever the depth channel says, and its cone is the depth grid's
    silhouette channel (the same projection)."""
    g = torch.Generator().manual_seed(0)
    d, s, f = 2.0, 64, 75.0
    mask = _sphere_mask(d, 0.3, s, f)
    sk = torch.cat([mask[:, None], torch.zeros(1, 4, s, s)], 1).repeat(2, 1, 1, 1)
    sk[1, 1] = 4 * torch.randn(s, s, generator=g) * mask[0]  # a wildly wrong depth
    cams = torch.tensor([[f, f, 31.5, 31.5, 0.0, 0.0, d, d]]).repeat(2, 1)
    az, el, th = torch.tensor([40.0, 40.0]), torch.tensor([20.0, 20.0]), torch.zeros(2)
    cone = observe(sk, cams, az, el, th, 32, "cone")
    assert torch.equal(cone[0], cone[1])
    plain = observe(sk, cams, az, el, th, 32, "cone_noray")  # the ablation: the ray channel off, the rest kept
    assert torch.equal(plain[:, :4], cone[:, :4]) and not plain[:, 4].any() and cone[:, 4].abs().sum() > 100
    depth = observe(sk, cams, az, el, th, 32, "depth")
    assert torch.equal(cone[:, 0], depth[:, 0]) and not torch.equal(depth[0], depth[1])
    with pytest.raises(ValueError, match="observation"):
        observe(sk, cams, az, el, th, 32, "normals")


def test_view_camera_at_the_sketch_size() -> None:
    """Block averaging by 2: a centred camera at 128 px is a centred one at 64 px with half the focal
    length, and a world point lands where the full-size projection says, divided by the block
    (pixel centres at j f + (f - 1) / 2)."""
    k = Intrinsics.from_fov(128, 128, 40.0)
    cam = make_camera(Viewpoint(70.0, 20.0, 2.5, 3.0), k, np.array([0.1, -0.05, 0.02]))
    view = {"camera": cam.to_json(), "center": [0.1, -0.05, 0.02], "distance": 2.5}
    vc = view_camera(view, 64)
    np.testing.assert_allclose(vc[:4], [k.fx / 2, k.fy / 2, 31.5, 31.5], rtol=1e-6)
    np.testing.assert_allclose(vc[4:7], [0.0, 0.0, 2.5], atol=1e-6)  # the camera looks at the centre
    p = np.array([[0.3, 0.1, -0.2]])
    uv, z = cam.project(p)
    rel = cam.R @ (p[0] - view["center"]) + vc[4:7]
    u64 = vc[0] * rel[0] / rel[2] + vc[2]
    assert u64 == pytest.approx((uv[0, 0] - 0.5) / 2, abs=1e-4)


def test_completion_net_starts_at_the_mean_shape() -> None:
    torch.manual_seed(0)
    net = CompletionNet(32, n_categories=2, width=4).eval()
    means = torch.rand(2, 32, 32, 32)
    net.set_prior(means)
    obs = torch.rand(3, 5, 32, 32, 32)
    out = net(obs, torch.tensor([0, 1, 1]))
    p = means.clamp(0.01, 0.99)
    want = torch.log(p) - torch.log1p(-p)
    np.testing.assert_allclose(out.detach().numpy(), want[[0, 1, 1]].numpy(), atol=1e-5)
    net.train()
    out = net(obs)
    out.sum().backward()
    assert net.out.weight.grad.abs().sum() > 0  # the zero layer learns


def test_viewpoint_noise_turns_by_a_half_turn_when_asked() -> None:
    g = torch.Generator().manual_seed(0)
    az, el, th = torch.zeros(1000), torch.full((1000,), 20.0), torch.zeros(1000)
    a, e, t = viewpoint_noise(az, el, th, g, 0.0, 0.0, 0.0, 1.0)
    assert (a == 180.0).all() and (e == 20.0).all() and (t == 0.0).all()
    a, e, t = viewpoint_noise(az, el, th, g, 10.0, 5.0, 3.0, 0.0)
    assert 8 < float(a.std()) < 12 and 4 < float(e.std()) < 6 and 2 < float(t.std()) < 4


@pytest.mark.parametrize("view", [(0.0, 0.0, 0.0, 0.0, 2.5), (30.0, 20.0, 0.1, -0.05, 2.4)])
def test_fit_camera_places_a_cube_where_its_silhouette_says(view: tuple[float, ...]) -> None:
    """The cube |x|, |y|, |z| <= 0.25 (its 32³ grid: 16 voxels a side) at camera-frame centre c seen at
    azimuth/elevation (a, e): the silhouette's box is the box of its 8 projected corners. The fitted
    camera puts the cube's centre back at c: from the front (0, 0, 2.5) the front face alone is the
    silhouette, 2 f 0.25 / 2.25 = 22.2 px wide; from (30°, 20°) off the axis, with perspective."""
    a, e, cx_, cy_, d = view
    f, s = 100.0, 64
    pc = (s - 1) / 2
    rot = camera_rotation(torch.tensor([a]), torch.tensor([e]), torch.zeros(1))[0].double()
    corners = torch.tensor([[x, y, z] for x in (-0.25, 0.25) for y in (-0.25, 0.25) for z in (-0.25, 0.25)]).double()
    xc = corners @ rot.T + torch.tensor([cx_, cy_, d]).double()
    u, v = f * xc[:, 0] / xc[:, 2] + pc, f * xc[:, 1] / xc[:, 2] + pc
    jj, ii = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="xy")
    mask = (jj >= u.min()) & (jj <= u.max()) & (ii >= v.min()) & (ii <= v.max())  # pixel centres inside
    c = voxel_centres(32).reshape(32, 32, 32, 3)
    cube = (c.abs() < 0.25).all(-1)
    assert int(cube.sum()) == 16**3
    cam = fit_camera(cube, rot.float(), mask, (f, f, pc, pc))
    np.testing.assert_allclose(cam[:4].numpy(), [f, f, pc, pc])
    assert float(cam[6]) == pytest.approx(d, rel=0.02)  # 2.494 and 2.374 measured
    np.testing.assert_allclose(cam[4:6].numpy(), [cx_, cy_], atol=0.015)
    assert float(cam[7]) == pytest.approx(float(cam[4:7].norm()), rel=1e-6)
    with pytest.raises(ValueError, match="silhouette"):
        fit_camera(cube, rot.float(), torch.zeros(s, s, dtype=torch.bool), (f, f, pc, pc))


@pytest.mark.parametrize("spot", [None, (150.3, 98.7)])
def test_photo_camera_maps_photo_pixels_where_the_crop_puts_them(spot: tuple[float, float] | None) -> None:
    """``mask_box`` gives the box in pixel-centre coordinates and ``crop_square`` hands it to PIL, whose box is
    in pixel-edge coordinates: the crop's window sits half a photo pixel up and left of the box. The crop's
    camera must follow the crop as cut. A smooth Gaussian spot (sigma 5 px) at photo pixel-centre coordinates
    (u, v) — the photo's principal point, or elsewhere — is cut by ``crop_square`` and found at its intensity
    centroid in the crop; the camera's mapping (the principal point ``cam[2:4]``, and a camera-frame point on
    the spot's ray projected with ``cam[0:4]``) lands on it within 0.03 crop px. Reading the box as edge
    coordinates (no half pixel) would put it 0.5 (1 - 64 / side) ≈ 0.23 px off."""
    from kpengine.image.crops import crop_square, square_box
    from kpengine.image.reconstruct.photo import RECON_MARGIN, photo_camera
    from kpengine.image.renders import mask_box

    h, w, size, fov = 200, 300, 64, 30.0
    k = Intrinsics.from_fov(w, h, fov)
    u0, v0 = spot if spot is not None else (k.cx, k.cy)
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    blob = 255.0 * np.exp(-((jj - u0) ** 2 + (ii - v0) ** 2) / (2 * 5.0**2))
    image = np.repeat(blob.round().astype(np.uint8)[..., None], 3, -1)
    mask = np.zeros((h, w), bool)
    mask[61:153, 97:201] = True  # the object's pixels: box 104 x 92 px
    box = mask_box(mask)
    assert box == (96.5, 60.5, 104.0, 92.0)
    crop = crop_square(image, box, RECON_MARGIN, size)[..., 0].astype(np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    found = np.array([(crop * xx).sum(), (crop * yy).sum()]) / crop.sum()

    net = CompletionNet(32, n_categories=1, width=4).eval()
    c = voxel_centres(32).reshape(32, 32, 32, 3)
    net.set_prior((c.abs() < 0.25).all(-1).float()[None])  # a cube as the mean shape, for fit_camera
    sil = torch.zeros(size, size, dtype=torch.bool)
    sil[10:54, 12:52] = True
    cam = photo_camera(net, torch.zeros(1, dtype=torch.long), sil, {"azimuth": 0.0, "elevation": 0.0}, (h, w),
                       box, fov, size)  # fmt: skip
    ray = np.array([(u0 - k.cx) / k.fx, (v0 - k.cy) / k.fy, 1.0]) * 2.7  # a point on the spot's ray
    want = np.array([cam[0] * ray[0] / ray[2] + cam[2], cam[1] * ray[1] / ray[2] + cam[3]])
    np.testing.assert_allclose(want, found, atol=0.03)
    side = square_box(box, RECON_MARGIN)[2]
    assert abs(0.5 * (1 - size / side)) > 0.2  # the half pixel this test would catch


def _blob_silhouette(size: int) -> torch.Tensor:
    """(S, S) bool: a lopsided silhouette (an ellipse with a notch and a bump), no symmetry to hide a wrong turn."""
    jj, ii = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="xy")  # fmt: skip
    c = size / 2
    sil = ((jj - c) / (0.33 * size)) ** 2 + ((ii - c) / (0.22 * size)) ** 2 < 1
    sil &= ~((jj > c + 0.1 * size) & (ii < c))  # a notch at the upper right
    sil |= ((jj - 0.3 * size) ** 2 + (ii - 0.75 * size) ** 2) < (0.08 * size) ** 2  # a bump at the lower left
    return sil


@pytest.mark.parametrize("view", [(30.0, 20.0, 0.0), (200.0, 45.0, -7.0)])
def test_the_cone_at_the_half_turn_is_the_cone_turned_about_the_vertical(view: tuple[float, float, float]) -> None:
    """The half-turn hedge (docs/reconstruction.md, eighth pass) places the cone at azimuth + 180° with the same
    camera. Turning the camera by 180° about the vertical through the box centre is the same as turning the
    grid the other way: the world-to-camera rotation becomes ``R R_y(180°)`` (the look-at's up is y, which
    ``R_y`` keeps; the roll acts after it), so voxel ``p`` at the half turn sees what voxel ``R_y(180°) p =
    (-x, y, -z)`` sees at the pose: the cone grid with its x and z index axes reversed (the voxel centres are
    symmetric about the grid's centre). Every channel, on a lopsided silhouette whose own cone has no such
    symmetry (it differs from its turned self)."""
    s, r = 32, 32
    x = torch.zeros(1, 5, s, s)
    x[0, 0] = _blob_silhouette(s).float()
    f = 0.5 * s / np.tan(np.radians(15.0))
    cam = torch.tensor([[f, f, (s - 1) / 2 + 0.7, (s - 1) / 2 - 0.4, 0.02, -0.03, 2.2, 2.2]], dtype=torch.float32)
    az, el, th = (torch.tensor([v]) for v in view)
    at = observe(x, cam, az, el, th, r, "cone")[0]
    turned = observe(x, cam, az + 180.0, el, th, r, "cone")[0]
    want = at.flip(1, 3)  # (C, x, y, z): reverse x and z
    assert at[0].sum() > 500 and not torch.equal(at, turned)  # the cone is substantial, and the turn matters
    # nearest-pixel look-ups: a voxel centre on a pixel boundary may round either way (sin(a + 180°) vs -sin a)
    assert (turned[:2] != want[:2]).float().mean() < 1e-3
    assert (turned[4] - want[4]).abs().max() < 1e-4 or (turned[4] != want[4]).float().mean() < 1e-3


class _ConeProbe(CompletionNet):
    """A back-projecting run whose occupancy is its cone: logit +6 inside the silhouette's cone, -6 outside
    (a trained run completes the cone; this one shows where it was placed)."""

    def forward(self, obs: torch.Tensor, category: torch.Tensor | None = None) -> torch.Tensor:
        return 12.0 * (obs[:, 0] - 0.5)


def test_half_turn_hedge_weighs_each_runs_own_reconstruction() -> None:
    """``reconstruct_photo(..., cone_weight=w, half_turn=h)`` on a synthetic photo, against a second
    construction from the single-run reconstructions: the cone run at the viewpoint (P_v), the same run at the
    viewpoint turned by 180° in azimuth (P_t, its own fitted camera), and the sketch-encoding run alone (P_d):
    ``(1 - w) P_d + w ((1 - h) P_v + h P_t)``. The cube mean shape fits the same camera from both sides, so
    P_t is P_v turned by 180° about the vertical (x and z reversed; the test above). Without a hedge the runs
    are averaged alike, as before; a weight outside [0, 1] is refused."""
    from kpengine.errors import DataError
    from kpengine.image.reconstruct.nets import SketchNet, VoxelNet
    from kpengine.image.reconstruct.photo import reconstruct_photo

    torch.manual_seed(0)
    h, w, size = 120, 160, 64
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    small = _blob_silhouette(64).numpy()
    mask[20:84, 40:104] = small  # the object's pixels, inside the frame
    sketch = SketchNet((8, 16, 32, 64), size).eval()
    sketch.config = {"size": size, "category": "chair"}
    c = voxel_centres(32).reshape(32, 32, 32, 3)
    cube = (c.abs() < 0.25).all(-1).float()[None]
    cone = _ConeProbe(32, 1, 4, "cone").eval()
    cone.set_prior(cube)
    cone.config = {"size": size, "resolution": 32, "category": "chair"}
    vox = VoxelNet(32, size, (8, 16, 32, 64), n_categories=1, viewpoint_head=False).eval()
    ball = ((c - torch.tensor([0.1, 0.0, -0.05])).norm(dim=-1) < 0.3).float()[None]  # a ball, off centre
    vox.set_prior(ball)
    vox.config = {"size": size, "resolution": 32, "category": "chair"}
    vp = {"azimuth": 35.0, "elevation": 25.0, "theta": 4.0}
    run = dict(mask=mask, category="chair", level=0.3, fov=30.0)
    p_v = reconstruct_photo(image, sketch, cone, viewpoint=vp, **run).voxels
    p_t = reconstruct_photo(image, sketch, cone, viewpoint={**vp, "azimuth": 215.0}, **run).voxels
    p_d = reconstruct_photo(image, sketch, vox, viewpoint=vp, **run).voxels
    assert (np.abs(p_t - p_v[::-1, :, ::-1]) > 0.5).mean() < 1e-3 and (np.abs(p_t - p_v) > 0.5).mean() > 0.01
    for wt, ht in ((2 / 3, 0.5), (0.75, 0.25), (0.25, 1.0)):
        got = reconstruct_photo(image, sketch, [cone, vox], viewpoint=vp, cone_weight=wt, half_turn=ht, **run)
        np.testing.assert_allclose(got.voxels, (1 - wt) * p_d + wt * ((1 - ht) * p_v + ht * p_t), atol=1e-5)
        assert got.view_used == vp  # the pose the pipeline keeps, not the half turn
    # the front/back cue: h from the sketch-encoding run's viewpoint head. Its head set by hand (weights 0, biases
    # the log of 0.6 at bin 2 and 0.4 at bin 14, centres 37.5° and 217.5°): at the viewpoint's 37.5° the
    # triangle of half-width 30° reads 0.6 (the neighbours hold nothing), at the half turn 0.4: s = 0.4, h = 5/12
    head = VoxelNet(32, size, (8, 16, 32, 64), n_categories=1, viewpoint_head=True).eval()
    head.set_prior(ball)
    head.config = vox.config
    with torch.no_grad():
        head.view_head.weight.zero_()
        head.view_head.bias.fill_(-30.0)
        head.view_head.bias[2], head.view_head.bias[14] = np.log(0.6), np.log(0.4)
    at = {**vp, "azimuth": 37.5}
    q_v = reconstruct_photo(image, sketch, cone, viewpoint=at, **run).voxels
    q_t = reconstruct_photo(image, sketch, cone, viewpoint={**at, "azimuth": 217.5}, **run).voxels
    q_d = reconstruct_photo(image, sketch, head, viewpoint=at, **run)
    np.testing.assert_allclose(q_d.azimuth_sketches[[2, 14]], [0.6, 0.4], atol=1e-6)
    got = reconstruct_photo(image, sketch, [cone, head], viewpoint=at, cone_weight=0.75, half_turn="sketches", **run)
    h = 5 / 12
    np.testing.assert_allclose(got.voxels, 0.25 * q_d.voxels + 0.75 * ((1 - h) * q_v + h * q_t), atol=1e-5)
    assert (np.abs(q_t - q_v) > 0.5).mean() > 0.01  # the half turn's share shows
    with pytest.raises(DataError, match="viewpoint head"):
        reconstruct_photo(image, sketch, [cone, vox], viewpoint=vp, half_turn="sketches", **run)
    plain = reconstruct_photo(image, sketch, [vox, cone], viewpoint=vp, **run).voxels
    np.testing.assert_allclose(plain, (p_d + p_v) / 2, atol=1e-6)
    with pytest.raises(DataError, match="cone_weight"):
        reconstruct_photo(image, sketch, [cone, vox], viewpoint=vp, cone_weight=1.5, **run)
    for bad in (-0.1, "rgb"):
        with pytest.raises(DataError, match="half_turn"):
            reconstruct_photo(image, sketch, [cone, vox], viewpoint=vp, half_turn=bad, **run)
