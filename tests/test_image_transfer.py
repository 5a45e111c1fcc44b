"""Keypoint transfer through 3D between two fitted photos, on boxes whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import trimesh  # a main dependency: importorskip would skip these tests under CI too

from kpengine.categories import Category
from kpengine.data.shape import Shape
from kpengine.image.transfer import FittedPhoto, lift, map_between_shapes, transfer_points
from kpengine.io.annotations import Symmetries
from kpengine.io.mesh import Mesh
from kpengine.render.cameras import Intrinsics, Viewpoint, make_camera
from kpengine.render.raycast import MeshRenderer

HALF = np.array([0.2, 0.3, 0.1])  # half extents of the source box, centred at the origin


def _box(scale: np.ndarray, model_id: str) -> tuple[Shape, MeshRenderer]:
    """A box of half extents HALF * scale; its points: the vertices of a twice-subdivided box (face
    centres among them); keypoints: the 8 corners with ids 0-7 in trimesh's vertex order."""
    tm = trimesh.creation.box(extents=2 * HALF * scale)
    verts, faces = trimesh.remesh.subdivide(tm.vertices, tm.faces)
    verts, faces = trimesh.remesh.subdivide(verts, faces)
    corners = np.asarray(tm.vertices)
    shape = Shape(
        model_id=model_id,
        category=Category("box", "00000000"),
        points=np.asarray(verts, np.float32),
        colors=None,
        keypoints=corners.astype(np.float32),
        semantic_ids=np.arange(8),
        point_indices=np.arange(8),
        symmetries=Symmetries(),
        annotation=None,  # type: ignore[arg-type]
        source="mesh",
    )
    return shape, MeshRenderer(Mesh(np.asarray(tm.vertices, np.float64), np.asarray(tm.faces, np.int64)))


def _fit(shape: Shape, renderer: MeshRenderer, view: Viewpoint, size: int = 160) -> FittedPhoto:
    cam = make_camera(view, Intrinsics.from_fov(size, size, 30.0), np.zeros(3))
    return FittedPhoto.from_render(shape, renderer.render(cam))


