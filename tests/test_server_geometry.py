"""The server's click validation without a server: surface points, triangles and barycentric
weights worked out by hand on a unit square, the tolerance's boundary, the geometry cache's
eviction order, and the request schema's count rule.

Why a unit file beside the API tests: the API tests reach this code through HTTP and a real
database (about 30 s a run), so the mutation script can afford these, and a hand-worked answer
here says exactly which number is wrong.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from pydantic import ValidationError

from kpengine.io.mesh import Mesh, save_mesh
from kpengine.io.pcd import PointCloud, save_pcd
from kpengine.server.geometry import GeometryCache, ModelGeometry, OffSurface
from kpengine.server.schemas import AnnotationIn

# The unit square in the plane z = 0, as two triangles: face 0 = (v0, v1, v2) holds x + y < 1,
# face 1 = (v1, v3, v2) holds x + y > 1.
VERTICES = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=np.float64)
FACES = np.array([[0, 1, 2], [1, 3, 2]], dtype=np.int64)
CLOUD = np.array([[0.25, 0.25, 0], [0.75, 0.75, 0], [0.875, 0.125, 0]], dtype=np.float32)
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def _geometry(mesh: bool = True, cloud: bool = True) -> ModelGeometry:
    from scipy.spatial import cKDTree

    tm = trimesh.Trimesh(VERTICES, FACES, process=False) if mesh else None
    points = CLOUD if cloud else None
    tree = cKDTree(CLOUD) if cloud else None
    return ModelGeometry(tm, points, None, tree, threading.Lock())


def test_clicks_become_their_surface_points_with_hand_worked_barycentric_weights() -> None:
    """(0.2, 0.3, 0.004) lies 0.004 above face 0; its foot is 0.5 v0 + 0.2 v1 + 0.3 v2.
    (0.8, 0.9, -0.001) lies under face 1 = (v1, v3, v2): x = a + b, y = b + c, a + b + c = 1 give
    (a, b, c) = (0.1, 0.7, 0.2). (1.003, 0.5, 0) is beside the square: its foot (1, 0.5, 0) is on
    the edge v1-v3 of face 1, weights (0.5, 0.5, 0). The nearest cloud points are 0, 1 and 2
    ((1, 0.5) is 0.3536 from (0.75, 0.75) and 0.3953 from (0.875, 0.125))."""
    clicks = _geometry().locate(
        "m1", "alice", [3, 0, 7], [(0.2, 0.3, 0.004), (0.8, 0.9, -0.001), (1.003, 0.5, 0.0)], 0.005
    )
    assert [(c.model_id, c.annotator, c.kp_index) for c in clicks] == [
        ("m1", "alice", 3),
        ("m1", "alice", 0),
        ("m1", "alice", 7),
    ]
    np.testing.assert_allclose([c.xyz for c in clicks], [(0.2, 0.3, 0), (0.8, 0.9, 0), (1, 0.5, 0)], atol=1e-12)
    assert [c.face_index for c in clicks] == [0, 1, 1]
    np.testing.assert_allclose(
        [c.face_uv for c in clicks], [(0.5, 0.2, 0.3), (0.1, 0.7, 0.2), (0.5, 0.5, 0)], atol=1e-12
    )
    assert [c.point_index for c in clicks] == [0, 1, 1]
    assert all(type(c.kp_index) is int and type(c.face_index) is int and type(c.point_index) is int for c in clicks)
    assert all(type(x) is float for c in clicks for x in (*c.xyz, *c.face_uv))


def test_the_tolerance_is_inclusive_and_a_far_click_refuses_the_whole_set() -> None:
    """Distances that are exact in binary: 0.25 above the square with tolerance 0.25 is accepted;
    a hair more is refused, naming the keypoint, where it was, its distance and the tolerance."""
    geometry = _geometry()
    (on_edge,) = geometry.locate("m", "a", [5], [(0.5, 0.25, 0.25)], 0.25)
    assert on_edge.xyz == (0.5, 0.25, 0.0)
    with pytest.raises(OffSurface) as err:
        geometry.locate("m", "a", [1, 9, 4], [(0.5, 0.5, 0.0), (0.5, 0.25, 0.5), (0.5, 0.5, 0.75)], 0.25)
    assert str(err.value) == (
        "keypoint 9 at (0.5, 0.25, 0.5) is 0.5 from the model surface; clicks must lie within 0.25"
    )
    with pytest.raises(OffSurface):
        geometry.locate("m", "a", [0], [(0.5, 0.25, 0.25 + 1e-9)], 0.25)
    assert geometry.locate("m", "a", [], [], 0.25) == []


def test_a_cloud_only_model_snaps_to_its_nearest_point_and_a_mesh_only_model_has_no_point_index() -> None:
    """Without a mesh the stored point is the nearest cloud point itself (0.1 from the click)."""
    (click,) = _geometry(mesh=False).locate("m", "a", [4], [(0.25, 0.25, 0.1)], 0.125)
    assert click.xyz == (0.25, 0.25, 0.0) and click.point_index == 0
    assert click.face_index is None and click.face_uv is None
    with pytest.raises(OffSurface, match="is 0.1 from"):
        _geometry(mesh=False).locate("m", "a", [4], [(0.25, 0.25, 0.1)], 0.0625)
    (click,) = _geometry(cloud=False).locate("m", "a", [4], [(0.75, 0.75, 0.0)], 0.01)
    assert click.point_index is None and click.face_index == 1


def _files(tmp_path: Path, name: str) -> tuple[str, str]:
    mesh, pcd = tmp_path / f"{name}.obj", tmp_path / f"{name}.pcd"
    save_mesh(mesh, Mesh(VERTICES, FACES))
    save_pcd(pcd, PointCloud(CLOUD, COLOURS))
    return str(mesh), str(pcd)


def test_cache_loads_once_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = GeometryCache(capacity=2)
    a, b, c = (_files(tmp_path, n) for n in "abc")
    ga = cache.get(*a)
    np.testing.assert_array_equal(ga.points, CLOUD)
    np.testing.assert_array_equal(ga.colors, COLOURS)  # the cloud route serves them
    np.testing.assert_array_equal(np.asarray(ga.mesh.faces), FACES)
    assert ga.tree.query([0.8, 0.7, 0])[1] == 1
    gb = cache.get(*b)
    assert cache.get(*a) is ga  # a is now the most recent: loading c evicts b
    cache.get(*c)
    assert cache.get(*a) is ga
    assert cache.get(*b) is not gb  # reloaded
    only_mesh = cache.get(a[0], None)
    assert only_mesh.points is None and only_mesh.tree is None and only_mesh.mesh is not None
    only_cloud = cache.get(None, a[1])
    assert only_cloud.mesh is None and only_cloud.points is not None
    with pytest.raises(FileNotFoundError) as err:
        cache.get(None, None)
    assert str(err.value) == "the model has no geometry on this server"
    assert not cache._loading  # no per-model loading lock is left behind, failed loads included


def test_cache_holds_64_models_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []

    def load(mesh_path: str | None, pcd_path: str | None) -> ModelGeometry:
        loads.append(mesh_path)
        return _geometry()

    monkeypatch.setattr(GeometryCache, "_load", staticmethod(load))
    cache = GeometryCache()
    for k in range(64):
        cache.get(f"{k}.obj", None)
    cache.get("0.obj", None)  # 64 fit: no reload; 0 is now the most recent
    assert loads == [f"{k}.obj" for k in range(64)]
    cache.get("64.obj", None)  # the 65th evicts the least recent, 1
    cache.get("0.obj", None)
    cache.get("1.obj", None)
    assert loads[64:] == ["64.obj", "1.obj"]


def test_cache_ready_and_warm(tmp_path: Path) -> None:
    cache = GeometryCache()
    a = _files(tmp_path, "a")
    assert not cache.ready(*a)
    cache.get(*a)
    assert not cache.ready(*a)  # loaded, not prepared
    cache.warm(*a)
    assert cache.ready(*a) and cache.get(*a).prepared
    missing = (str(tmp_path / "none.obj"), None)
    cache.warm(*missing)  # the request that needs it will say what is wrong
    assert not cache.ready(*missing)
    cloud_only = (None, a[1])  # nothing of trimesh's to build: prepared all the same
    cache.warm(*cloud_only)
    assert cache.ready(*cloud_only)


def test_concurrent_requests_for_one_model_load_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[tuple] = []

    def slow_load(mesh_path: str | None, pcd_path: str | None) -> ModelGeometry:
        loads.append((mesh_path, pcd_path))
        time.sleep(0.05)
        return _geometry()

    monkeypatch.setattr(GeometryCache, "_load", staticmethod(slow_load))
    cache = GeometryCache()
    got: list[ModelGeometry] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("m.obj", None))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == [("m.obj", None)] and len(got) == 4 and all(g is got[0] for g in got)


def test_encoded_mesh_is_cached_per_format_and_keeps_the_triangles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[tuple] = []
    real_load = GeometryCache._load

    def counted(mesh_path: str | None, pcd_path: str | None) -> ModelGeometry:
        loads.append((mesh_path, pcd_path))
        return real_load(mesh_path, pcd_path)

    monkeypatch.setattr(GeometryCache, "_load", staticmethod(counted))
    cache = GeometryCache(capacity=1)
    a = _files(tmp_path, "a")
    glb = cache.encoded(a[0], "glb", a[1])
    assert glb[:4] == b"glTF" and cache.encoded(a[0], "glb", a[1]) is glb
    ply = cache.encoded(a[0], "ply", a[1])
    assert ply.startswith(b"ply")
    back = trimesh.load(trimesh.util.wrap_as_stream(ply), file_type="ply", process=False)
    np.testing.assert_array_equal(np.asarray(back.faces), FACES)
    np.testing.assert_allclose(np.asarray(back.vertices), VERTICES)
    assert cache.encoded(a[0], "glb", a[1]) is not glb  # capacity 1: the PLY bytes evicted the GLB
    cache.get(a[0], a[1])
    assert loads == [a]  # one load: the page's mesh request and the saves share the model's geometry


def _kps(n: int) -> list[dict]:
    return [{"index": i, "xyz": [0.0, 0.0, 0.0]} for i in range(n)]


def test_annotation_schema_counts_before_it_checks_indices() -> None:
    assert len(AnnotationIn.model_validate({"keypoints": _kps(24)}).keypoints) == 24
    with pytest.raises(ValidationError, match="at most 24 keypoints per annotator per model; got 25"):
        AnnotationIn.model_validate({"keypoints": _kps(25)})  # index 24 is out of range too: the count is said
    with pytest.raises(ValidationError, match="less than 24"):
        AnnotationIn.model_validate({"keypoints": [{"index": 24, "xyz": [0, 0, 0]}]})
    for bad in (
        {"index": True, "xyz": [0, 0, 0]},
        {"index": 0, "xyz": ["0.5", 0, 0]},
        {"index": 0, "xyz": [0, 0, float("nan")]},
    ):
        with pytest.raises(ValidationError):
            AnnotationIn.model_validate({"keypoints": [bad]})
    with pytest.raises(ValidationError):
        AnnotationIn.model_validate([])  # not an object: pydantic's own refusal, the count rule steps aside
