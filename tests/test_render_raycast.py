"""Mesh ray casting and point splats against hand-computed depth, silhouettes and visibility."""

from __future__ import annotations

import numpy as np
import pytest

from kpengine.errors import DataError
from kpengine.io.mesh import Mesh
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, make_camera
from kpengine.render.project import dense_point_map, embedding_map, pca_rgb, project_points, semantic_map
from kpengine.render.raycast import MeshRenderer
from kpengine.render.splat import render_points


def square(z: float, half: float, cx: float = 0.0) -> Mesh:
    """A square in the plane z = const, two triangles."""
    v = np.array([[cx - half, -half, z], [cx + half, -half, z], [cx + half, half, z], [cx - half, half, z]])
    return Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]))


def merge(*meshes: Mesh) -> Mesh:
    verts, faces, n = [], [], 0
    for m in meshes:
        verts.append(m.vertices)
        faces.append(m.faces + n)
        n += len(m.vertices)
    return Mesh(np.concatenate(verts), np.concatenate(faces))


K = Intrinsics(50.0, 50.0, 15.5, 15.5, 32, 32)
FRONT = make_camera(Viewpoint(0.0, 0.0, 2.0), K)  # at (0, 0, 2) looking down -z


@pytest.mark.parametrize("backend", ["embree", "numpy"])
def test_square_depth_silhouette_normals(backend: str) -> None:
    r = MeshRenderer(square(0.0, 0.3), backend=backend).render(FRONT)
    # the square spans u in 15.5 +- 0.3 * 50 / 2 = [8, 23]: pixel centres 8..23 inclusive
    cols = np.nonzero(r.mask.any(axis=0))[0]
    assert cols.min() == 8 and cols.max() == 23
    assert r.mask.sum() == 16 * 16
    np.testing.assert_allclose(r.depth[r.mask], 2.0, atol=1e-6)
    assert (r.depth[~r.mask] == 0).all() and (r.index[~r.mask] == -1).all()
    np.testing.assert_allclose(r.normals[r.mask], np.broadcast_to([0, 0, 1], (256, 3)), atol=1e-6)
    assert (r.color[~r.mask] == 255).all() and (r.color[r.mask] < 255).all()


def test_batch_equals_single_and_backends_agree() -> None:
    mesh = merge(square(0.0, 0.3), square(0.4, 0.1, 0.1))
    cams = [make_camera(Viewpoint(a, 15.0, 2.5), K) for a in (0.0, 20.0, -30.0)]
    batch = MeshRenderer(mesh).render_batch(cams)
    slow = MeshRenderer(mesh, backend="numpy")
    for cam, r in zip(cams, batch):
        single = slow.render(cam)
        assert (single.mask == r.mask).mean() > 0.995
        both = single.mask & r.mask
        np.testing.assert_allclose(single.depth[both], r.depth[both], atol=1e-5)


def test_visibility_on_a_known_occluder() -> None:
    occluder = square(0.5, 0.1)  # a small square in front of the big one, centred on the axis
    r = MeshRenderer(merge(square(0.0, 0.4), occluder)).render(FRONT)
    pts = np.array([[0.0, 0.0, 0.0], [0.3, 0.3, 0.0], [0.0, 0.0, 0.5], [0.05, -0.05, 0.0]])
    proj = project_points(pts, FRONT, r.depth)
    assert proj.visible.tolist() == [False, True, True, False]
    assert project_points(np.array([[0.0, 0.0, 3.0], [5.0, 0.0, 0.0]]), FRONT, r.depth).visible.tolist() == [
        False,
        False,
    ]


def test_splat_of_one_point_is_a_disc_at_its_pixel() -> None:
    r = render_points(np.array([[0.0, 0.0, 0.0]]), FRONT, radius=0.1, normals=np.array([[0.0, 0.0, 1.0]]))
    # radius 0.1 at depth 2 with f = 50: 2.5 pixels around (15.5, 15.5)
    ii, jj = np.nonzero(r.mask)
    assert ii.mean() == pytest.approx(15.5, abs=0.6) and jj.mean() == pytest.approx(15.5, abs=0.6)
    assert 12 <= r.mask.sum() <= 32
    assert (r.index[r.mask] == 0).all()


def test_splats_keep_the_nearest_point() -> None:
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]])
    r = render_points(pts, FRONT, radius=0.05, normals=np.tile([0.0, 0.0, 1.0], (2, 1)))
    assert set(np.unique(r.index[r.mask]).tolist()) == {1}
    np.testing.assert_allclose(r.depth[r.mask], 1.5, atol=1e-6)


