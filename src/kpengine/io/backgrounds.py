"""Find real photos to cut training backgrounds from, each with where its object is (to stay off it).

Understood layouts under a root (``../shared/data/images`` here; see its README):

- ``<name>_rgb.<ext>`` with ``<name>_mask.png``: the object's mask.
- ``epfl_cars/``: ``tripod_seq_SS_NNN.jpg`` with ``bbox_SS.txt`` (``x y w h`` per frame).
- ``spair/*.json`` (SPair-71k pair entries): ``source_path``/``target_path`` with their ``*_bounding_box``
  ``[x0, y0, x1, y1]``.
- ``pf_willow/<group>/<name>.png`` with ``<name>.mat`` (``pts_coord`` 2 x 10 keypoints): the keypoints'
  box widened by half its size on each side (keypoints lie inside the object, the object reaches beyond).

Photos whose object cannot be located are left out (a background with an unknown object in it would
teach the networks that objects are background). Images that evaluation uses are held out by default
(``HELD_OUT``): EPFL cars sequences 11-20 (the standard test half), PF-WILLOW, the chair demo photo and
the SPair pair (benchmarks/see_spair.py measures on it; its sky crops were training backgrounds until
2026-11-27).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kpengine.errors import DataError, Problem

HELD_OUT = ("epfl_cars:test", "pf_willow", "chair_photo", "spair")
_EPFL = re.compile(r"tripod_seq_(\d+)_(\d+)\.jpe?g$", re.IGNORECASE)


@dataclass(frozen=True)
class BackgroundPhoto:
    """A photo and where its object is: ``boxes`` ``[(x0, y0, x1, y1), ...]`` pixels (exclusive ends), and/or
    ``mask_path`` (non-zero = object). ``source`` names the layout it came from."""

    path: Path
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    mask_path: Path | None = None
    source: str = ""


@dataclass
class BackgroundIndex:
    photos: list[BackgroundPhoto] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _epfl(root: Path, out: BackgroundIndex, held_out: tuple[str, ...]) -> None:
    boxes: dict[int, list[list[float]]] = {}
    for f in sorted(root.glob("bbox_*.txt")):
        try:
            seq = int(f.stem.split("_")[1])
            boxes[seq] = [[float(v) for v in ln.split()] for ln in f.read_text().splitlines() if ln.strip()]
        except (ValueError, IndexError) as exc:
            out.problems.append(Problem(f.name, f"unreadable box file ({exc})", str(f)))
    for img in sorted(root.iterdir()):
        m = _EPFL.search(img.name)
        if not m:
            continue
        seq, frame = int(m.group(1)), int(m.group(2))
        if "epfl_cars:test" in held_out and seq >= 11:
            continue
        rows = boxes.get(seq, [])
        if frame - 1 >= len(rows) or len(rows[frame - 1]) != 4:
            out.problems.append(Problem(img.name, "no box for this frame", str(img)))
            continue
        x, y, w, h = rows[frame - 1]
        out.photos.append(BackgroundPhoto(img, ((x, y, x + w, y + h),), source="epfl_cars"))


def _spair(root: Path, out: BackgroundIndex) -> None:
    seen: dict[str, list[tuple[float, ...]]] = {}
    for f in sorted(root.glob("*.json")):
        try:
            entries = json.loads(f.read_text())
            entries = entries if isinstance(entries, list) else [entries]
            for e in entries:
                for side in ("source", "target"):
                    seen.setdefault(e[f"{side}_path"], []).append(tuple(float(v) for v in e[f"{side}_bounding_box"]))
        except (ValueError, KeyError, TypeError) as exc:
            out.problems.append(Problem(f.name, f"unreadable SPair entry ({exc})", str(f)))
    for name, bxs in seen.items():
        img = root / name
        if img.is_file():
            out.photos.append(BackgroundPhoto(img, tuple(dict.fromkeys(bxs)), source="spair"))


def _pf_willow(root: Path, out: BackgroundIndex) -> None:
    from scipy.io import loadmat

    for img in sorted(root.glob("*/*.png")):
        mat = img.with_suffix(".mat")
        try:
            pts = np.asarray(loadmat(mat)["pts_coord"], np.float64)
            x0, y0 = pts[0].min(), pts[1].min()
            x1, y1 = pts[0].max(), pts[1].max()
            pw, ph = 0.5 * (x1 - x0), 0.5 * (y1 - y0)
            out.photos.append(BackgroundPhoto(img, ((x0 - pw, y0 - ph, x1 + pw, y1 + ph),), source="pf_willow"))
        except (OSError, KeyError, ValueError, IndexError) as exc:
            out.problems.append(Problem(img.name, f"no keypoints to locate the object ({exc})", str(mat)))


def find_background_photos(root: str | Path, held_out: tuple[str, ...] = HELD_OUT) -> BackgroundIndex:
    """Every photo under ``root`` whose object can be located (layouts in the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("background photo folder not found", path=root)
    out = BackgroundIndex()
    for mask in sorted(root.rglob("*_mask.png")):
        stem = mask.name[: -len("_mask.png")]
        if "chair_photo" in held_out and stem == "chair_photo":
            continue
        rgb = [p for p in mask.parent.glob(f"{stem}_rgb.*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
        if rgb:
            out.photos.append(BackgroundPhoto(rgb[0], (), mask, source="mask"))
    for sub in sorted(p for p in root.rglob("*") if p.is_dir()):
        if (sub / "bbox_01.txt").is_file():
            _epfl(sub, out, held_out)
        elif sub.name == "spair" or any(sub.glob("spair_*.json")):
            if "spair" not in held_out:
                _spair(sub, out)
        elif sub.name == "pf_willow" and "pf_willow" not in held_out:
            _pf_willow(sub, out)
    return out
