"""Render sets on disk: training images rendered from shapes, with masks, maps, cameras and 2D keypoints.

Layout of a render set folder ``DIR``::

    index.json                      header + every view (below); rewritten atomically after each category
    shards/<category>/<model_id>.json   one shape's views, written when its images are: resuming skips these
    images/<category>/<view_id>.png     RGB (H, W, 3): the render composited on its background
    masks/<category>/<view_id>.png      object mask, 0 / 255
    depth/<category>/<view_id>.png      16-bit: z-depth * header["depth_scale"] (model units), 0 off the object
    normals/<category>/<view_id>.png    8-bit RGB: world-frame unit normal n as round((n + 1) * 127.5), 0 off it

``index.json``: ``{"format": "kpengine-render-set", "version": 1, "complete": bool (False while a
generation is still running: rewritten after each category), "config": {...generation settings:
size, views_per_shape, seed, split, categories, elevation/fov ranges, supersampling, backgrounds...},
"depth_scale": 10000, "conventions": "...", "views": [view, ...]}``. A view::

    {"id": "<model_id>_<k>", "category": "chair", "model_id": "...", "split": "train",
     "source": "mesh" | "splat", "image": "images/chair/<id>.png", "mask": ..., "depth": ..., "normals": ...,
     "azimuth": deg, "elevation": deg, "theta": deg, "distance": model units, "fov": deg (horizontal, effective),
     "center": [x, y, z], "camera": Camera.to_json(), "keypoints": Keypoints2D.to_json(),
     "background": "<photo>@x,y,side" | "generated"}

Angles follow :mod:`kpengine.render.cameras` (docs/rendering.md: azimuth 0 = the camera on +z, which for
ShapeNet's frame looks at the object's front; elevation positive above; theta the in-plane roll).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import read_json, write_json
from kpengine.io.image import load_image, load_mask

FORMAT = "kpengine-render-set"
VERSION = 1
DEPTH_SCALE = 10000.0
MAPS = ("mask", "depth", "normals")
_VIEW_KEYS = (
    "id",
    "category",
    "model_id",
    "split",
    "source",
    "image",
    "azimuth",
    "elevation",
    "theta",
    "distance",
    "camera",
    "keypoints",
)


def view_paths(category: str, view_id: str, maps: Sequence[str] = MAPS) -> dict[str, str]:
    """Relative paths of one view's files."""
    out = {"image": f"images/{category}/{view_id}.png"}
    for m in maps:
        out[m] = f"{m if m != 'mask' else 'masks'}/{category}/{view_id}.png"
    return out


def encode_depth(depth: np.ndarray, scale: float = DEPTH_SCALE) -> np.ndarray:
    """(H, W) float depth -> uint16 (0 stays 0; refuses depths beyond the 16-bit range)."""
    d = np.round(np.asarray(depth, np.float64) * scale)
    if d.max(initial=0) > 65535:
        raise DataError(f"depth {depth.max():.3f} too far for 16 bits at scale {scale}")
    return d.astype(np.uint16)


def encode_normals(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit normals -> uint8 RGB, 0 off the mask."""
    out = np.round((np.clip(normals, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    out[~mask] = 0
    return out


def _write_png(path: Path, a: np.ndarray) -> None:
    """PNG through a temporary sibling and a rename, without fsync: a view's files are only counted once its
    shape's shard (fsynced) is written, and a resumed run rewrites the files of a shape without one."""
    import os

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(np.ascontiguousarray(a)).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)


def save_view_files(
    root: Path,
    paths: dict[str, str],
    image: np.ndarray,
    mask: np.ndarray,
    depth: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    depth_scale: float = DEPTH_SCALE,
) -> None:
    """Write one view's image and maps under ``root`` (renamed into place; see :func:`_write_png`)."""
    _write_png(root / paths["image"], image)
    if "mask" in paths:
        _write_png(root / paths["mask"], mask.astype(np.uint8) * 255)
    if "depth" in paths and depth is not None:
        _write_png(root / paths["depth"], encode_depth(depth, depth_scale))
    if "normals" in paths and normals is not None:
        _write_png(root / paths["normals"], encode_normals(normals, mask))


def shard_path(root: Path, category: str, model_id: str) -> Path:
    return root / "shards" / category / f"{model_id}.json"


def save_shard(root: Path, category: str, model_id: str, config: dict, views: list[dict]) -> None:
    write_json(shard_path(root, category, model_id), {"config": config, "views": views})


def load_shard(root: Path, category: str, model_id: str, config: dict) -> list[dict] | None:
    """A finished shape's views, or None when it has no shard or one made with other settings."""
    path = shard_path(root, category, model_id)
    if not path.is_file():
        return None
    try:
        obj = read_json(path)
    except DataError:
        return None
    if not isinstance(obj, dict) or obj.get("config") != config or not isinstance(obj.get("views"), list):
        return None
    return obj["views"]


def save_index(root: Path, config: dict, views: list[dict], conventions: str, complete: bool = True) -> dict:
    """Write ``index.json``; ``complete`` False marks a set still being generated (usable as it is)."""
    index = {
        "format": FORMAT,
        "version": VERSION,
        "complete": complete,
        "config": config,
        "depth_scale": DEPTH_SCALE,
        "conventions": conventions,
        "views": views,
    }
    write_json(root / "index.json", index)
    return index


