"""Camera conventions: viewpoint <-> (R, t) round trips, bins, hand-computed projections."""

from __future__ import annotations

import numpy as np
import pytest

from kpengine.errors import DataError
from kpengine.render.cameras import (
    AZIMUTH_BINS,
    ELEVATION_BINS,
    Camera,
    Intrinsics,
    Viewpoint,
    azimuth_bin,
    azimuth_bin_center,
    elevation_bin,
    elevation_bin_center,
    fit_distance,
    make_camera,
    rt_to_viewpoint,
    viewpoint_to_rt,
)


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize("theta", [0.0, 33.0, -120.0])
def test_round_trip_over_all_bins(theta: float) -> None:
    center = np.array([0.1, -0.05, 0.2])
    for a in range(AZIMUTH_BINS):
        for e in range(ELEVATION_BINS):
            view = Viewpoint(float(azimuth_bin_center(a)), float(elevation_bin_center(e)), 1.7, theta)
            R, t = viewpoint_to_rt(view, center)
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
            assert np.linalg.det(R) == pytest.approx(1.0)
            back = rt_to_viewpoint(R, t, center)
            assert _angle_diff(back.azimuth, view.azimuth) < 1e-9
            assert back.elevation == pytest.approx(view.elevation, abs=1e-9)
            assert back.distance == pytest.approx(1.7)
            assert _angle_diff(back.theta, theta) < 1e-9
            assert azimuth_bin(back.azimuth) == a and elevation_bin(back.elevation) == e
            R2, t2 = viewpoint_to_rt(back, center)
            np.testing.assert_allclose(R2, R, atol=1e-9)
            np.testing.assert_allclose(t2, t, atol=1e-9)


def test_bins_edges() -> None:
    assert azimuth_bin(0.0) == 0 and azimuth_bin(359.99) == 23 and azimuth_bin(-1.0) == 23 and azimuth_bin(15.0) == 1
    assert elevation_bin(-90.0) == 0 and elevation_bin(90.0) == 11 and elevation_bin(0.0) == 6


def test_axes_convention_and_hand_computed_pixels() -> None:
    k = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    cam = make_camera(Viewpoint(0.0, 0.0, 2.0), k)  # at +z looking towards -z, y up the image
    np.testing.assert_allclose(cam.position, [0, 0, 2], atol=1e-12)
    pts = np.array([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.2, 0.0], [0.1, -0.1, 1.0]])
    uv, z = cam.project(pts)
    # x right, y up in the world -> u right, v down; depth 2 at the origin.
    expected = np.array([[31.5, 23.5], [31.5 + 10.0, 23.5], [31.5, 23.5 - 10.0], [31.5 + 10.0, 23.5 + 10.0]])
    np.testing.assert_allclose(uv, expected, atol=1e-9)
    np.testing.assert_allclose(z, [2.0, 2.0, 2.0, 1.0], atol=1e-12)
    side = make_camera(Viewpoint(90.0, 0.0, 2.0), k)  # from +x: world -z appears on the right
    np.testing.assert_allclose(side.position, [2, 0, 0], atol=1e-12)
    assert side.project(np.array([[0.0, 0.0, -0.2]]))[0][0, 0] == pytest.approx(41.5)
    top = make_camera(Viewpoint(0.0, 89.9, 2.0), k)
    assert top.project(np.array([[0.0, 0.0, 0.2]]))[0][0, 1] > 23.5  # +z (front) towards the bottom
    roll = make_camera(Viewpoint(0.0, 0.0, 2.0, 90.0), k)  # image content turns clockwise: right -> down
    np.testing.assert_allclose(roll.project(np.array([[0.2, 0.0, 0.0]]))[0], [[31.5, 33.5]], atol=1e-9)


def test_rays_hit_the_pixels_they_come_from() -> None:
    cam = make_camera(Viewpoint(40.0, 20.0, 3.0, 10.0), Intrinsics.from_fov(8, 6, 40.0))
    origins, dirs = cam.rays()
    uv, _ = cam.project(origins + 2.5 * dirs)
    jj, ii = np.meshgrid(np.arange(8), np.arange(6))
    np.testing.assert_allclose(uv, np.stack([jj.ravel(), ii.ravel()], 1), atol=1e-9)


def test_fit_distance_fills_the_image() -> None:
    k = Intrinsics.from_fov(200, 200, 30.0)
    d = fit_distance(0.5, k, fill=0.8)
    cam = make_camera(Viewpoint(0.0, 0.0, d), k)
    # the silhouette of the sphere is a circle of radius r*f/sqrt(d^2 - r^2)
    assert 0.5 * k.fx / np.sqrt(d**2 - 0.25) == pytest.approx(80.0)
    assert cam.project(np.zeros((1, 3)))[0][0] == pytest.approx([99.5, 99.5])


