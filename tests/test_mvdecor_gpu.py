"""benchmarks/mvdecor_gpu.py: the compact transport of the MvDeCor table's data to a GPU machine.

Two claims carry it: an official ASCII PCD rebuilds byte for byte from integer micro-units (with
the lines they cannot spell kept verbatim), and an oriented-surfel view is a function of its index
map alone (colour, normals and depth recomputed = what the OpenGL shader wrote)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import mvdecor_gpu  # noqa: E402

HEADER = (
    "VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nWIDTH 3\nHEIGHT 1\n"
    "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 3\nDATA ascii\n"
)


def test_pcd_text_rebuilds_from_micro_units_and_keeps_a_negative_zero_verbatim() -> None:
    text = HEADER + "0.022240 0.173560 -0.189982 10027008\n0.175891 -0.000000 -0.375076 16777215\n-1.000001 0.5 2 0\n"
    head, xyz, rgb = mvdecor_gpu.parse_pcd(text)
    assert head == HEADER
    # hand-read micro-units of the three lines
    assert xyz.tolist() == [[22240, 173560, -189982], [175891, 0, -375076], [-1000001, 500000, 2000000]]
    assert rgb.tolist() == [10027008, 16777215, 0]
    patches = mvdecor_gpu.pcd_patches(text, head, xyz, rgb)
    # "-0.000000" has no integer of its own, and "0.5"/"2" are not written with 6 decimals
    assert patches == {"1": "0.175891 -0.000000 -0.375076 16777215", "2": "-1.000001 0.5 2 0"}
    assert mvdecor_gpu.pcd_text(head, xyz, rgb, patches) == text
    assert mvdecor_gpu.pcd_text(head, xyz, rgb).splitlines()[-3] == "0.022240 0.173560 -0.189982 10027008"


def _need_gl() -> None:
    from kpengine.render.gl import INSTALL_HINT, gl_available

    if not gl_available():
        if os.environ.get("CI"):
            pytest.fail(f"no OpenGL context: {INSTALL_HINT}; CI must have it")
        pytest.skip(f"no OpenGL context: {INSTALL_HINT}")


def test_surfel_views_recomputed_from_the_index_map_match_the_gl_render(sample_root) -> None:
    _need_gl()
    from kpengine.data.dataset import KeypointNetDataset
    from kpengine.image.multiview.views import render_shape_views

    shape = next(iter(KeypointNetDataset(sample_root, "mug", "train")))
    gl = render_shape_views(shape.points, shape.colors, shape.model_id, size=48, n_views=4)
    re = mvdecor_gpu.views_from_index(shape.points, shape.colors, gl.index, 48, 4)
    fg = gl.index >= 0
    assert fg.sum() > 500
    dc = np.abs(re["color"].astype(int) - gl.color.astype(int))
    assert dc.max() <= 1 and (dc.max(-1) > 0).mean() < 1e-3  # float32 rounding at the unorm8 boundary
    assert (re["color"][~fg] == 255).all()  # white off the object, as the renderer composes it
    assert np.abs(re["depth"] - gl.depth).max() < 1e-4
    assert np.abs(re["normals"] - gl.normals.astype(np.float32)).max() < 1e-3
    for key in ("R", "t", "intrinsics"):
        np.testing.assert_allclose(re[key], getattr(gl, key))
    # a wrong index map gives other pixels: the recomputation does read the map
    shifted = np.where(fg, (gl.index + 1) % len(shape.points), -1)
    other = mvdecor_gpu.views_from_index(shape.points, shape.colors, shifted, 48, 4)
    assert np.abs(other["depth"] - gl.depth).max() > 1e-3


def test_pack_then_unpack_gives_the_same_clouds_and_views(sample_root, tmp_path) -> None:
    _need_gl()
    import argparse

    from kpengine.categories import resolve_category
    from kpengine.data.dataset import KeypointNetDataset
    from kpengine.image.multiview.views import build_view_cache
    from kpengine.io.multiview import load_shape_views

    shapes = [s for split in ("train", "val", "test") for s in KeypointNetDataset(sample_root, "mug", split)]
    build_view_cache(tmp_path / "views" / "mug", shapes, "mug", size=32, n_views=4)
    packed = tmp_path / "packed"
    mvdecor_gpu.pack(
        argparse.Namespace(data=str(sample_root), categories=["mug"], views=str(tmp_path / "views"), out=str(packed))
    )
    mvdecor_gpu.unpack(argparse.Namespace(src=str(packed), out=str(tmp_path / "un"), workers=1))
    synset = resolve_category("mug").synset
    for s in shapes:
        a = (Path(sample_root) / "pcds" / synset / f"{s.model_id}.pcd").read_bytes()
        assert (tmp_path / "un" / "kp" / "pcds" / synset / f"{s.model_id}.pcd").read_bytes() == a
        old = load_shape_views(tmp_path / "views" / "mug" / f"{s.model_id}.npz")
        new = load_shape_views(tmp_path / "un" / "views" / "mug" / f"{s.model_id}.npz")
        np.testing.assert_array_equal(new.index, old.index)
        assert np.abs(new.color.astype(int) - old.color.astype(int)).max() <= 1
        assert np.abs(new.depth - old.depth).max() < 1e-4
    assert (tmp_path / "un" / "kp" / "annotations" / "mug.json").read_bytes() == (
        Path(sample_root) / "annotations" / "mug.json"
    ).read_bytes()
    assert len(KeypointNetDataset(tmp_path / "un" / "kp", "mug", "test")) == len(
        KeypointNetDataset(sample_root, "mug", "test")
    )
