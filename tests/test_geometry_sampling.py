"""Surface sampling and snapping, checked against hand-made meshes (areas and planes known)."""

from __future__ import annotations

import numpy as np
import pytest

from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.geometry.sampling import barycentric_points, sample_surface, seed_for, snap_to_points
from kpengine.io.mesh import Mesh


def _two_triangles() -> Mesh:
    """Triangle 0 in the plane z = 0 with area 1.5; triangle 1 in x = 5 with area 4.5 (total 6)."""
    vertices = np.array(
        [[0, 0, 0], [3, 0, 0], [0, 1, 0], [5, 0, 0], [5, 3, 0], [5, 0, 3]],
        dtype=np.float64,
    )
    return Mesh(vertices, np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64))


def test_samples_fall_on_their_triangles_in_proportion_to_area() -> None:
    mesh = _two_triangles()
    sample = sample_surface(mesh, 20000, seed=3)
    assert sample.points.shape == (20000, 3) and sample.points.dtype == np.float32
    share = np.bincount(sample.face_index, minlength=2) / 20000
    assert share == pytest.approx([0.25, 0.75], abs=0.015)  # 1.5 / 6 and 4.5 / 6; binomial sd 0.003
    bary = sample.barycentric
    assert (bary >= 0).all() and np.allclose(bary.sum(axis=1), 1.0)
    np.testing.assert_allclose(barycentric_points(mesh, sample.face_index, bary), sample.points, atol=1e-6)
    on0 = sample.face_index == 0
    assert np.all(sample.points[on0, 2] == 0) and np.all(sample.points[~on0, 0] == 5)
    x, y = sample.points[on0, 0], sample.points[on0, 1]
    assert np.all(x / 3 + y <= 1 + 1e-6)  # inside triangle 0
    # uniform inside a triangle: the mean of the samples is the centroid
    np.testing.assert_allclose(sample.points[~on0].mean(axis=0), [5, 1, 1], atol=0.03)


def test_sampling_is_deterministic_by_seed() -> None:
    mesh = _two_triangles()
    a, b = sample_surface(mesh, 50), sample_surface(mesh, 50, seed=0)
    np.testing.assert_array_equal(a.points, b.points)
    assert not np.array_equal(a.points, sample_surface(mesh, 50, seed=1).points)
    assert seed_for("abc") == 0x352441C2  # CRC-32 of b"abc", a published check value
    with pytest.raises(ValueError, match="zero surface area"):
        sample_surface(Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]])), 10)


def test_snap_to_points_and_empty_queries() -> None:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0]], dtype=np.float32)
    idx, dist = snap_to_points(points, np.array([[0.9, 0.1, 0], [0, 1.5, 0.0]]))
    assert idx.tolist() == [1, 2] and dist == pytest.approx([np.hypot(0.1, 0.1), 0.5])
    idx, dist = snap_to_points(points, np.zeros((0, 3)))
    assert idx.shape == (0,) and idx.dtype == np.int64 and dist.shape == (0,)


def test_geodesics_from_no_sources() -> None:
    graph = GeodesicGraph(np.random.default_rng(0).random((30, 3)))
    assert graph.from_sources([]).shape == (0, 30)
    assert graph.from_sources(np.array([[1], [2]])).shape == (2, 30)  # any shape of indices, flattened


def test_small_meshes_sample_and_single_queries_snap() -> None:
    """A mesh of area 0.5 is as good as any (only zero area is refused); one query is a query."""
    small = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float64), np.array([[0, 1, 2]]))
    assert sample_surface(small, 5).points.shape == (5, 3)
    idx, dist = snap_to_points(np.array([[0, 0, 0], [1, 0, 0]], np.float32), np.array([[0.9, 0, 0]]))
    assert idx.tolist() == [1] and idx.dtype == np.int64 and dist == pytest.approx([0.1])


def test_skew_keeps_double_precision() -> None:
    """``skew(w) @ v == w x v``, in float64 when ``w`` is float64 (pose refinement's gradchecks need it)."""
    import torch

    from kpengine.geometry.transforms import skew

    w = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    v = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64)
    assert skew(w).dtype == torch.float64
    torch.testing.assert_close(skew(w) @ v, torch.linalg.cross(w, v), rtol=0, atol=1e-15)
