"""Where files live under a KeypointNet-style dataset root.

::

    ROOT/annotations/<category>.json     (or ROOT/annotations/all.json)
    ROOT/splits/{train,val,test}.txt
    ROOT/pcds/<synset>/<model_id>.pcd
    ROOT/meshes/<synset>/<model_id>/models/model_normalized.obj   (ShapeNetCore.v2 layout)
    ROOT/meshes/<synset>/<model_id>.{obj,ply,glb,gltf,off,stl}   (flat layout: any registered mesh format)
"""

from __future__ import annotations

from pathlib import Path

from kpengine.io.mesh import READERS


def mesh_suffixes() -> tuple[str, ...]:
    """The registered mesh formats (:data:`kpengine.io.mesh.READERS`), OBJ first."""
    return tuple(READERS)


def annotation_path(root: Path, category: str) -> Path | None:
    """The per-category file if present, else the official ``all.json``, else None."""
    for candidate in (root / "annotations" / f"{category}.json", root / "annotations" / "all.json"):
        if candidate.is_file():
            return candidate
    return None


def split_path(root: Path, split: str) -> Path:
    return root / "splits" / f"{split}.txt"


def pcd_path(root: Path, synset: str, model_id: str) -> Path:
    return root / "pcds" / synset / f"{model_id}.pcd"


def mesh_path(root: Path, synset: str, model_id: str) -> Path | None:
    """The model's mesh file, ShapeNet layout first; None when there is none."""
    shapenet = root / "meshes" / synset / model_id / "models" / "model_normalized.obj"
    if shapenet.is_file():
        return shapenet
    for suffix in mesh_suffixes():
        flat = root / "meshes" / synset / f"{model_id}{suffix}"
        if flat.is_file():
            return flat
    return None


def mesh_dir_ids(root: Path, synset: str) -> list[str]:
    """Model ids that have an entry (file or folder) under ``meshes/<synset>``."""
    folder = root / "meshes" / synset
    if not folder.is_dir():
        return []
    return sorted({p.name.split(".")[0] if p.is_file() else p.name for p in folder.iterdir()})
