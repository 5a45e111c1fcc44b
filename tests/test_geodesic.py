import numpy as np
import pytest
from scipy.sparse.csgraph import shortest_path

from kpengine.geometry.geodesic import GeodesicGraph


def test_geodesic_along_a_curve_follows_the_surface():
    """On a U-shaped curve the geodesic between the two tips is the arc length, not the gap."""
    t = np.linspace(0, np.pi, 400)
    pts = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], 1)
    d = GeodesicGraph(pts).from_sources([0])
    assert d[0, -1] == pytest.approx(np.pi, rel=2e-3)  # chord length would be 2
    assert d[0, 0] == 0


def test_from_sources_equals_rows_of_all_pairs(keypointnet):
    from kpengine.io.pcd import load_pcd

    pts = load_pcd(next((keypointnet / "pcds" / "02818832").glob("*.pcd"))).points
    graph = GeodesicGraph(pts)
    src = np.array([5, 100, 2000])
    np.testing.assert_array_equal(graph.from_sources(src), graph.all_pairs()[src])
    # independent check: Bellman-Ford (another algorithm) on the same k-NN graph
    bf = shortest_path(graph.graph, method="BF", directed=False, indices=src)
    np.testing.assert_allclose(graph.from_sources(src), bf, atol=1e-9)


def test_unreachable_pairs_official_zero_strict_infinite():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(40, 3)) * 0.01, rng.normal(size=(40, 3)) * 0.01 + 10])
    official, strict = GeodesicGraph(pts), GeodesicGraph(pts, protocol="strict")
    assert official.n_components() == 2
    assert official.from_sources([0])[0, 60] == 0.0
    assert np.isinf(strict.from_sources([0])[0, 60])
    assert np.isfinite(strict.from_sources([0])[0, 10])


def test_too_few_points_and_unknown_protocol():
    with pytest.raises(ValueError, match="more than 20 points"):
        GeodesicGraph(np.zeros((20, 3)))
    with pytest.raises(ValueError, match="protocol"):
        GeodesicGraph(np.random.rand(30, 3), protocol="exact")


def test_limited_search_agrees_with_full_search_within_the_limit():
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.random((300, 3)), rng.random((60, 3)) * 0.05 + 5])  # two components
    for protocol in ("official", "strict"):
        graph = GeodesicGraph(pts, protocol=protocol)
        full, lim = graph.from_sources([0, 7, 310]), graph.from_sources([0, 7, 310], limit=0.1)
        near = (full <= 0.1) & (full > 0)
        np.testing.assert_array_equal(lim[near], full[near])
        assert np.isinf(lim[full > 0.1]).all()
        np.testing.assert_array_equal(lim[full == 0] == 0, True)  # other component: 0 under "official"


def _brute_force_knn_geodesics(pts: np.ndarray, k: int) -> np.ndarray:
    """The benchmark's definition built without scikit-learn or SciPy: each point joined to its
    k nearest others by an edge of Euclidean length, read undirected, then Floyd-Warshall."""
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    n = len(pts)
    w = np.full((n, n), np.inf)
    np.fill_diagonal(w, 0.0)
    for i in range(n):
        nearest = [j for j in np.argsort(d[i], kind="stable") if j != i][:k]
        w[i, nearest] = d[i, nearest]
    w = np.minimum(w, w.T)
    for m in range(n):
        w = np.minimum(w, w[:, m : m + 1] + w[m : m + 1, :])
    return w


def test_geodesics_use_exactly_twenty_neighbours_like_the_benchmark():
    """A second construction of the 20-NN graph (argsort + Floyd-Warshall) gives the same distances.
    A graph built with 19 or 21 neighbours changes some of them (checked below), so k is pinned."""
    rng = np.random.default_rng(3)
    pts = rng.random((90, 3)) * np.array([1.0, 0.3, 0.1])  # a flat slab: short paths wind around
    expected = _brute_force_knn_geodesics(pts, 20)
    got = GeodesicGraph(pts, protocol="strict").from_sources(np.arange(len(pts)))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    for other in (19, 21):  # the check above can tell k from k +- 1 on this cloud
        assert np.abs(_brute_force_knn_geodesics(pts, other) - expected).max() > 1e-3
    assert (GeodesicGraph(pts).graph.getnnz(axis=1) == 20).all()
