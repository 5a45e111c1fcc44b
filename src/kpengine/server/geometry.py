"""Model geometry on the server: load it once, serve it, and put clicks on it.

Paths come from the store (set by an admin's import), never from a request. A click is
accepted when it lies within ``tolerance`` of the model's surface (the mesh when there is
one, else the point cloud): the server then keeps the closest surface point, its triangle
and barycentric weights (trimesh proximity) and the nearest point of the cloud, so what
is stored is always consistent with the geometry whatever the browser's float precision.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from kpengine.io.clicks import Click
from kpengine.io.mesh import load_mesh
from kpengine.io.pcd import load_pcd


class OffSurface(ValueError):
    """A click too far from the model; the message gives the distance and the tolerance."""


@dataclass
class ModelGeometry:
    mesh: object | None  # trimesh.Trimesh (imported lazily)
    points: np.ndarray | None  # (N, 3) float32
    colors: np.ndarray | None  # (N, 3) uint8
    tree: cKDTree | None
    lock: threading.Lock

    def locate(
        self, model_id: str, annotator: str, kp_index: int, xyz: tuple[float, float, float], tolerance: float
    ) -> Click:
        """Project ``annotator``'s click on ``model_id`` onto the surface; :class:`OffSurface` beyond ``tolerance``."""
        query = np.array([xyz], dtype=np.float64)
        face_index = barycentric = point_index = None
        if self.mesh is not None:
            import trimesh

            with self.lock:  # trimesh's cached BVH is built lazily and not thread-safe while building
                closest, distance, triangle = trimesh.proximity.closest_point(self.mesh, query)
            dist = float(distance[0])
            position = closest[0]
            face_index = int(triangle[0])
            bary = trimesh.triangles.points_to_barycentric(self.mesh.triangles[[face_index]], closest)[0]
            barycentric = (float(bary[0]), float(bary[1]), float(bary[2]))
        else:
            dist_pt, idx = self.tree.query(query[0])  # type: ignore[union-attr]
            dist, position = float(dist_pt), self.points[idx].astype(np.float64)  # type: ignore[index]
        if not dist <= tolerance:
            raise OffSurface(
                f"keypoint {kp_index} at ({xyz[0]:.4g}, {xyz[1]:.4g}, {xyz[2]:.4g}) is {dist:.4g} from the model "
                f"surface; clicks must lie within {tolerance:g}"
            )
        if self.tree is not None:
            point_index = int(self.tree.query(position)[1])
        return Click(
            model_id,
            annotator,
            kp_index,
            (float(position[0]), float(position[1]), float(position[2])),
            point_index=point_index,
            face_index=face_index,
            face_uv=barycentric,
        )


class GeometryCache:
    """A small LRU of loaded models (meshes of real ShapeNet models run to megabytes)."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._items: OrderedDict[tuple[str | None, str | None], ModelGeometry] = OrderedDict()
        self._bytes: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, mesh_path: str | None, pcd_path: str | None) -> ModelGeometry:
        key = (mesh_path, pcd_path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        geometry = self._load(mesh_path, pcd_path)
        with self._lock:
            self._items[key] = geometry
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return geometry

    @staticmethod
    def _load(mesh_path: str | None, pcd_path: str | None) -> ModelGeometry:
        mesh = points = colors = tree = None
        if mesh_path:
            mesh = load_mesh(Path(mesh_path)).to_trimesh()
        if pcd_path:
            cloud = load_pcd(Path(pcd_path))
            points, colors, tree = cloud.points, cloud.colors, cKDTree(cloud.points)
        if mesh is None and points is None:
            raise FileNotFoundError("the model has no geometry on this server")
        return ModelGeometry(mesh, points, colors, tree, threading.Lock())

    def encoded(self, mesh_path: str, fmt: str) -> bytes:
        """The mesh as GLB or PLY bytes (cached); triangles keep the file order of the source."""
        key = (mesh_path, fmt)
        with self._lock:
            if key in self._bytes:
                return self._bytes[key]
        mesh = self.get(mesh_path, None).mesh
        data = mesh.export(file_type=fmt)  # type: ignore[union-attr]
        with self._lock:
            self._bytes[key] = data
            while len(self._bytes) > self.capacity:
                self._bytes.popitem(last=False)
        return data