def test_bad_cameras_are_named() -> None:
    with pytest.raises(DataError, match="NaN"):
        Camera(Intrinsics.from_fov(4, 4), np.full((3, 3), np.nan), np.zeros(3))
    with pytest.raises(DataError, match="rotation"):
        Camera(Intrinsics.from_fov(4, 4), 2 * np.eye(3), np.zeros(3))
    with pytest.raises(DataError, match="invalid viewpoint"):
        viewpoint_to_rt(Viewpoint(np.nan, 0.0, 1.0))
    with pytest.raises(DataError, match="distance"):
        viewpoint_to_rt(Viewpoint(0.0, 0.0, 0.0))
    cam = make_camera(Viewpoint(10.0, 5.0, 2.0), Intrinsics.from_fov(16, 12))
    again = Camera.from_json(cam.to_json())
    np.testing.assert_allclose(again.R, cam.R)
    with pytest.raises(DataError, match="malformed camera"):
        Camera.from_json({"fx": 1})


def test_non_square_pixels_hand_computed_and_behind_the_camera() -> None:
    """fx != fy and cx != cy, so swapping any two of them moves a pixel; points behind get NaN."""
    k = Intrinsics(120.0, 80.0, 40.0, 25.0, 90, 60)
    cam = Camera(k, np.eye(3), np.zeros(3))  # camera frame = world frame
    pts = np.array([[1.0, 2.0, 4.0], [-0.5, 0.25, 2.0], [0.3, 0.3, -1.0], [0.0, 0.0, 0.0]])
    uv, z = cam.project(pts)
    # u = 120 * 1 / 4 + 40 = 70, v = 80 * 2 / 4 + 25 = 65; u = 120 * -0.25 + 40 = 10, v = 80 * 0.125 + 25 = 35
    np.testing.assert_allclose(uv[:2], [[70.0, 65.0], [10.0, 35.0]], atol=1e-12)
    np.testing.assert_array_equal(z, [4.0, 2.0, -1.0, 0.0])
    assert np.isnan(uv[2:]).all()  # behind the camera, and on its centre: no pixel


def test_projection_agrees_with_kornia_pinhole() -> None:
    """A second implementation of the pinhole model: kornia's ``project_points`` with K and [R|t]."""
    import torch
    from kornia.geometry.camera import project_points

    rng = np.random.default_rng(7)
    k = Intrinsics(150.0, 95.0, 33.0, 41.0, 64, 80)
    cam = make_camera(Viewpoint(37.0, -22.0, 2.5, 15.0), k, center=np.array([0.1, 0.2, -0.1]))
    world = rng.uniform(-0.5, 0.5, (50, 3))
    uv, z = cam.project(world)
    cam_pts = torch.from_numpy(world @ cam.R.T + cam.t)
    expected = project_points(cam_pts, torch.from_numpy(k.matrix)).numpy()
    np.testing.assert_allclose(uv, expected, atol=1e-9)
    np.testing.assert_allclose(z, cam_pts[:, 2].numpy(), atol=1e-12)


def test_rays_of_non_square_pixels_pass_through_their_pixels() -> None:
    k = Intrinsics(30.0, 12.0, 3.5, 2.0, 8, 5)
    cam = make_camera(Viewpoint(200.0, 35.0, 2.0, -30.0), k)
    origins, dirs = cam.rays()
    jj, ii = np.meshgrid(np.arange(8), np.arange(5))
    # the ray of pixel (i, j) in camera coordinates is ((j - cx) / fx, (i - cy) / fy, 1), normalised
    d_cam = np.stack([(jj.ravel() - 3.5) / 30.0, (ii.ravel() - 2.0) / 12.0, np.ones(40)], 1)
    np.testing.assert_allclose(dirs @ cam.R.T, d_cam / np.linalg.norm(d_cam, axis=1, keepdims=True), atol=1e-12)
    uv, _ = cam.project(origins + 1.7 * dirs)
    np.testing.assert_allclose(uv, np.stack([jj.ravel(), ii.ravel()], 1), atol=1e-9)


def test_intrinsics_from_field_of_view_by_hand() -> None:
    """f = (W / 2) / tan(fov / 2): 90 degrees over 200 px is f = 100, 60 degrees is 100 sqrt(3);
    the principal point is the centre of the pixel grid ((W - 1) / 2, (H - 1) / 2)."""
    k = Intrinsics.from_fov(200, 100, 90.0)
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == pytest.approx((100, 100, 99.5, 49.5, 200, 100))
    assert Intrinsics.from_fov(200, 100, 60.0).fx == pytest.approx(100 * 3**0.5)
    assert Intrinsics.from_fov(1, 1, 0.5).width == 1  # the smallest image and a narrow lens are fine
    for w, h, fov, message in [(0, 4, 30, "image size"), (4, 0, 30, "image size"), (4, 4, 0, "field of view")]:
        with pytest.raises(DataError, match=message):
            Intrinsics.from_fov(w, h, fov)
    with pytest.raises(DataError, match="field of view"):
        Intrinsics.from_fov(4, 4, 180.0)


