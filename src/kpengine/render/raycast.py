"""Render triangle meshes by ray casting: depth, normals, silhouette, shaded colour.

One ray per pixel centre (conventions in :mod:`kpengine.render.cameras`); the first hit
gives the triangle, the 3D point, its depth and its normal. The ray caster is Embree
through trimesh (``backend="embree"``, the default); ``backend="numpy"`` is trimesh's
pure-NumPy ray/triangle tester, kept as a slow reference and for the benchmark. The BVH is
built once per :class:`MeshRenderer`, and a batch of views is cast in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kpengine.errors import DataError
from kpengine.io.mesh import Mesh
from kpengine.render.cameras import Camera

Backend = Literal["embree", "numpy"]
DEFAULT_GREY = np.array([0.72, 0.72, 0.72])


@dataclass
class Render:
    """One rendered view. Background pixels have ``mask`` False, depth 0, normal 0, index -1.

    ``depth`` (H, W) float32 z-depth along the optical axis; ``normals`` (H, W, 3) float32 unit
    world-frame normals turned towards the camera; ``mask`` (H, W) bool silhouette;
    ``index`` (H, W) int64 triangle (meshes) or point (splats) seen at each pixel;
    ``location`` (H, W, 3) float32 world position seen; ``color`` (H, W, 3) uint8 shaded colour
    over the background.
    """

    camera: Camera
    depth: np.ndarray
    normals: np.ndarray
    mask: np.ndarray
    index: np.ndarray
    location: np.ndarray
    color: np.ndarray


def shade(
    base: np.ndarray, normals: np.ndarray, view_dirs: np.ndarray, light: np.ndarray | None = None, ambient: float = 0.35
) -> np.ndarray:
    """Lambertian shading. ``base`` (N, 3) in [0, 1], ``normals`` (N, 3) unit facing the viewer,
    ``view_dirs`` (N, 3) unit rays from the camera; ``light`` (3,) direction *towards* the light in
    the world frame, or None for a headlight. Returns (N, 3) in [0, 1]."""
    if light is None:
        lambert = np.abs(np.einsum("nd,nd->n", normals, view_dirs))
    else:
        lambert = np.clip(normals @ (np.asarray(light, np.float64) / np.linalg.norm(light)), 0.0, 1.0)
    return np.clip(base * (ambient + (1.0 - ambient) * lambert)[:, None], 0.0, 1.0)


def compose(fg: np.ndarray, mask: np.ndarray, background: np.ndarray | Sequence[float] | None = None) -> np.ndarray:
    """Foreground colours (H, W, 3) in [0, 1] over ``background`` (an (H, W, 3) image in [0, 1] or
    one RGB colour; white by default) -> (H, W, 3) uint8."""
    h, w = mask.shape
    bg = np.ones(3) if background is None else np.asarray(background, np.float64)
    bg = np.broadcast_to(bg if bg.ndim == 3 else bg.reshape(1, 1, 3), (h, w, 3))
    out = np.where(mask[..., None], fg, bg)
    return np.round(np.clip(out, 0.0, 1.0) * 255).astype(np.uint8)


class MeshRenderer:
    """Ray-cast renderer for one mesh; build once, render many views.

    ``mesh``: vertices (V, 3), faces (F, 3); ``vertex_colors`` (V, 3) uint8 are interpolated
    when present, else ``face_colors`` (F, 3) in [0, 1] if given, else grey.
    """

    def __init__(
        self,
        mesh: Mesh,
        backend: Backend = "embree",
        face_colors: np.ndarray | None = None,
        name: str = "mesh",
    ):
        if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
            raise DataError(
                f"cannot render an empty mesh ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces)", path=name
            )
        if not np.isfinite(mesh.vertices).all():
            raise DataError("cannot render a mesh with NaN or infinite vertices", path=name)
        import trimesh

        self.mesh = mesh
        self._tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        tri = mesh.vertices[mesh.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        self.face_normals = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)
        self.face_colors = None if face_colors is None else np.asarray(face_colors, np.float64)
        if backend == "embree":
            from trimesh.ray.ray_pyembree import RayMeshIntersector
        elif backend == "numpy":
            from trimesh.ray.ray_triangle import RayMeshIntersector
        else:
            raise ValueError(f"unknown backend {backend!r}; choose 'embree' or 'numpy'")
        self.backend = backend
        self._intersector = RayMeshIntersector(self._tm)

    def _base_colors(self, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
        if self.mesh.vertex_colors is not None:
            from trimesh.triangles import points_to_barycentric

            tri = self.mesh.vertices[self.mesh.faces[faces]]
            bary = np.clip(points_to_barycentric(tri, points), 0.0, 1.0)
            cols = self.mesh.vertex_colors[self.mesh.faces[faces]].astype(np.float64) / 255.0
            return np.einsum("nk,nkc->nc", bary, cols)
        if self.face_colors is not None:
            return self.face_colors[faces]
        return np.broadcast_to(DEFAULT_GREY, (len(faces), 3))

    def render(
        self, camera: Camera, background: np.ndarray | Sequence[float] | None = None, light: np.ndarray | None = None
    ) -> Render:
        return self.render_batch([camera], [background], light)[0]

    def render_batch(
        self,
        cameras: Sequence[Camera],
        backgrounds: Sequence[np.ndarray | Sequence[float] | None] | None = None,
        light: np.ndarray | None = None,
    ) -> list[Render]:
        """Render every camera; all rays go to the ray caster in one call."""
        origins, dirs, offsets = [], [], [0]
        for cam in cameras:
            o, d = cam.rays()
            origins.append(o)
            dirs.append(d)
            offsets.append(offsets[-1] + len(o))
        origins_all, dirs_all = np.concatenate(origins), np.concatenate(dirs)
        faces, rays, locs = self._intersector.intersects_id(
            origins_all, dirs_all, multiple_hits=False, return_locations=True
        )
        hit_face = np.full(len(origins_all), -1, np.int64)
        hit_loc = np.zeros((len(origins_all), 3))
        hit_face[rays] = faces
        hit_loc[rays] = locs
        out = []
        for k, cam in enumerate(cameras):
            sl = slice(offsets[k], offsets[k + 1])
            bg = None if backgrounds is None else backgrounds[k]
            out.append(self._assemble(cam, hit_face[sl], hit_loc[sl], dirs_all[sl], bg, light))
        return out

    def _assemble(self, cam: Camera, face: np.ndarray, loc: np.ndarray, dirs: np.ndarray, background, light) -> Render:
        h, w = cam.height, cam.width
        hit = face >= 0
        depth = np.zeros(h * w)
        depth[hit] = cam.to_camera(loc[hit])[:, 2]
        normals = np.zeros((h * w, 3))
        n = self.face_normals[face[hit]]
        n *= -np.sign(np.einsum("nd,nd->n", n, dirs[hit]) + 1e-12)[:, None]  # face the camera
        normals[hit] = n
        fg = np.zeros((h * w, 3))
        fg[hit] = shade(self._base_colors(face[hit], loc[hit]), n, dirs[hit], light)
        mask = hit.reshape(h, w)
        return Render(
            camera=cam,
            depth=depth.reshape(h, w).astype(np.float32),
            normals=normals.reshape(h, w, 3).astype(np.float32),
            mask=mask,
            index=face.reshape(h, w),
            location=loc.reshape(h, w, 3).astype(np.float32),
            color=compose(fg.reshape(h, w, 3), mask, background),
        )
