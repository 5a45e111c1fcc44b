"""Ground-truth voxels, marching cubes and the 3D measures, against shapes whose occupancy is known
in closed form (a box, a ball, an open box)."""

from __future__ import annotations

import numpy as np
import pytest

from kpengine.errors import DataError
from kpengine.geometry.voxelize import (
    VoxelGrid,
    fill_closed,
    grid_for,
    surface_voxels,
    voxelize_cloud,
    voxelize_mesh,
    voxels_to_mesh,
)
from kpengine.io.mesh import Mesh
from kpengine.metrics.shape3d import chamfer_distance, voxel_iou


def box_mesh(lo, hi, open_top: bool = False) -> Mesh:
    """An axis-aligned box as 12 triangles (10 without its +y face), outward facing."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    quads = {
        "-x": (0, 1, 3, 2), "+x": (4, 6, 7, 5), "-y": (0, 4, 5, 1),
        "+y": (2, 3, 7, 6), "-z": (0, 2, 6, 4), "+z": (1, 5, 7, 3),
    }  # fmt: skip
    faces = []
    for name, (a, b, c, d) in quads.items():
        if open_top and name == "+y":
            continue
        faces += [(a, b, c), (a, c, d)]
    return Mesh(v, np.array(faces, np.int64))


def expected_box(grid: VoxelGrid, lo, hi) -> np.ndarray:
    """Voxels whose centre lies inside [lo, hi], derived from the grid's centres directly."""
    r = grid.resolution
    ijk = np.stack(np.meshgrid(*[np.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
    c = grid.centres(ijk)
    inside = np.all((c >= np.asarray(lo)) & (c <= np.asarray(hi)), axis=1)
    return inside.reshape(r, r, r)


def test_grid_convention_centres_and_indices():
    grid = VoxelGrid(4, (1.0, 0.0, 0.0), side=2.0)
    assert grid.voxel == 0.5
    np.testing.assert_allclose(grid.origin, [0.0, -1.0, -1.0])
    np.testing.assert_allclose(
        grid.centres(np.array([[0, 0, 0], [3, 1, 2]])), [[0.25, -0.75, -0.75], [1.75, -0.25, 0.25]]
    )
    ijk, inside = grid.index(np.array([[0.1, -0.9, 0.9], [2.1, 0, 0], [1.0, 0.0, 0.0]]))
    assert ijk[0].tolist() == [0, 0, 3] and inside.tolist() == [True, False, True]
    assert ijk[2].tolist() == [2, 2, 2]
    with pytest.raises(DataError):
        VoxelGrid(1)


def test_closed_box_mesh_is_filled_and_matches_its_volume():
    lo, hi = (0.1, 0.2, 0.3), (0.6, 0.5, 0.55)
    occ, grid = voxelize_mesh(box_mesh(lo, hi), resolution=32)
    np.testing.assert_allclose(grid.centre, [0.35, 0.35, 0.425])
    want = expected_box(grid, lo, hi)
    # the surface voxels may reach half a voxel beyond the box; inside, every voxel is filled
    assert (occ & want).sum() == want.sum()
    assert voxel_iou(occ, want) > 0.7
    # and no more than one surface layer beyond it
    assert occ.sum() < expected_box(grid, np.subtract(lo, grid.voxel), np.add(hi, grid.voxel)).sum()


def test_open_box_stays_a_shell():
    lo, hi = (0.0, 0.0, 0.0), (0.5, 0.3, 0.5)
    occ, grid = voxelize_mesh(box_mesh(lo, hi, open_top=True), resolution=32)
    closed, _ = voxelize_mesh(box_mesh(lo, hi), resolution=32)
    inner = expected_box(grid, (0.1, 0.05, 0.1), (0.4, 0.25, 0.4))
    assert not (occ & inner).any()  # nothing filled: the cavity is open at the top
    assert inner.any() and closed[inner].all()


def test_ball_cloud_fills_with_closing_and_meshes_back():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(2048, 3))
    pts = 0.35 * d / np.linalg.norm(d, axis=1, keepdims=True)
    occ, grid = voxelize_cloud(pts, resolution=32)
    r = grid.resolution
    ijk = np.stack(np.meshgrid(*[np.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ball = (np.linalg.norm(grid.centres(ijk) - grid.centre, axis=1) <= 0.35).reshape(r, r, r)
    assert voxel_iou(occ, ball) > 0.8
    # without closing the sparse samples leave holes, so the inside leaks and stays empty
    open_occ = fill_closed(surface_voxels(pts, grid), 0)
    assert open_occ.sum() < 0.5 * ball.sum()
    mesh = voxels_to_mesh(occ.astype(np.float32), grid)
    radii = np.linalg.norm(mesh.vertices - grid.centre, axis=1)
    assert abs(np.median(radii) - 0.35) < 1.5 * grid.voxel
    # outward orientation: positive signed volume close to the ball's
    tri = mesh.vertices[mesh.faces]
    vol = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert 0.7 * (4 / 3 * np.pi * 0.35**3) < vol < 1.3 * (4 / 3 * np.pi * 0.35**3)


def test_marching_cubes_refuses_an_empty_or_misshaped_grid():
    grid = VoxelGrid(8)
    with pytest.raises(DataError, match="no voxel above"):
        voxels_to_mesh(np.full((8, 8, 8), 0.2), grid)
    with pytest.raises(DataError, match="expected"):
        voxels_to_mesh(np.ones((4, 4, 4)), grid)
    with pytest.raises(DataError):
        grid_for(np.zeros((0, 3)))


def test_iou_and_chamfer_by_hand():
    a = np.zeros((2, 2, 2), bool)
    b = np.zeros((2, 2, 2), bool)
    a[0, 0, 0] = a[1, 1, 1] = True
    b[1, 1, 1] = b[0, 1, 0] = b[0, 0, 1] = True
    assert voxel_iou(a, b) == pytest.approx(1 / 4)
    assert voxel_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0
    p = np.array([[0.0, 0, 0], [1, 0, 0]])
    q = np.array([[0.0, 0, 0]])
    # p -> q: (0 + 1) / 2; q -> p: 0; mean of both directions 0.25
    assert chamfer_distance(p, q) == pytest.approx(0.25)
    assert np.isnan(chamfer_distance(p, q[:0]))


def test_iou_broadcasts_one_grid_against_many():
    many = np.zeros((3, 2, 2, 2), bool)
    many[0, 0, 0, 0] = True
    many[1] = True
    one = np.zeros((2, 2, 2), bool)
    one[0, 0, 0] = True
    np.testing.assert_allclose(voxel_iou(one, many), [1.0, 1 / 8, 0.0])
    with pytest.raises(ValueError):
        voxel_iou(one, np.zeros((4, 4, 4), bool))