def test_project_points_inside_the_image_and_against_the_depth_buffer() -> None:
    """Identity camera, f = 10, principal point (0, 0), a 4 x 3 image: pixel centres at u = 0..3,
    v = 0..2. A point is inside when its rounded pixel is, in front of the camera; with a depth
    buffer, hidden when more than ``tolerance`` behind the surface there (0 = background: visible)."""
    from kpengine.render.project import project_points

    cam = Camera(Intrinsics(10.0, 10.0, 0.0, 0.0, 4, 3), np.eye(3), np.zeros(3))
    pts = np.array(
        [
            [0.0, 0.0, 1.0],  # pixel (0, 0): inside
            [0.3, 0.2, 1.0],  # (3, 2): the last pixel, inside
            [0.4, 0.0, 1.0],  # u = 4: outside
            [0.0, 0.3, 1.0],  # v = 3: outside
            [-0.06, 0.0, 1.0],  # u = -0.6 rounds to -1: outside
            [0.1, 0.1, 0.5],  # (2, 2) at depth 0.5: inside
            [0.1, 0.0, 0.0],  # on the camera plane: no pixel
            [0.1, 0.0, -1.0],  # behind
        ]
    )
    proj = project_points(pts, cam)
    assert proj.visible.tolist() == [True, True, False, False, False, True, False, False]
    assert np.isnan(proj.uv[6:]).all()  # u = 0.1 * 10 / 0 would be infinite: no pixel instead
    depth = np.zeros((3, 4))
    depth[0, 0] = 0.5  # a surface in front of point 0 (at depth 1): hidden beyond the tolerance
    depth[2, 3] = 0.995  # point 1 lies 0.005 behind the surface: within 0.015, visible
    # point 5's pixel (2, 2) is background (0): visible
    assert project_points(pts, cam, depth).visible.tolist() == [False, True, False, False, False, True, False, False]
    assert project_points(pts, cam, depth, tolerance=0.6).visible[0]


def test_look_at_straight_down_and_up_uses_minus_z_as_up() -> None:
    """Looking along the up axis the image's up is -z (module docstring), worked by hand: from above,
    right = forward x (0, 0, -1) = +x and down = forward x right = +z; from below, right = -x."""
    from kpengine.render.cameras import look_at

    down = look_at(np.array([0.0, 2.0, 0.0]), np.zeros(3))
    np.testing.assert_allclose(down, [[1, 0, 0], [0, 0, 1], [0, -1, 0]], atol=1e-12)
    up = look_at(np.array([0.3, -1.0, 0.2]), np.array([0.3, 0.5, 0.2]))
    np.testing.assert_allclose(up, [[-1, 0, 0], [0, 0, 1], [0, 1, 0]], atol=1e-12)
    with pytest.raises(DataError, match="must differ"):
        look_at(np.ones(3), np.ones(3))


