"""The OpenGL rasteriser against the Embree ray caster and the NumPy splatter on the same cameras.

Two independent renderers (rasterisation vs ray casting) agreeing on depth, silhouette, normals,
face ids and colour checks the GL camera mapping (OpenCV -> clip space) and the shaders.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import require_module
from kpengine.io.mesh import Mesh
from kpengine.render.cameras import Intrinsics, Viewpoint, make_camera
from kpengine.render.raycast import MeshRenderer, twin_faces
from kpengine.render.splat import render_points

gl = require_module("kpengine.render.gl")  # a skip without moderngl, a failure under CI


@pytest.fixture(scope="module", autouse=True)
def _need_gl() -> None:
    if not gl.gl_available():
        message = f"no OpenGL context: {gl.INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must have it (scripts/setup_system.sh)")
        pytest.skip(message)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def scene_mesh(double_sided: bool = False) -> Mesh:
    """A box and a sphere that partly hide each other (self-occlusion, curved and flat faces)."""
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.4))
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.15)
    ball.apply_translation((0.2, 0.15, 0.25))
    both = trimesh.util.concatenate([box, ball])
    faces = np.asarray(both.faces)
    if double_sided:
        faces = np.concatenate([faces, faces[:, ::-1]])
    return Mesh(np.asarray(both.vertices, np.float64), faces)


CAMERAS = [
    make_camera(Viewpoint(az, el, 1.8, th), Intrinsics(90.0, 80.0, 40.0, 27.0, 72, 56))
    for az, el, th in ((0, 0, 0), (35, 25, 10), (200, -15, -20), (300, 60, 5))
]


def test_gl_matrices_project_like_the_camera() -> None:
    cam = CAMERAS[1]
    view, proj = gl.gl_matrices(cam, 0.5, 4.0)
    pts = np.random.default_rng(0).uniform(-0.3, 0.3, (50, 3))
    clip = np.c_[pts, np.ones(50)] @ (proj @ view).T
    ndc = clip[:, :3] / clip[:, 3:]
    uv, z = cam.project(pts)
    # x_ndc = 2 (u + 0.5) / W - 1: framebuffer pixel centres are image pixel centres
    np.testing.assert_allclose((ndc[:, 0] + 1) * cam.width / 2 - 0.5, uv[:, 0], atol=1e-9)
    np.testing.assert_allclose((ndc[:, 1] + 1) * cam.height / 2 - 0.5, uv[:, 1], atol=1e-9)
    np.testing.assert_allclose(clip[:, 3], z, atol=1e-12)
    # camera depth near -> -1, far -> +1 in normalised device coordinates
    zc = np.array([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 4.0, 1.0]]) @ proj.T
    np.testing.assert_allclose(zc[:, 2] / zc[:, 3], [-1.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("double_sided", [False, True])
def test_mesh_agrees_with_embree(double_sided: bool) -> None:
    mesh = scene_mesh(double_sided)
    ray, ras = MeshRenderer(mesh), gl.GLMeshRenderer(mesh)
    twin = twin_faces(mesh.faces)
    for cam in CAMERAS:
        a, b = ras.render(cam), ray.render(cam)
        assert a.mask.sum() > 200 and iou(a.mask, b.mask) > 0.99
        both = a.mask & b.mask
        np.testing.assert_allclose(a.depth[both], b.depth[both], atol=1e-4)
        assert (a.depth[~a.mask] == 0).all() and (a.index[~a.mask] == -1).all() and (a.normals[~a.mask] == 0).all()
        # the same face, or its coincident twin (the ray caster may hit either copy)
        same = (a.index[both] == b.index[both]) | (twin[a.index[both]] == b.index[both])
        assert same.mean() > 0.98
        assert np.median(np.einsum("nc,nc->n", a.normals[both], b.normals[both])) > 0.9999
        assert np.median(np.linalg.norm(a.location[both] - b.location[both], axis=1)) < 1e-4
        assert np.abs(a.color[both].astype(int) - b.color[both]).max(axis=1).mean() < 2.0
        if double_sided:  # the GL face id is the copy facing the camera: its normal points back along the ray
            _, d = cam.rays()
            facing = np.einsum("nc,nc->n", ras_face_normals(mesh)[a.index[a.mask]], d[a.mask.ravel()])
            assert (facing < 1e-6).mean() > 0.99


def ras_face_normals(mesh: Mesh) -> np.ndarray:
    tri = mesh.vertices[mesh.faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def test_light_background_and_face_colours() -> None:
    mesh = scene_mesh()
    rng = np.random.default_rng(1)
    face_colors = rng.uniform(0.1, 0.9, (len(mesh.faces), 3))
    ray, ras = MeshRenderer(mesh, face_colors=face_colors), gl.GLMeshRenderer(mesh, face_colors=face_colors)
    cam = CAMERAS[1]
    bg = rng.uniform(0, 1, (cam.height, cam.width, 3))
    light = np.array([0.3, 1.0, 0.5])
    a, b = ras.render(cam, bg, light), ray.render(cam, bg, light)
    both = a.mask & b.mask
    assert np.abs(a.color[both].astype(int) - b.color[both]).max(axis=1).mean() < 2.0
    off = ~a.mask & ~b.mask
    np.testing.assert_array_equal(a.color[off], b.color[off])  # the same background pixels


def test_textured_quad_and_double_sided_materials(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8))).save(tmp_path / "checker.png")
    (tmp_path / "m.mtl").write_text("newmtl tex\nKd 1 1 1\nmap_Kd checker.png\nnewmtl blue\nKd 0.1 0.1 0.9\n")
    # a textured quad facing +z with a blue twin behind it, and a plain red-less second quad to the side
    (tmp_path / "m.obj").write_text(
        "mtllib m.mtl\nv -0.3 -0.3 0\nv 0.3 -0.3 0\nv 0.3 0.3 0\nv -0.3 0.3 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nusemtl tex\nf 1/1 2/2 3/3 4/4\nusemtl blue\nf 1 3 2\nf 1 4 3\n"
    )
    ray, ras = MeshRenderer.from_obj(tmp_path / "m.obj"), gl.GLMeshRenderer.from_obj(tmp_path / "m.obj")
    k = Intrinsics(50.0, 50.0, 15.5, 15.5, 32, 32)
    for az in (0.0, 20.0, 180.0):
        cam = make_camera(Viewpoint(az, 10.0, 2.0), k)
        a, b = ras.render(cam), ray.render(cam)
        assert iou(a.mask, b.mask) > 0.98
        both = a.mask & b.mask
        diff = np.abs(a.color[both].astype(int) - b.color[both]).max(axis=1)
        assert np.median(diff) <= 2 and (diff > 40).mean() < 0.1, az  # texel edges may differ a little
        c = a.color[a.mask].astype(int)
        if az == 180.0:  # from behind: the blue twin
            assert (c[:, 2] > 3 * c[:, 0]).all()


def test_splats_agree_with_numpy_splats() -> None:
    mesh = scene_mesh()
    pts = trimesh.Trimesh(mesh.vertices, mesh.faces).sample(3000, return_index=False)
    rng = np.random.default_rng(2)
    colors = rng.integers(0, 256, (len(pts), 3)).astype(np.uint8)
    ras = gl.GLSplatRenderer(pts, colors=colors, radius=0.02)
    for cam in CAMERAS[:3]:
        a = ras.render(cam)
        b = render_points(pts, cam, radius=0.02, colors=colors, normals=ras_normals(ras))
        assert iou(a.mask, b.mask) > 0.95
        both = a.mask & b.mask
        assert (a.index[both] == b.index[both]).mean() > 0.95
        same = a.index[both] == b.index[both]
        np.testing.assert_allclose(a.depth[both][same], b.depth[both][same], atol=1e-4)
        assert np.median(np.abs(a.depth[both] - b.depth[both])) < 1e-5
        # GL shades a splat with the ray to its point, the NumPy splatter with each pixel's ray: within a few levels
        diff = np.abs(a.color[both][same].astype(int) - b.color[both][same])
        assert diff.max() <= 4 and diff.mean() < 1.0


def ras_normals(ras) -> np.ndarray:
    from kpengine.render.splat import estimate_normals

    return estimate_normals(ras.points)


def test_bad_input_names_the_mesh() -> None:
    from kpengine.errors import DataError

    with pytest.raises(DataError, match="empty mesh"):
        gl.GLMeshRenderer(Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), name="x.obj")
    with pytest.raises(DataError, match="NaN"):
        gl.GLSplatRenderer(np.array([[0.0, np.nan, 0.0]]))


def test_oriented_surfels_hold_the_plane_depth_at_a_slant() -> None:
    # points on the plane z = 0 seen at 60 degrees: camera-facing discs carry their centre's depth over the whole
    # disc, surfels the plane's depth at every pixel (ray-plane intersection)
    g = np.linspace(-0.3, 0.3, 40)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    pts = np.c_[pts, np.zeros(len(pts))]
    normals = np.tile([0.0, 0.0, 1.0], (len(pts), 1))
    cam = make_camera(Viewpoint(0.0, 60.0, 2.0), Intrinsics(120.0, 120.0, 47.5, 47.5, 96, 96))
    origins, dirs = cam.rays()
    t = -origins[:, 2] / dirs[:, 2]  # exact depth of the plane along each pixel ray
    exact = (cam.to_camera(origins + t[:, None] * dirs)[:, 2]).reshape(96, 96)
    radius = 0.02
    flat = gl.GLSplatRenderer(pts, normals=normals, radius=radius).render(cam)
    surf = gl.GLSplatRenderer(pts, normals=normals, radius=radius, oriented=True, max_radius_px=24).render(cam)
    inner = surf.mask & flat.mask
    err_surf = np.abs(surf.depth[inner] - exact[inner])
    err_flat = np.abs(flat.depth[inner] - exact[inner])
    assert err_surf.max() < 1e-4 and np.median(err_flat) > 20 * np.median(err_surf) + 1e-4
    # the slanted plane shows as a closed quadrilateral: no holes inside the silhouette's rows
    rows = surf.mask.any(axis=1)
    filled = np.array([np.ptp(np.nonzero(r)[0]) + 1 == r.sum() for r in surf.mask[rows]])
    assert filled.mean() > 0.95
    np.testing.assert_allclose(np.abs(surf.normals[surf.mask][:, 2]), 1.0, atol=1e-5)