def _visible_face_centres(cam_position: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Centres of the box faces turned towards the camera: normal . (camera - centre) > 0."""
    out = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            c = np.zeros(3)
            c[axis] = sign * half[axis]
            n = np.zeros(3)
            n[axis] = sign
            if n @ (cam_position - c) > 0.05:
                out.append(c)
    return np.array(out)


SOURCE_VIEW = Viewpoint(35.0, 25.0, 2.0, 0.0)
TARGET_VIEW = Viewpoint(-50.0, 15.0, 2.6, 0.0)


def test_lift_recovers_the_surface_point_under_a_pixel_and_snaps_off_object_pixels() -> None:
    shape, renderer = _box(np.ones(3), "a")
    src = _fit(shape, renderer, SOURCE_VIEW)
    centres = _visible_face_centres(src.camera.position, HALF)
    assert len(centres) == 3  # seen from above, at an angle: a corner view
    uv, _ = src.camera.project(centres)
    xyz, on = lift(uv, src)
    assert on.all()
    # one pixel spans about distance / fx = 2 / 299 model units; rounding to the pixel centre moves half of that
    np.testing.assert_allclose(xyz, centres, atol=0.01)
    # a pixel 5 px left of the silhouette's leftmost pixel (in its row) lifts to that edge pixel's point
    ii, jj = np.nonzero(src.mask)
    row = ii[len(ii) // 2]
    edge = jj[ii == row].min()
    xyz_off, on_off = lift(np.array([[edge - 5.0, row]]), src)
    assert not on_off[0]
    np.testing.assert_allclose(xyz_off[0], src.location[row, edge], atol=1e-6)


def test_same_shape_transfer_lands_where_the_target_camera_projects_the_point() -> None:
    shape, renderer = _box(np.ones(3), "a")
    src, tgt = _fit(shape, renderer, SOURCE_VIEW), _fit(shape, renderer, TARGET_VIEW)
    centres = _visible_face_centres(src.camera.position, HALF)
    uv_src, _ = src.camera.project(centres)
    want, _ = tgt.camera.project(centres)  # the answer, from the analytic points
    got, visible = transfer_points(uv_src, src, tgt)
    assert np.abs(got - want).max() < 1.5  # pixels
    # a face centre is visible in the target exactly when its face turns towards the target camera
    facing = np.array([np.sign(c) @ (tgt.camera.position - c) > 0 for c in centres])
    assert visible.tolist() == facing.tolist()
    assert not facing.all()  # the target sees the box from the other side: at least one centre is hidden


def test_transfer_to_a_stretched_shape_follows_the_box_map() -> None:
    """The target shape is the source box stretched 2x along x: the face centre of +x moves to x = 0.4,
    the others stay; their corners share ids, so the semantic residuals vanish."""
    scale = np.array([2.0, 1.0, 1.0])
    a, ra = _box(np.ones(3), "a")
    b, rb = _box(scale, "b")
    src, tgt = _fit(a, ra, SOURCE_VIEW), _fit(b, rb, TARGET_VIEW)
    centres = _visible_face_centres(src.camera.position, HALF)
    uv_src, _ = src.camera.project(centres)
    want, _ = tgt.camera.project(centres * scale)
    for semantic in (False, True):
        got, _ = transfer_points(uv_src, src, tgt, semantic=semantic)
        assert np.abs(got - want).max() < 2.0


def test_semantic_residual_moves_points_near_a_displaced_keypoint_only() -> None:
    """Corner 6 of box b is at (0.2, 0.3, -0.1); its keypoint is moved 0.1 up the z edge, to the
    edge's midpoint (0.2, 0.3, 0.0), a point of b (the points are 0.05 apart along z). The residual
    (0, 0, 0.1) carries a's corner 6 by 0.1 / max(sum of weights, 1):
    - sigma 0.05: the other corners are >= 0.2 = 4 sigma away (weight e^-8 = 0.0003 and less), so
      the point moves the full 0.1, onto the midpoint;
    - sigma 0.1 (the default): the corner 0.2 away weighs e^-2 = 0.135, the next e^-8: the move is
      0.1 / 1.136 = 0.088, to z = -0.012, which snaps to the midpoint too;
    - sigma 0.2: the seven other corners (0.2 to 0.75 away) weigh 0.607 + 0.135 + 0.082 + 0.011 +
      0.007 + 0.002 + 0.001 = 0.845, the move is 0.1 / 1.845 = 0.054, to z = -0.046: snapped to -0.05.
    The opposite corner's own keypoint agrees on both shapes: it does not move."""
    a, _ = _box(np.ones(3), "a")
    b, _ = _box(np.ones(3), "b")
    corner = 6
    np.testing.assert_allclose(a.keypoints[corner], [0.2, 0.3, -0.1], atol=1e-7)
    moved = b.keypoints.copy()
    moved[corner] = [0.2, 0.3, 0.0]
    assert np.abs(b.points - moved[corner]).sum(1).min() < 1e-7  # a point of b
    b.keypoints = moved
    near, far = a.keypoints[corner].astype(np.float64), -a.keypoints[corner].astype(np.float64)
    out = map_between_shapes(np.stack([near, far]), a, b, semantic=True, sigma=0.05)
    np.testing.assert_allclose(out, [[0.2, 0.3, 0.0], far], atol=1e-6)
    np.testing.assert_allclose(map_between_shapes(near[None], a, b)[0], [0.2, 0.3, 0.0], atol=1e-6)
    np.testing.assert_allclose(map_between_shapes(near[None], a, b, sigma=0.2)[0], [0.2, 0.3, -0.05], atol=1e-6)
    plain = map_between_shapes(np.stack([near]), a, b, semantic=False)
    np.testing.assert_allclose(plain[0], near, atol=1e-6)
