"""Surface appearance of OBJ models: MTL diffuse colours (``Kd``) and diffuse textures (``map_Kd``).

The MTL format itself is read by :mod:`kpengine.io.mtl`.

The OBJ is read here a second time, for appearance only, with the *same* face order and polygon
fan as :func:`kpengine.io.mesh.load_mesh` (file order; ``f a b c d`` -> ``(a, b, c), (a, c, d)``),
so face ``i`` of the :class:`Appearance` is face ``i`` of the keypoint mesh and KeypointNet's
``face_index`` stays valid for renders coloured with it. (trimesh regroups faces by material, so a
trimesh-loaded appearance mesh has the same surface in another face order; it is not used here.)

Colour of a surface point = ``Kd`` of its face's material, times the texture sampled (bilinear,
wrapping) at the point's UV when the material has a readable ``map_Kd`` and the face has UVs.
Faces before any ``usemtl`` or naming an unknown material get no material (grey in the renderer).
Not modelled: ambient/specular terms, transparency (``d``/``Tr``), texture options (``-s``, ``-o``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kpengine.errors import DataError
from kpengine.io.mtl import Material, load_mtl

DEFAULT_GREY = np.array([0.72, 0.72, 0.72])


@dataclass
class Appearance:
    """Per-face appearance, aligned with a mesh's faces (F of them).

    ``face_material`` (F,) int64 index into ``materials`` or -1; ``face_uv`` (F, 3, 2) float64
    texture coordinates of each corner (NaN where the face has none) or None when the file has no
    UVs; ``missing_textures`` lists ``map_Kd`` files that could not be read (those materials fall
    back to their ``Kd``).
    """

    materials: list[Material]
    face_material: np.ndarray
    face_uv: np.ndarray | None = None
    missing_textures: list[str] = field(default_factory=list)

    @property
    def n_faces(self) -> int:
        return len(self.face_material)

    def colors(self, faces: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """Base colours of surface points: ``faces`` (N,) int face ids, ``bary`` (N, 3) barycentric
        weights of the points in those faces. Returns (N, 3) float64 in [0, 1]."""
        faces = np.asarray(faces, np.int64)
        out = np.broadcast_to(DEFAULT_GREY, (len(faces), 3)).copy()
        mat = self.face_material[faces]
        for m, material in enumerate(self.materials):
            sel = np.nonzero(mat == m)[0]
            if len(sel) == 0:
                continue
            out[sel] = material.kd
            if material.texture is None or self.face_uv is None:
                continue
            uv = np.einsum("nk,nkc->nc", bary[sel], self.face_uv[faces[sel]])
            ok = np.isfinite(uv).all(axis=1)
            out[sel[ok]] = material.kd * sample_texture(material.texture, uv[ok])
        return out


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup with wrap-around. ``texture`` (H, W, 3); ``uv`` (N, 2) OBJ texture coordinates
    (u right, v *up*: v = 0 is the bottom row of the image; texel centres at ((j + 0.5) / W,
    1 - (i + 0.5) / H)). Returns (N, 3) float64."""
    h, w = texture.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64)
    xa, xb = x0 % w, (x0 + 1) % w
    ya, yb = y0 % h, (y0 + 1) % h
    t = texture
    top = t[ya, xa] * (1 - fx) + t[ya, xb] * fx
    bottom = t[yb, xa] * (1 - fx) + t[yb, xb] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float64)


def load_obj_appearance(path: str | Path) -> Appearance:
    """Per-face materials and UVs of an OBJ, faces in the order of :func:`kpengine.io.mesh.load_mesh`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("OBJ file not found", path=path)
    n_vt = 0
    vts: list[list[bytes]] = []
    face_mat: list[int] = []
    face_vt: list[list[int]] = []
    mtl_files: list[str] = []
    names: dict[str, int] = {}
    current = -1
    materials: list[Material] = []
    missing: list[str] = []
    with open(path, "rb") as fh:
        lines = fh.read().splitlines()
    for raw in lines:  # material libraries first: usemtl may come before mtllib in odd files
        if raw.startswith(b"mtllib"):
            mtl_files.extend(tok.decode(errors="replace") for tok in raw.split()[1:])
    for name in mtl_files:
        mtl = path.parent / name
        if mtl.is_file():
            mats, miss = load_mtl(mtl)
            for m in mats:
                names.setdefault(m.name, len(materials))
                materials.append(m)
            missing.extend(miss)
    for raw in lines:
        if raw.startswith(b"vt "):
            vts.append(raw.split()[1:3])
            n_vt += 1
        elif raw.startswith(b"usemtl"):
            current = names.get(raw[6:].strip().decode(errors="replace"), -1)
        elif raw.startswith(b"f "):
            toks = raw.split()[1:]
            idx = []
            for tok in toks:
                sub = tok.split(b"/")
                if len(sub) > 1 and sub[1]:
                    t = int(sub[1])
                    idx.append(t - 1 if t > 0 else n_vt + t)
                else:
                    idx.append(-1)
            for k in range(1, len(toks) - 1):
                face_mat.append(current)
                face_vt.append([idx[0], idx[k], idx[k + 1]])
    face_material = np.array(face_mat, np.int64)
    face_uv = None
    if vts:
        try:
            uv = np.array(vts, np.float64).reshape(-1, 2)
        except ValueError as exc:
            raise DataError(f"malformed vt line in OBJ ({exc})", path=path) from exc
        fv = np.array(face_vt, np.int64).reshape(-1, 3)
        bad = (fv < 0) | (fv >= len(uv))
        face_uv = uv[np.clip(fv, 0, len(uv) - 1)]
        face_uv[bad] = np.nan
    return Appearance(materials, face_material, face_uv, missing)
