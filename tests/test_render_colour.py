"""Shaded colour from OBJ materials: textures sampled at the hit's UV, MTL Kd colours, file face order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpengine.errors import DataError
from kpengine.io.mesh import Mesh, load_mesh
from kpengine.render.appearance import DEFAULT_GREY, load_obj_appearance, sample_texture
from kpengine.render.cameras import Intrinsics, Viewpoint, make_camera
from kpengine.render.raycast import MeshRenderer, twin_faces

K = Intrinsics(50.0, 50.0, 15.5, 15.5, 32, 32)
FRONT = make_camera(Viewpoint(0.0, 0.0, 2.0), K)  # at (0, 0, 2) looking down -z


def shading(cam=FRONT) -> np.ndarray:
    """Headlight Lambert factor of a plane z = 0 seen by ``cam``, (H, W) (as in raycast.shade)."""
    _, d = cam.rays()
    return (0.35 + 0.65 * np.abs(d[:, 2])).reshape(cam.height, cam.width)


def test_textured_quad_shows_its_checker(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)  # 4 x 4 distinct colours, 8 x 8 texels each
    Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8))).save(tmp_path / "checker.png")
    (tmp_path / "quad.mtl").write_text("newmtl tex\nKd 1 1 1\nmap_Kd checker.png\n")
    # the square z = 0, |x|, |y| <= 0.3 (pixel centres 8..23); uv (0, 0) bottom left, (1, 1) top right;
    # one quad face (fanned into two triangles by both readers)
    (tmp_path / "quad.obj").write_text(
        "mtllib quad.mtl\nv -0.3 -0.3 0\nv 0.3 -0.3 0\nv 0.3 0.3 0\nv -0.3 0.3 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nusemtl tex\nf 1/1 2/2 3/3 4/4\n"
    )
    renderer = MeshRenderer.from_obj(tmp_path / "quad.obj")
    r = renderer.render(FRONT)
    assert r.mask.sum() == 256
    # expected block from the hit point: column from u = (x + 0.3) / 0.6, row from 1 - v (image rows go down)
    uv = (r.location[r.mask][:, :2].astype(np.float64) + 0.3) / 0.6
    col, row = uv[:, 0] * 4, (1 - uv[:, 1]) * 4
    inside = (np.abs(col - np.round(col)) > 1 / 8) & (np.abs(row - np.round(row)) > 1 / 8)  # off block edges
    assert inside.sum() > 100
    expected = blocks[row.astype(int)[inside], col.astype(int)[inside]] / 255.0 * shading()[r.mask][inside, None]
    np.testing.assert_allclose(r.color[r.mask][inside] / 255.0, expected, atol=1.5 / 255)


def test_mtl_kd_colours_follow_file_face_order(tmp_path: Path) -> None:
    (tmp_path / "two.mtl").write_text("newmtl red\nKd 0.9 0.1 0.1\n\nnewmtl blue\nKd 0.1 0.2 0.9\nmap_Kd missing.png\n")
    # left square red, right square blue, faces interleaved red/blue/red/blue (trimesh would regroup them),
    # and one grey face (before any usemtl) at the bottom
    v = (
        "v -0.4 -0.2 0\nv 0 -0.2 0\nv 0 0.2 0\nv -0.4 0.2 0\n"
        "v 0 -0.2 0\nv 0.4 -0.2 0\nv 0.4 0.2 0\nv 0 0.2 0\n"
        "v -0.4 -0.4 0\nv 0.4 -0.4 0\nv 0.4 -0.25 0\n"
    )
    f = "f 9 10 11\nusemtl red\nf 1 2 3\nusemtl blue\nf 5 6 7\nusemtl red\nf 1 3 4\nusemtl blue\nf 5 7 8\n"
    (tmp_path / "two.obj").write_text("mtllib two.mtl\n" + v + f)
    app = load_obj_appearance(tmp_path / "two.obj")
    assert app.face_material.tolist() == [-1, 0, 1, 0, 1]
    assert app.face_uv is None and app.missing_textures == [str(tmp_path / "missing.png")]
    mesh = load_mesh(tmp_path / "two.obj")
    r = MeshRenderer(mesh, appearance=app).render(FRONT)
    base = r.color / 255.0 / shading()[..., None]
    kd = {0: DEFAULT_GREY, 1: [0.9, 0.1, 0.1], 2: [0.1, 0.2, 0.9], 3: [0.9, 0.1, 0.1], 4: [0.1, 0.2, 0.9]}
    for face, colour in kd.items():
        sel = r.index == face
        assert sel.sum() > 10, face
        np.testing.assert_allclose(base[sel], np.broadcast_to(colour, (sel.sum(), 3)), atol=0.01)
    # the same face ids as the keypoint mesh: red on the left, blue on the right
    assert set(np.unique(r.index[11:21, 6:16])) <= {1, 3} and set(np.unique(r.index[11:21, 16:26])) <= {2, 4}


def test_existing_colour_paths_and_mismatch() -> None:
    v = np.array([[-0.3, -0.3, 0], [0.3, -0.3, 0], [0.3, 0.3, 0], [-0.3, 0.3, 0]], np.float64)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    grey = MeshRenderer(Mesh(v, faces)).render(FRONT)
    np.testing.assert_allclose(
        grey.color[grey.mask] / 255.0, (DEFAULT_GREY * shading()[grey.mask][:, None]), atol=1 / 255
    )
    red = MeshRenderer(Mesh(v, faces), face_colors=np.array([[1.0, 0, 0], [1.0, 0, 0]])).render(FRONT)
    assert (red.color[red.mask][:, 1:] == 0).all()
    from kpengine.render.appearance import Appearance

    with pytest.raises(DataError, match="face order"):
        MeshRenderer(Mesh(v, faces), appearance=Appearance([], np.zeros(3, np.int64)))


def test_sample_texture_wraps_and_flips_v() -> None:
    tex = np.zeros((2, 2, 3), np.float32)
    tex[0, 0] = 1.0  # top-left texel: u in [0, 0.5), v in (0.5, 1]
    uv = np.array([[0.25, 0.75], [1.25, 0.75], [0.25, 0.25], [0.75, -0.25]])
    np.testing.assert_allclose(sample_texture(tex, uv)[:, 0], [1.0, 1.0, 0.0, 0.0])


def test_double_sided_twins_show_the_side_facing_the_camera(tmp_path: Path) -> None:
    # ShapeNet stores double-sided surfaces as two coincident copies of opposite winding, often with different
    # materials; the ray caster may hit either, the colour comes from the one facing the camera
    (tmp_path / "ds.mtl").write_text("newmtl front\nKd 0.9 0.1 0.1\nnewmtl back\nKd 0.1 0.1 0.9\n")
    v = "v -0.3 -0.3 0\nv 0.3 -0.3 0\nv 0.3 0.3 0\nv -0.3 0.3 0\n"
    f = "usemtl back\nf 1 3 2\nf 1 4 3\nusemtl front\nf 1 2 3\nf 1 3 4\n"  # front copy: normal +z, towards FRONT
    (tmp_path / "ds.obj").write_text("mtllib ds.mtl\n" + v + f)
    renderer = MeshRenderer.from_obj(tmp_path / "ds.obj")
    assert twin_faces(renderer.mesh.faces).tolist() == [2, 3, 0, 1]
    front = renderer.render(FRONT)
    behind = renderer.render(make_camera(Viewpoint(180.0, 0.0, 2.0), K))
    for r, (hi, lo) in ((front, (0, 2)), (behind, (2, 0))):
        c = r.color[r.mask].astype(int)
        assert r.mask.sum() > 100 and (c[:, hi] > 3 * c[:, lo]).all()