def test_dense_maps_from_a_render() -> None:
    mesh = square(0.0, 0.4)
    r = MeshRenderer(mesh).render(FRONT)
    g = np.linspace(-0.4, 0.4, 9)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    pts = np.concatenate([pts, np.zeros((len(pts), 1))], 1)
    pmap = dense_point_map(r, pts, max_distance=0.08)
    assert (pmap[r.mask] >= 0).all() and (pmap[~r.mask] == -1).all()
    emb = embedding_map(pmap, pts[:, :2])
    seen = r.location[r.mask][:, :2]
    assert np.abs(emb[r.mask] - seen).max() <= 0.08 + 1e-6
    sem = semantic_map(pmap, pts, np.array([[0.4, 0.4, 0.0]]), np.array([7]), radius=0.15)
    assert (sem == 7).any() and set(np.unique(sem).tolist()) <= {-1, 7}
    rgb = pca_rgb(np.random.default_rng(0).normal(size=(50, 8)))
    assert rgb.shape == (50, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_bad_geometry_is_named() -> None:
    with pytest.raises(DataError, match="empty mesh"):
        MeshRenderer(Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), name="x.obj")
    with pytest.raises(DataError, match="NaN"):
        render_points(np.array([[np.nan, 0.0, 0.0]]), FRONT, name="y.pcd")
    with pytest.raises(ValueError, match="depth buffer"):
        project_points(np.zeros((1, 3)), FRONT, np.zeros((4, 4)))


def grid_points(z: float, half: float, step: float, cx: float = 0.0) -> np.ndarray:
    """A square grid of points (N, 3) in the plane z = const."""
    g = np.arange(-half, half + 1e-9, step)
    xx, yy = np.meshgrid(g + cx, g)
    return np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)], 1)