def test_bin_boundaries_centres_and_clamps_by_hand() -> None:
    """Azimuth bins are 15 degrees from 0, elevation bins 15 degrees from -90; centres halfway."""
    az = azimuth_bin(np.array([0.0, 14.999, 15.0, 352.5, 360.0, -0.5, 725.0]))
    assert az.dtype == np.int64 and az.tolist() == [0, 0, 1, 23, 0, 23, 0]
    el = elevation_bin(np.array([-100.0, -90.0, -75.5, -75.0, -0.5, 0.0, 89.9, 90.0, 120.0]))
    assert el.dtype == np.int64 and el.tolist() == [0, 0, 0, 1, 5, 6, 11, 11, 11]
    np.testing.assert_allclose(azimuth_bin_center(np.array([0, 1, 23])), [7.5, 22.5, 352.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(elevation_bin_center(np.array([0, 6, 11])), [-82.5, 7.5, 82.5], rtol=0, atol=1e-12)
    assert azimuth_bin_center(0, n_bins=8) == 22.5 and elevation_bin_center(0, n_bins=6) == -75.0


def test_fit_distance_uses_the_shorter_side_by_hand() -> None:
    """Half the shorter side over f is 0.5 whichever side it is; fill 0.8 gives half = 0.2 and
    d = r sqrt(1 + 1 / 0.2^2) = r sqrt(26). 0.8 is the default."""
    narrow = Intrinsics(100.0, 100.0, 24.5, 49.5, 50, 100)
    low = Intrinsics(100.0, 100.0, 49.5, 24.5, 100, 50)
    for k in (narrow, low):
        assert fit_distance(0.5, k) == pytest.approx(0.5 * np.sqrt(26.0), rel=1e-12)
        assert fit_distance(0.5, k, fill=0.4) == pytest.approx(0.5 * np.sqrt(1 + 1 / 0.1**2), rel=1e-12)


def test_intrinsics_default_field_of_view_is_thirty_degrees() -> None:
    k = Intrinsics.from_fov(64, 48)
    assert k.fx == k.fy == pytest.approx(32.0 / np.tan(np.radians(15.0)), rel=1e-12)


def test_camera_keeps_float_arrays_and_refuses_what_is_not_a_rotation() -> None:
    k = Intrinsics.from_fov(8, 8)
    cam = Camera(k, [[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0, 0, 2])  # plain integer lists
    assert isinstance(cam.R, np.ndarray) and cam.R.dtype == np.float64 and cam.R.shape == (3, 3)
    assert isinstance(cam.t, np.ndarray) and cam.t.dtype == np.float64 and cam.t.tolist() == [0.0, 0.0, 2.0]
    np.testing.assert_array_equal(cam.position, [0.0, 0.0, -2.0])
    with pytest.raises(DataError) as err:
        Camera(k, np.eye(3), np.zeros(2))
    assert str(err.value) == "camera needs R (3, 3) and t (3,), got (3, 3) and (2,)"
    with pytest.raises(DataError) as err:
        Camera(k, np.eye(3), np.array([0.0, np.inf, 0.0]))
    assert str(err.value) == "camera has NaN or infinite rotation/translation"
    not_rotations = {
        "a reflection (orthogonal, det -1)": np.diag([1.0, 1.0, -1.0]),
        "a shear (det 1, not orthogonal)": np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
    }
    for what, R in not_rotations.items():
        with pytest.raises(DataError) as err:
            Camera(k, R, np.zeros(3))
        assert str(err.value) == "camera R is not a rotation matrix (R R^T != I or det != 1)", what
    # a rotation written to 6 decimals (as a JSON file might hold it) is off by ~1e-6: accepted
    rounded = np.round(make_camera(Viewpoint(37.0, 21.0, 2.0), k).R, 6)
    assert not np.allclose(rounded @ rounded.T, np.eye(3))  # numpy's default tolerance would refuse it
    Camera(k, rounded, np.zeros(3))


def test_camera_json_round_trip_keeps_every_intrinsic() -> None:
    k = Intrinsics(120.0, 80.0, 40.0, 25.0, 90, 60)
    cam = make_camera(Viewpoint(10.0, 5.0, 2.0, 7.0), k)
    again = Camera.from_json(cam.to_json())
    assert again.intrinsics == k and type(again.intrinsics.width) is int and type(again.intrinsics.fx) is float
    np.testing.assert_array_equal(again.R, cam.R)
    np.testing.assert_array_equal(again.t, cam.t)
    with pytest.raises(DataError, match=r"^malformed camera \(KeyError: 'fy'\)$"):
        Camera.from_json({"fx": 1})


def test_projection_is_silent_for_points_in_the_camera_plane() -> None:
    """x / 0 and 0 / 0 for points with z = 0 are expected (they become NaN): no RuntimeWarning."""
    import warnings

    cam = Camera(Intrinsics(100.0, 100.0, 10.0, 10.0, 21, 21), np.eye(3), np.zeros(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        uv, _ = cam.project(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]))
    assert np.isnan(uv).all()


def test_viewpoints_closer_than_one_unit_and_about_a_centre() -> None:
    """A distance of 0.5 is valid; with a centre c the camera sits at c + d (0, 0, 1) for
    azimuth 0 and projects c to the principal point; rt_to_viewpoint without a centre reads
    the viewpoint about the origin."""
    k = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    near = make_camera(Viewpoint(0.0, 0.0, 0.5), k)
    np.testing.assert_allclose(near.position, [0.0, 0.0, 0.5], atol=1e-12)
    c = np.array([0.3, -0.2, 0.1])
    cam = make_camera(Viewpoint(0.0, 0.0, 2.0), k, center=c)
    np.testing.assert_allclose(cam.position, c + [0.0, 0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(cam.project(c[None])[0], [[31.5, 23.5]], atol=1e-9)
    view = rt_to_viewpoint(*viewpoint_to_rt(Viewpoint(40.0, 25.0, 1.5, -30.0)))
    assert (view.azimuth, view.elevation, view.distance, view.theta) == pytest.approx((40.0, 25.0, 1.5, -30.0))
