"""Triangle meshes: ShapeNet OBJ in file order, and any format trimesh reads.

KeypointNet's ``mesh_info.face_index`` indexes the triangles of ``model_normalized.obj``
*in file order*. trimesh regroups OBJ faces by material, which breaks that indexing
(checked on the real bathtub meshes: barycentric rebuilds were off by up to 0.87), so OBJ
is read by a small parser here that keeps file order and fans polygons into triangles.
Other formats (PLY, GLB, OFF, STL, ...) go through trimesh with processing turned off.

Formats are a registry keyed by file suffix (:data:`READERS`, :data:`WRITERS`, as trimesh's
own loader table): :func:`register_mesh_format` adds one, and the dataset layout looks for
mesh files with exactly the registered suffixes. A suffix that is not registered is tried
with trimesh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import atomic_open


@dataclass
class Mesh:
    """Vertices (V, 3) float64, triangles (F, 3) int64, optional vertex colours (V, 3) uint8."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None

    def to_trimesh(self):  # noqa: ANN201 - trimesh is imported lazily
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=self.vertex_colors, process=False)


def _read_obj(path: Path) -> Mesh:
    verts: list[list[str]] = []
    faces: list[list[int]] = []
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.startswith(b"v "):
                verts.append(raw.split()[1:4])
            elif raw.startswith(b"f "):
                idx = [int(tok.split(b"/", 1)[0]) for tok in raw.split()[1:]]
                n_v = len(verts)
                idx = [i - 1 if i > 0 else n_v + i for i in idx]  # 1-based, negatives are relative
                faces.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    try:
        vertices = np.array(verts, dtype=np.float64).reshape(-1, 3)
    except ValueError as exc:
        raise DataError(f"malformed vertex line in OBJ ({exc})", path=path) from exc
    return Mesh(vertices, np.array(faces, dtype=np.int64).reshape(-1, 3))


def _glb_problem(path: Path) -> str | None:
    """What is structurally wrong with a binary glTF file, in words (None: nothing found).

    trimesh reports a truncated GLB as a bare ``AssertionError``; this reads the 12-byte
    header, the chunk headers and the buffer views to say which part is short.
    """
    import json
    import struct

    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"glTF":
        return f"not a GLB file: it does not start with the 'glTF' header ({len(data):,} bytes)"
    _, _, declared = struct.unpack_from("<4sII", data)
    if declared > len(data):
        return f"truncated GLB: the header declares {declared:,} bytes, the file has {len(data):,}"
    chunks: dict[bytes, bytes] = {}
    at = 12
    while at + 8 <= len(data):
        size, kind = struct.unpack_from("<I4s", data, at)
        if at + 8 + size > len(data):
            name = kind.decode(errors="replace").strip("\0 ")
            return f"truncated GLB: the {name} chunk needs {size:,} bytes, {len(data) - at - 8:,} remain"
        chunks[kind] = data[at + 8 : at + 8 + size]
        at += 8 + size
    try:
        gltf = json.loads(chunks.get(b"JSON", b"{}"))
    except ValueError as exc:
        return f"malformed GLB: its JSON chunk does not parse ({exc})"
    binary = len(chunks.get(b"BIN\0", b""))
    for view in gltf.get("bufferViews", []) if isinstance(gltf, dict) else []:
        end = int(view.get("byteOffset", 0)) + int(view.get("byteLength", 0))
        if view.get("buffer", 0) == 0 and end > binary:
            return f"truncated GLB: a buffer view needs {end:,} bytes, the BIN chunk has {binary:,}"
    return None


def _read_with_trimesh(path: Path) -> Mesh:
    import trimesh

    try:
        loaded = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for truncated files
        why = _glb_problem(path) if path.suffix.lower() == ".glb" else None
        raise DataError(why or f"unreadable mesh ({type(exc).__name__}: {exc})", path=path) from exc
    if not isinstance(loaded, trimesh.Trimesh):
        raise DataError("file holds no triangle mesh (empty or truncated?)", path=path)
    colors = None
    if loaded.visual.kind == "vertex":
        colors = np.asarray(loaded.visual.vertex_colors)[:, :3].astype(np.uint8)
    return Mesh(np.asarray(loaded.vertices, np.float64), np.asarray(loaded.faces, np.int64), colors)


def _write_obj(path: Path, mesh: Mesh) -> None:
    with atomic_open(path, "w") as fh:
        np.savetxt(fh, mesh.vertices, fmt="v %.9g %.9g %.9g")
        np.savetxt(fh, mesh.faces + 1, fmt="f %d %d %d")


def _write_with_trimesh(path: Path, mesh: Mesh) -> None:
    data = mesh.to_trimesh().export(file_type=path.suffix.lower().lstrip("."))
    with atomic_open(path, "wb") as fh:
        fh.write(data if isinstance(data, bytes) else data.encode())


MeshReader = Callable[[Path], Mesh]
MeshWriter = Callable[[Path, Mesh], None]

#: Reader per lower-case suffix; OBJ keeps file order (see the module docstring).
READERS: dict[str, MeshReader] = {
    ".obj": _read_obj,
    ".ply": _read_with_trimesh,
    ".glb": _read_with_trimesh,
    ".gltf": _read_with_trimesh,
    ".off": _read_with_trimesh,
    ".stl": _read_with_trimesh,
}
#: Writer per lower-case suffix; every writer is atomic.
WRITERS: dict[str, MeshWriter] = {".obj": _write_obj, **{s: _write_with_trimesh for s in READERS if s != ".obj"}}


def register_mesh_format(suffix: str, reader: MeshReader | None = None, writer: MeshWriter | None = None) -> None:
    """Read (and/or write) files ending in ``suffix`` (e.g. ``".npz"``) with these functions."""
    suffix = suffix.lower() if suffix.startswith(".") else f".{suffix.lower()}"
    if reader is not None:
        READERS[suffix] = reader
    if writer is not None:
        WRITERS[suffix] = writer


def load_mesh(path: str | Path) -> Mesh:
    """Read a triangle mesh and check it: non-empty, finite, indices in range."""
    path = Path(path)
    if not path.is_file():
        raise DataError("mesh file not found", path=path)
    if path.stat().st_size == 0:
        raise DataError("mesh file is empty", path=path)
    mesh = READERS.get(path.suffix.lower(), _read_with_trimesh)(path)
    if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise DataError(f"mesh has {len(mesh.vertices)} vertices and {len(mesh.faces)} faces", path=path)
    if not np.isfinite(mesh.vertices).all():
        raise DataError("mesh has NaN or infinite vertex coordinates", path=path)
    if mesh.faces.min() < 0 or mesh.faces.max() >= len(mesh.vertices):
        raise DataError(
            f"face indices out of range [0, {len(mesh.vertices)}) (min {mesh.faces.min()}, max {mesh.faces.max()})",
            path=path,
        )
    return mesh


def save_mesh(path: str | Path, mesh: Mesh) -> None:
    """Write OBJ (file order preserved, so face indices stay valid) or any trimesh format."""
    path = Path(path)
    WRITERS.get(path.suffix.lower(), _write_with_trimesh)(path, mesh)
