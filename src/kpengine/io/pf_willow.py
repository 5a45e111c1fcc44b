"""PF-WILLOW (Ham et al., "Proposal Flow", CVPR 2016): photos in groups, 10 corresponding keypoints each.

Layout (as shipped in ``../shared/data/images/pf_willow``): one folder per group
(``car_G``, ``winebottle_M``, ...; the original names had the suffix in parentheses, ``car(G)``),
in it ``NAME.png`` and ``NAME.mat`` per photo. The MAT file holds ``pts_coord``, a 2 x 10 array of
(x; y) pixel coordinates; keypoint k of one photo corresponds to keypoint k of every other photo
of its group. The usual test is every ordered pair within a group (90 per group, 900 in all),
scored with PCK at ``alpha * max(h, w)`` of the *target keypoints'* bounding box
(:func:`kpengine.metrics.pck2d.keypoint_box_size`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.errors import DataError

N_KEYPOINTS = 10
#: the folder name of each group in the original release
ORIGINAL_NAMES = {
    "car_G": "car(G)",
    "car_M": "car(M)",
    "car_S": "car(S)",
    "duck_S": "duck(S)",
    "motorbike_G": "motorbike(G)",
    "motorbike_M": "motorbike(M)",
    "motorbike_S": "motorbike(S)",
    "winebottle_M": "winebottle(M)",
    "winebottle_wC": "winebottle(w/C)",
    "winebottle_woC": "winebottle(w/oC)",
}


@dataclass(frozen=True)
class WillowPhoto:
    """One photo: its file, group, name and keypoints (10, 2) float64 as (x, y) pixels."""

    path: Path
    group: str
    name: str
    points: np.ndarray


def _points(mat: Path) -> np.ndarray:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if not mat.is_file():
        raise DataError("keypoint file missing (each NAME.png needs NAME.mat)", path=mat)
    try:
        data = loadmat(mat)
    except (MatReadError, ValueError, OSError, IndexError, TypeError) as exc:  # scipy raises IndexError on short files
        raise DataError(f"not a readable MAT file ({exc})", path=mat) from exc
    if "pts_coord" not in data:
        raise DataError(f"no 'pts_coord' field (fields: {sorted(k for k in data if not k.startswith('__'))})", path=mat)
    pts = np.asarray(data["pts_coord"])
    if pts.shape != (2, N_KEYPOINTS):
        raise DataError(f"pts_coord is {pts.shape}, expected (2, {N_KEYPOINTS}) as (x; y) rows", path=mat)
    if not np.issubdtype(pts.dtype, np.number) or not np.isfinite(pts.astype(np.float64)).all():
        raise DataError("pts_coord has non-numeric or non-finite values", path=mat)
    return pts.astype(np.float64).T.copy()


def load_group(folder: str | Path) -> list[WillowPhoto]:
    """The photos of one group folder, sorted by name; each point must lie inside its photo (1 px slack)."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("PF-WILLOW group folder missing", path=folder)
    photos = []
    for png in sorted(folder.glob("*.png")):
        pts = _points(png.with_suffix(".mat"))
        try:
            with Image.open(png) as im:
                w, h = im.size
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"not a readable image ({exc})", path=png) from exc
        outside = (pts[:, 0] < -1) | (pts[:, 0] > w + 1) | (pts[:, 1] < -1) | (pts[:, 1] > h + 1)
        if outside.any():
            k = int(np.argmax(outside))
            raise DataError(
                f"keypoint {k} at ({pts[k, 0]:.1f}, {pts[k, 1]:.1f}) lies outside the {w}x{h} photo",
                path=png.with_suffix(".mat"),
            )
        photos.append(WillowPhoto(png, folder.name, png.stem, pts))
    if len(photos) < 2:
        raise DataError(f"{len(photos)} photos with keypoints; a group needs at least 2 to make pairs", path=folder)
    return photos


def load_pf_willow(root: str | Path, groups: tuple[str, ...] | None = None) -> dict[str, list[WillowPhoto]]:
    """Every group (or the chosen ones) of a PF-WILLOW folder: ``{group: [photo, ...]}``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("PF-WILLOW folder missing", path=root)
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if groups is None else list(groups)
    if not names:
        raise DataError("no group folders (expected car_G, winebottle_M, ...)", path=root)
    return {g: load_group(root / g) for g in names}


def willow_pairs(photos: list[WillowPhoto]) -> list[tuple[WillowPhoto, WillowPhoto]]:
    """Every ordered (source, target) pair of distinct photos: n (n - 1) pairs."""
    return [(s, t) for s in photos for t in photos if s.path != t.path]