@dataclass
class RenderSet:
    """A loaded render set: ``root``, ``config`` (generation settings), ``views`` (dicts as in the module
    docstring, validated), ``depth_scale``. Files are decoded here (:meth:`read_view`, :meth:`images`);
    image-level types are built above this layer (:mod:`kpengine.image.renderset`)."""

    root: Path
    config: dict
    views: list[dict]
    depth_scale: float = DEPTH_SCALE

    def __len__(self) -> int:
        return len(self.views)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.views)

    def select(self, *, categories: Sequence[str] | None = None, splits: Sequence[str] | None = None) -> RenderSet:
        keep = [
            v
            for v in self.views
            if (categories is None or v["category"] in categories) and (splits is None or v["split"] in splits)
        ]
        return RenderSet(self.root, self.config, keep, self.depth_scale)

    def read_view(self, i: int, maps: Sequence[str] = MAPS) -> dict:
        """View ``i``'s files decoded: ``{"view": the index entry, "image": (H, W, 3) uint8, "mask": (H, W) bool,
        "depth": (H, W) float32 model units, "normals": (H, W, 3) float32}`` (maps not asked for or absent:
        None). :func:`kpengine.image.renderset.view_sample` makes an ``ImageSample`` of it."""
        v = self.views[i]
        image = load_image(self.root / v["image"])
        h, w = image.shape[:2]
        out: dict = {"view": v, "image": image, "mask": None, "depth": None, "normals": None}
        if "mask" in maps and v.get("mask"):
            out["mask"] = load_mask(self.root / v["mask"], expected_shape=(h, w))
        if "depth" in maps and v.get("depth"):
            out["depth"] = _read_raw(self.root / v["depth"]).astype(np.float32) / self.depth_scale
        if "normals" in maps and v.get("normals"):
            raw = _read_raw(self.root / v["normals"]).astype(np.float32)
            out["normals"] = np.where(raw.any(axis=-1, keepdims=True), raw / 127.5 - 1.0, 0.0).astype(np.float32)
        return out

    def images(self, indices: Sequence[int] | None = None, *, masks: bool = True) -> dict[str, np.ndarray]:
        """Pixels of views stacked for training: ``image`` (N, H, W, 3) uint8 and ``mask`` (N, H, W) bool
        (every view of a set has the same size)."""
        idx = list(range(len(self.views))) if indices is None else list(indices)
        out = {"image": np.stack([load_image(self.root / self.views[i]["image"]) for i in idx])}
        if masks:
            out["mask"] = np.stack([_read_raw(self.root / self.views[i]["mask"]) > 0 for i in idx])
        return out

    def arrays(self, indices: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """Labels of views as arrays, for training loops: ``azimuth``, ``elevation``, ``theta``, ``distance``,
        ``fov`` (N,) float64, ``category`` (N,) str, ``model_id`` (N,) str."""
        idx = range(len(self.views)) if indices is None else indices
        vs = [self.views[i] for i in idx]
        out: dict[str, np.ndarray] = {k: np.array([v[k] for v in vs], np.float64) for k in ("azimuth", "elevation")}
        for k in ("theta", "distance", "fov"):
            out[k] = np.array([v.get(k, np.nan) for v in vs], np.float64)
        out["category"] = np.array([v["category"] for v in vs])
        out["model_id"] = np.array([v["model_id"] for v in vs])
        return out


def _read_raw(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable map ({exc})", path=path) from exc


def _check_view(v: object, k: int, path: Path) -> dict:
    if not isinstance(v, dict):
        raise DataError(f"views[{k}] is not an object", path=path)
    missing = [key for key in _VIEW_KEYS if key not in v]
    if missing:
        raise DataError(f"views[{k}] ({v.get('id', '?')}) lacks {', '.join(missing)}", path=path)
    for key in ("azimuth", "elevation", "theta", "distance"):
        if not isinstance(v[key], int | float) or not np.isfinite(v[key]):
            raise DataError(f"views[{k}] ({v['id']}): {key} must be a finite number, got {v[key]!r}", path=path)
    kp = v["keypoints"]
    if not isinstance(kp, dict) or not all(key in kp for key in ("uv", "visible", "semantic_ids")):
        raise DataError(f"views[{k}] ({v['id']}): keypoints need uv, visible, semantic_ids", path=path)
    if not len(kp["uv"]) == len(kp["visible"]) == len(kp["semantic_ids"]):
        raise DataError(f"views[{k}] ({v['id']}): keypoint lists of different lengths", path=path)
    return v


def load_render_set(root: str | Path, *, check_files: bool = False) -> RenderSet:
    """Read ``index.json`` and validate every view (``check_files`` also checks each file exists)."""
    root = Path(root)
    path = root / "index.json"
    if not path.is_file():
        hint = " (generation unfinished? run the same command again to resume)" if (root / "shards").is_dir() else ""
        raise DataError(f"not a render set: no index.json{hint}", path=root)
    obj = read_json(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise DataError(
            f"not a {FORMAT} index (format {obj.get('format') if isinstance(obj, dict) else None!r})", path=path
        )
    if obj.get("version") != VERSION:
        raise DataError(f"render set version {obj.get('version')!r}; this kpengine reads version {VERSION}", path=path)
    views = [_check_view(v, k, path) for k, v in enumerate(obj.get("views", []))]
    if check_files:
        for v in views:
            for key in ("image", *MAPS):
                if v.get(key) and not (root / v[key]).is_file():
                    raise DataError(f"view {v['id']}: {key} file missing", path=root / v[key])
    return RenderSet(root, obj.get("config", {}), views, float(obj.get("depth_scale", DEPTH_SCALE)))