def test_splat_visibility_on_a_known_occluder_of_points() -> None:
    from kpengine.render.project import splat_visibility
    from kpengine.render.splat import default_radius

    k = Intrinsics(100.0, 100.0, 31.5, 31.5, 64, 64)
    cam = make_camera(Viewpoint(0.0, 0.0, 2.0), k)
    back = grid_points(0.0, 0.4, 0.02)
    front = grid_points(0.5, 0.1, 0.02)  # a small square of points in front of the centre
    # a slanted strip beside it: neighbours on the same surface sit nearer in depth but must not hide each other
    s = np.arange(-0.1, 0.1001, 0.02)
    ss, tt = np.meshgrid(s, s)
    slant = np.stack([0.3 + 0.2 * ss.ravel(), tt.ravel(), 0.2 + 0.98 * ss.ravel()], 1)
    cloud = np.concatenate([back, front, slant])
    radius = default_radius(cloud)
    r = render_points(cloud, cam, radius=radius, normals=np.tile([0.0, 0.0, 1.0], (len(cloud), 1)))
    queries = np.array(
        [
            [0.0, 0.0, 0.0],  # behind the occluder's centre
            [0.04, -0.06, 0.0],  # behind it, off-centre
            [-0.3, 0.3, 0.0],  # back plane, in the open
            [0.0, 0.0, 0.5],  # on the occluder
            slant[len(s) * len(s) // 2],  # middle of the slanted strip
            [0.0, 0.0, -0.3],  # behind the back plane (not in the cloud): hidden
        ]
    )
    proj = splat_visibility(queries, cam, r, radius)
    assert proj.visible.tolist() == [False, False, True, True, True, False]
    # the plain depth test with a fixed tolerance wrongly hides points of the slanted strip
    naive = project_points(slant, cam, r.depth)
    assert splat_visibility(slant, cam, r, radius).visible.mean() > naive.visible.mean()


# ------------------------------------------------------------------ splat visibility by hand

# 21 x 21 image, non-square pixels (fx 100, fy 50), principal point at pixel (10, 10), camera at
# the origin looking down +z: the point ((u - 10) / 100, (v - 10) / 50, 1) lands on pixel (u, v)
# at depth 1, and a splat of world radius 0.02 covers a disc of 0.02 * fx / 1 = 2 pixels.
_K = Intrinsics(100.0, 50.0, 10.0, 10.0, 21, 21)


def _point_at(u: float, v: float) -> np.ndarray:
    return np.array([[(u - 10.0) / 100.0, (v - 10.0) / 50.0, 1.0]])


def _render_with(
    covered: list[tuple[int, int]], depth: float = 0.5, location: tuple = (5.0, 5.0, 5.0), mask: bool = True
):  # noqa: ANN202, E501
    """A render that shows a surface at ``depth`` and world ``location`` on the pixels (u, v) in
    ``covered`` and background elsewhere."""
    from kpengine.render.cameras import Camera
    from kpengine.render.raycast import Render

    cam = Camera(_K, np.eye(3), np.zeros(3))
    d = np.zeros((21, 21), np.float32)
    m = np.zeros((21, 21), bool)
    loc = np.zeros((21, 21, 3), np.float32)
    for u, v in covered:
        d[v, u], m[v, u], loc[v, u] = depth, mask, location
    render = Render(
        cam, d, np.zeros((21, 21, 3), np.float32), m, np.full((21, 21), -1), loc, np.zeros((21, 21, 3), np.uint8)
    )  # noqa: E501
    return cam, render


def _visible(point: np.ndarray, covered: list[tuple[int, int]], radius: float = 0.02, **kw) -> bool:
    from kpengine.render.project import splat_visibility

    render_kw = {k: kw.pop(k) for k in ("depth", "location", "mask") if k in kw}
    cam, render = _render_with(covered, **render_kw)
    return bool(splat_visibility(point, cam, render, radius, **kw).visible[0])


# the disc of radius 2 around pixel (10, 10): the 13 pixels with du^2 + dv^2 <= 4 (1 centre, 4 at
# distance 1, 4 diagonals at sqrt 2, 4 at distance 2); its 4 far pixels plus 3 diagonals cover 7/13
_FAR = [(12, 10), (8, 10), (10, 12), (10, 8)]
_DIAG = [(11, 11), (9, 11), (11, 9)]


def test_splat_visibility_counts_the_pixels_of_a_hand_drawn_disc() -> None:
    centre = _point_at(10, 10)
    assert not _visible(centre, _FAR + _DIAG)  # 7 of 13 >= half: hidden
    # an open disc (du^2 + dv^2 < 4) would hold 9 pixels of which 3 covered; a disc of fy's
    # 1 pixel would hold 5, none covered: either way it would wrongly be visible
    assert _visible(centre, _FAR[:3] + _DIAG)  # 6 of 13 < half: visible
    # the 12 pixels of the 5 x 5 square outside the disc never count, covered or not
    corners = [(10 + a, 10 + b) for a in range(-2, 3) for b in range(-2, 3) if a * a + b * b > 4]
    assert len(corners) == 12 and _visible(centre, _FAR[:3] + _DIAG + corners)
    assert not _visible(centre, _FAR + _DIAG, covered_fraction=0.53)
    assert _visible(centre, _FAR + _DIAG, covered_fraction=0.54)  # 7/13 = 0.538


def test_splat_visibility_clips_the_disc_at_the_image_border() -> None:
    """At pixel (0, 0) the disc keeps only its 6 pixels inside the image, (0,0) (1,0) (2,0)
    (0,1) (0,2) (1,1); 3 covered are exactly half, which hides (``covered_fraction`` 0.5 is
    reached). Wrapped indices (-1 -> 20) would count 13 pixels, 3 covered: visible."""
    inside = [(1, 0), (0, 2), (1, 1)]
    assert not _visible(_point_at(0, 0), inside)
    assert _visible(_point_at(0, 0), inside[:2])  # 2 of 6
    assert not _visible(_point_at(20, 20), [(19, 20), (20, 18), (19, 19)])  # the opposite corner likewise
    assert _visible(_point_at(20, 20), [(19, 20), (20, 18)])


def test_splat_visibility_depth_neighbour_and_background_rules() -> None:
    centre, seven = _point_at(10, 10), _FAR + _DIAG
    # nearer means depth < z - tolerance = 1 - 0.02 (default tolerance = radius)
    assert _visible(centre, seven, depth=0.985) and not _visible(centre, seven, depth=0.975)
    assert not _visible(centre, seven, depth=0.985, depth_tolerance=0.01)
    # a surface within 3 * radius = 0.06 of the point is its own neighbourhood, not an occluder
    near, far = (centre[0] + [0.05, 0, 0]).tolist(), (centre[0] + [0.07, 0, 0]).tolist()
    assert _visible(centre, seven, location=tuple(near)) and not _visible(centre, seven, location=tuple(far))
    assert not _visible(centre, seven, location=tuple(near), neighbour_distance=0.04)
    assert _visible(centre, seven, mask=False)  # background never occludes, whatever its depth


def test_splat_visibility_of_a_sub_pixel_splat() -> None:
    """A tiny splat still covers half a pixel around its projection: at (10.3, 10.2) that is pixel
    (10, 10) (0.3^2 + 0.2^2 <= 0.5^2); at (10.5, 10.5) no pixel centre is within 0.5 and the
    point's own rounded pixel (10, 10) stands in."""
    assert not _visible(_point_at(10.3, 10.2), [(10, 10)], radius=1e-4)
    assert _visible(_point_at(10.3, 10.2), [(11, 10)], radius=1e-4)
    assert not _visible(_point_at(10.5, 10.5), [(10, 10)], radius=1e-4)
    assert _visible(_point_at(10.5, 10.5), [(11, 11)], radius=1e-4)


def test_pca_rgb_maps_principal_axes_to_channels_by_hand() -> None:
    """Points spread along three orthogonal directions of R^5 with standard deviations 3, 2, 1,
    exactly uncorrelated (plus an offset): channel k is the coordinate along the k-th direction, up to its sign,
    scaled so that its 1st percentile is 0 and its 99th is 1, clipped outside."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a = rng.normal(size=(2000, 3))
    a, _ = np.linalg.qr(a - a.mean(axis=0))  # exactly uncorrelated, zero-mean columns
    coords = a * np.sqrt(2000) * [3.0, 2.0, 1.0]
    x = coords @ q[:, :3].T + 7.0
    rgb = pca_rgb(x)
    for k in range(3):
        c = coords[:, k] - coords[:, k].mean()
        matches = []
        for s in (1.0, -1.0):
            lo, hi = np.percentile(s * c, 1), np.percentile(s * c, 99)
            matches.append(np.abs(rgb[:, k] - np.clip((s * c - lo) / (hi - lo), 0, 1)).max() < 1e-6)
        assert any(matches), k
    assert np.isclose((rgb == 0).mean(axis=0), 0.01, atol=0.002).all()  # 1 % below the 1st percentile
    two = pca_rgb(coords[:, :2])  # fewer than 3 dimensions: the missing channel is 0
    assert (two[:, 2] == 0).all() and two[:, :2].std(axis=0).min() > 0.1


def test_splat_disc_radius_shrinks_with_depth() -> None:
    """At depth 2 a splat of radius 0.04 spans 0.04 * 100 / 2 = 2 px: the same 13-pixel disc as
    radius 0.02 at depth 1, so the same 7 covered pixels hide it and 6 do not."""
    centre = np.array([[0.0, 0.0, 2.0]])  # projects to pixel (10, 10)
    assert not _visible(centre, _FAR + _DIAG, radius=0.04)
    assert _visible(centre, _FAR[:3] + _DIAG, radius=0.04)


def test_splat_disc_keeps_the_first_row_and_column() -> None:
    """At pixel (0, 0) the disc's 6 pixels include column 0 ((0,0) (0,1) (0,2)) and row 0
    ((0,0) (1,0) (2,0)): covering either line, 3 of 6, hides the point."""
    assert not _visible(_point_at(0, 0), [(0, 0), (0, 1), (0, 2)])
    assert not _visible(_point_at(0, 0), [(0, 0), (1, 0), (2, 0)])
    assert _visible(_point_at(0, 0), [(0, 1), (0, 2)])


def test_splat_occluder_boundaries_are_strict() -> None:
    """Binary-exact numbers: a surface at depth 0.75 is not nearer than z - 0.25 = 0.75; a surface
    exactly 0.5 from the point is not farther than a neighbour distance of 0.5. Neither occludes."""
    centre, seven = _point_at(10, 10), _FAR + _DIAG  # centre = (0, 0, 1)
    assert _visible(centre, seven, depth=0.75, depth_tolerance=0.25)
    assert not _visible(centre, seven, depth=0.625, depth_tolerance=0.25)
    assert _visible(centre, seven, location=(0.5, 0.0, 1.0), neighbour_distance=0.5)
    assert not _visible(centre, seven, location=(0.5, 0.0, 1.0), neighbour_distance=0.4375)


def test_splat_visibility_returns_the_projection_it_judged() -> None:
    from kpengine.render.project import splat_visibility

    cam, render = _render_with([])
    pts = np.array([[0.0, 0.0, 1.0], [0.05, -0.1, 2.0]])
    out = splat_visibility(pts, cam, render, 0.02)
    np.testing.assert_allclose(out.uv, [[10.0, 10.0], [12.5, 7.5]], atol=1e-12)
    np.testing.assert_array_equal(out.depth, [1.0, 2.0])
    assert out.visible.tolist() == [True, True]


def test_depth_buffer_tolerance_is_inclusive() -> None:
    """A point at depth 1.25 behind a surface at 1.0 is visible with tolerance 0.25 (z <= d + tol)."""
    cam = Camera(_K, np.eye(3), np.zeros(3))
    buffer = np.zeros((21, 21))
    buffer[10, 10] = 1.0
    pts = np.array([[0.0, 0.0, 1.25], [0.0, 0.0, 1.3125]])
    assert project_points(pts, cam, buffer, tolerance=0.25).visible.tolist() == [True, False]


def _surface_render(location: tuple[float, float, float]):  # noqa: ANN202
    """A render whose pixel (u, v) = (3, 4) shows the world point ``location``; (5, 6) a second one
    at the origin; the rest is background."""
    cam, render = _render_with([(3, 4), (5, 6)], location=location)
    render.location[6, 5] = 0.0
    return render


def test_dense_point_map_by_hand() -> None:
    """Distances exact in binary. Pixel (3, 4) sees (0.25, 0, 0): the cloud point 1 at (0, 0, 0) is
    0.25 away, inside max_distance 0.25; the default 0.05 refuses it. Background pixels are -1."""
    render = _surface_render((0.25, 0.0, 0.0))
    cloud = np.array([[9.0, 9.0, 9.0], [0.0, 0.0, 0.0]])
    out = dense_point_map(render, cloud, max_distance=0.25)
    assert out.dtype == np.int64 and out[4, 3] == 1 and out[6, 5] == 1
    assert (np.delete(out.ravel(), [4 * 21 + 3, 6 * 21 + 5]) == -1).all()
    out = dense_point_map(render, cloud, max_distance=0.125)
    assert out[4, 3] == -1 and out[6, 5] == 1
    default = dense_point_map(_surface_render((0.0625, 0.0, 0.0)), cloud)  # 0.0625 > 0.05
    assert default[4, 3] == -1 and dense_point_map(_surface_render((0.03125, 0.0, 0.0)), cloud)[4, 3] == 1


def test_embedding_and_semantic_maps_by_hand() -> None:
    """By hand: points 0 (0, 0, 0), 1 (0.25, 0, 0), 2 (1, 0, 0), and 3 (0, 0.125, 0) seen by no
    pixel (the last point is labelled, so a background pixel read as index -1 would show); one
    keypoint at the origin, id 5. Within
    radius 0.25 points 0 and 1 get 5 (0.25 is inclusive), point 2 gets -1; the default radius
    0.05 labels point 0 only. Background stays -1 (semantic) and 0 (embedding)."""
    point_map = np.full((3, 4), -1, np.int64)
    point_map[0, 0], point_map[1, 2], point_map[2, 3] = 0, 1, 2
    points = np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.125, 0.0]])
    keypoints, ids = np.array([[0.0, 0.0, 0.0]]), np.array([5])
    sem = semantic_map(point_map, points, keypoints, ids, radius=0.25)
    expected = np.full((3, 4), -1)
    expected[0, 0], expected[1, 2] = 5, 5
    np.testing.assert_array_equal(sem, expected)
    default = semantic_map(point_map, points, keypoints, ids)
    assert default[0, 0] == 5 and default[1, 2] == -1 and (default == -1).sum() == 11
    emb = embedding_map(point_map, np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    assert emb.dtype == np.float32 and emb.shape == (3, 4, 2)
    expected_emb = np.zeros((3, 4, 2))
    expected_emb[0, 0], expected_emb[1, 2], expected_emb[2, 3] = [1, 2], [3, 4], [5, 6]
    np.testing.assert_array_equal(emb, expected_emb)


def test_pca_rgb_ignores_scale_and_per_dimension_offsets() -> None:
    """PCA colours depend on the embeddings' shape only: scaling them by 0.01 and shifting each
    dimension by its own offset leaves every channel as it was, or as 1 - it (a principal axis
    has no sign). Fewer than 3 dimensions still give one colour per point."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)) * [3.0, 2.0, 1.0, 0.5]
    rgb = pca_rgb(x)
    moved = pca_rgb(0.01 * x + [5.0, -3.0, 100.0, 0.0])
    for k in range(3):
        assert np.allclose(moved[:, k], rgb[:, k], atol=1e-6) or np.allclose(moved[:, k], 1 - rgb[:, k], atol=1e-6), k
    assert pca_rgb(x[:, :2]).shape == (300, 3) and pca_rgb(x[:, :1]).shape == (300, 3)
