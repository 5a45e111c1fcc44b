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


# --- the GPU queue's own-fit rungs (sixth pass)


def _planner(cells, known, steps_3d=200):
    return mvdecor_gpu.RungPlanner(cells, known, level=0.97, doublings=2, steps_3d=steps_3d)


def test_the_planner_trains_only_the_rungs_the_rule_still_needs_in_the_passes_order() -> None:
    cells = [
        ("bed", "pointnet", 30, 1),  # (2) a point cell of k = 30
        ("bed", "scratch+dist", 30, 1),  # (3) a 2D cell of k = 30
        ("bathtub", "pointnet", 5, 0),  # (1) a point cell with a row: its next rung
        ("bathtub", "dgcnn", 10, 4),  # (0) DGCNN without any row
        ("bathtub", "dgcnn", 10, 0),  # (1) DGCNN with a row short of the level
        ("bed", "mvdecor+dist", 10, 3),  # (0) a 2D cell
        ("bed", "dgcnn", 5, 0),  # decided already: 1.000 at 200 steps
    ]
    known = {
        ("bathtub", "pointnet", 5, 0): {200: 0.8},
        ("bathtub", "dgcnn", 10, 0): {200: 0.961},
        ("bed", "mvdecor+dist", 10, 3): {600: 0.943},
        ("bed", "dgcnn", 5, 0): {200: 1.0},
    }
    plan = _planner(cells, known)
    assert plan.candidates() == [
        (("bed", "mvdecor+dist", 10, 3), 1200),
        (("bathtub", "dgcnn", 10, 4), 200),
        (("bathtub", "pointnet", 5, 0), 400),
        (("bathtub", "dgcnn", 10, 0), 400),
        (("bed", "pointnet", 30, 1), 200),
        (("bed", "scratch+dist", 30, 1), 1800),
    ]
    # a started rung is not offered again; its cell offers nothing more until it ends
    plan.started(("bed", "mvdecor+dist", 10, 3), 1200)
    assert (("bed", "mvdecor+dist", 10, 3), 1200) not in plan.candidates()
    # a point cell doubles until it fits or reaches the cap (200 -> 400 -> 800), then is decided
    cell = ("bathtub", "pointnet", 5, 0)
    plan.started(cell, 400)
    assert plan.finished(cell, 400, 0.9) == [] and plan.next_steps(cell) == 800
    plan.started(cell, 800)
    assert plan.finished(cell, 800, 0.5) == [] and plan.next_steps(cell) is None
    assert cell not in plan.pending()
    # a failed rung drops its cell
    plan.started(("bathtub", "dgcnn", 10, 4), 200)
    plan.finished(("bathtub", "dgcnn", 10, 4), 200, None)
    assert ("bathtub", "dgcnn", 10, 4) not in plan.pending()


def test_the_planner_starts_the_next_2d_rung_beside_when_it_mostly_fell_short_and_stops_it_if_unneeded() -> None:
    cell = ("bathtub", "scratch+dist", 10, 4)
    known = {  # the other draws at 600 steps: 3 of 3 short -> 1200 starts beside 600
        ("bathtub", "scratch+dist", 10, 0): {600: 0.743, 1200: 0.954, 2400: 0.994},
        ("bathtub", "scratch+dist", 10, 1): {600: 0.643, 1200: 0.980},
        ("bathtub", "scratch+dist", 10, 2): {600: 0.798, 1200: 0.977},
    }
    plan = _planner([cell, *known], known)
    assert plan.candidates() == [(cell, 600), (cell, 1200)]
    assert plan.speculate(cell, 1200) is False  # 1200 fell short on 1 of 3: 2400 waits
    plan.started(cell, 600)
    plan.started(cell, 1200)
    assert plan.candidates() == []
    assert plan.finished(cell, 600, 0.98) == [1200]  # 600 fits: 1200 is stopped
    assert plan.next_steps(cell) is None and plan.running == {}
    # never past the cap, and never for a point network
    assert _planner([cell], {cell: {600: 0.5, 1200: 0.5}}).speculate(cell, 2400) is False
    pcell = ("bed", "pointnet", 10, 4)
    others = {("bed", "pointnet", 10, d): {200: 0.9} for d in range(4)}
    assert _planner([pcell, *others], others).speculate(pcell, 200) is False


def test_known_rungs_takes_complete_rows_of_the_distance_head_only() -> None:
    def row(**kw):
        base = {"category": "bed", "method": "scratch+dist", "k": 10, "draw": 0, "steps": 600, "epochs": 40}
        return {**base, "train_pck": [0.3, 0.9, 1.0], "distance_weight": 1.0, "kernel": "ball", **kw}

    rows = [
        row(),
        row(steps=1200, epochs=80, train_pck=[0.4, 0.99, 1.0]),
        row(steps=2400, epochs=7),  # cut by a time limit (planned 160 epochs)
        row(draw=1, distance_weight=0.0),  # another head
        row(draw=2, train_pck=None),  # no own-shape fit
        {"category": "bed", "method": "pointnet", "k": 0, "draw": 0, "steps": None, "epochs": 40},  # full data
        {
            "category": "bed",
            "method": "dgcnn",
            "k": 30,
            "draw": 0,
            "steps": 200,
            "epochs": 50,
            "train_pck": [0, 0.968, 1],
        },
    ]
    assert mvdecor_gpu.known_rungs(rows) == {
        ("bed", "scratch+dist", 10, 0): {600: 0.9, 1200: 0.99},
        ("bed", "dgcnn", 30, 0): {200: 0.968},
    }
