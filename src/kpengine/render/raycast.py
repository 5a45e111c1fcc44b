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
from pathlib import Path
from typing import Literal

import numpy as np

from kpengine.errors import DataError
from kpengine.io.mesh import Mesh
from kpengine.render.appearance import DEFAULT_GREY, Appearance, load_obj_appearance
from kpengine.render.cameras import Camera

Backend = Literal["embree", "numpy"]
__all__ = ["DEFAULT_GREY", "MeshRenderer", "Render", "compose", "shade", "twin_faces"]


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


def twin_faces(faces: np.ndarray) -> np.ndarray:
    """(F,) index of the other face over the same three vertex ids (a coincident copy), or -1; only
    for vertex triples used exactly twice. ``faces`` (F, 3) int."""
    twin = np.full(len(faces), -1, np.int64)
    if len(faces) == 0:
        return twin
    _, inverse, counts = np.unique(np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    pair = counts[inverse[order]] == 2
    first = order[pair][0::2]
    second = order[pair][1::2]
    twin[first], twin[second] = second, first
    return twin


class MeshRenderer:
    """Ray-cast renderer for one mesh; build once, render many views.

    ``mesh``: vertices (V, 3), faces (F, 3). Base colour, first that applies: ``appearance``
    (MTL ``Kd`` colours and textures sampled at the hit's UV, faces aligned with ``mesh.faces``;
    see :meth:`from_obj`), the mesh's ``vertex_colors`` (V, 3) uint8 interpolated, ``face_colors``
    (F, 3) in [0, 1], grey.
    """

    def __init__(
        self,
        mesh: Mesh,
        backend: Backend = "embree",
        face_colors: np.ndarray | None = None,
        name: str = "mesh",
        appearance: Appearance | None = None,
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
        if appearance is not None and appearance.n_faces != len(mesh.faces):
            raise DataError(
                f"appearance has {appearance.n_faces} faces, the mesh {len(mesh.faces)}: not the same face order",
                path=name,
            )
        self.appearance = appearance
        self._twin = twin_faces(mesh.faces)
        if backend == "embree":
            from trimesh.ray.ray_pyembree import RayMeshIntersector
        elif backend == "numpy":
            from trimesh.ray.ray_triangle import RayMeshIntersector
        else:
            raise ValueError(f"unknown backend {backend!r}; choose 'embree' or 'numpy'")
        self.backend = backend
        self._intersector = RayMeshIntersector(self._tm)

    @classmethod
    def from_obj(cls, path: str | Path, mesh: Mesh | None = None, **kwargs) -> MeshRenderer:
        """Renderer for an OBJ with its MTL colours and textures. ``mesh`` defaults to
        ``load_mesh(path)`` (file face order, so ``Render.index`` is KeypointNet's face_index)."""
        from kpengine.io.mesh import load_mesh

        mesh = load_mesh(path) if mesh is None else mesh
        return cls(mesh, appearance=load_obj_appearance(path), name=str(path), **kwargs)

    def _front(self, faces: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """For colour only: a hit on the back of a face that has a coincident reversed twin (ShapeNet
        stores double-sided surfaces as two copies, often with different materials, and the ray caster
        picks either) is coloured by the twin that faces the camera. ``faces`` (N,), ``dirs`` (N, 3)."""
        twin = self._twin[faces]
        back = (np.einsum("nd,nd->n", self.face_normals[faces], dirs) > 0) & (twin >= 0)
        out = faces.copy()
        out[back] = twin[back]
        return out

    def _barycentric(self, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
        from trimesh.triangles import points_to_barycentric

        tri = self.mesh.vertices[self.mesh.faces[faces]]
        bary = np.clip(points_to_barycentric(tri, points), 0.0, 1.0)
        return bary / np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)

    def _base_colors(self, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
        if self.appearance is not None:
            return self.appearance.colors(faces, self._barycentric(faces, points))
        if self.mesh.vertex_colors is not None:
            bary = self._barycentric(faces, points)
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
        fg[hit] = shade(self._base_colors(self._front(face[hit], dirs[hit]), loc[hit]), n, dirs[hit], light)
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
