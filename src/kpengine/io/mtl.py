"""Wavefront MTL material libraries: diffuse colour (``Kd``) and diffuse texture (``map_Kd``).

Only what kpengine renders is read: ``newmtl``, ``Kd`` (clipped to [0, 1]) and ``map_Kd``
(the last token, since options such as ``-s`` come before the file name; resolved against the
MTL's folder). Textures that cannot be read are listed, not fatal: the material falls back to
its ``Kd`` (ShapeNet ships MTLs naming textures that are not in the archive). Not read:
ambient/specular terms, transparency (``d``/``Tr``), texture options.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import write_text


@dataclass
class Material:
    """``kd`` (3,) float64 in [0, 1]; ``texture`` (H, W, 3) float32 in [0, 1] or None."""

    name: str
    kd: np.ndarray
    texture: np.ndarray | None = None


def load_mtl(path: str | Path) -> tuple[list[Material], list[str]]:
    """Materials of an MTL file and the ``map_Kd`` paths that could not be read.

    A missing file or a ``Kd`` that is not three numbers raises ``DataError`` naming the file,
    the line and the material."""
    from PIL import Image

    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError as exc:
        raise DataError("MTL file not found", path=path) from exc
    materials: list[Material] = []
    missing: list[str] = []
    current: Material | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        parts = raw.strip().split()
        if not parts:
            continue
        key = parts[0]
        if key == "newmtl":
            current = Material(" ".join(parts[1:]), np.ones(3))
            materials.append(current)
        elif current is None:
            continue
        elif key == "Kd" and len(parts) >= 4:
            try:
                current.kd = np.clip(np.array(parts[1:4], np.float64), 0.0, 1.0)
            except ValueError as exc:
                raise DataError(f"line {lineno}: material {current.name!r}: bad Kd {parts[1:4]}", path=path) from exc
        elif key == "map_Kd" and len(parts) >= 2:
            tex_path = path.parent / parts[-1]
            try:
                with Image.open(tex_path) as img:
                    current.texture = np.asarray(img.convert("RGB"), np.float32) / 255.0
            except (OSError, ValueError):
                missing.append(str(tex_path))
    return materials, missing


def save_mtl(path: str | Path, materials: Iterable[Material]) -> None:
    """Write an MTL (atomically) with each material's ``Kd`` and, when it has one, its texture
    as ``<mtl stem>_<index>.png`` beside it (8-bit, so a texture of k/255 values reads back exactly)."""
    from PIL import Image

    from kpengine.io.atomic import atomic_open

    path = Path(path)
    lines = []
    for i, m in enumerate(materials):
        lines += [f"newmtl {m.name}", "Kd {:.9g} {:.9g} {:.9g}".format(*np.asarray(m.kd, np.float64))]
        if m.texture is not None:
            name = f"{path.stem}_{i}.png"
            pixels = np.clip(np.rint(np.asarray(m.texture) * 255.0), 0, 255).astype(np.uint8)
            with atomic_open(path.parent / name, "wb") as fh:
                Image.fromarray(pixels, "RGB").save(fh, format="PNG")
            lines.append(f"map_Kd {name}")
        lines.append("")
    write_text(path, "\n".join(lines))
