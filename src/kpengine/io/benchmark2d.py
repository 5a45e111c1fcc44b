"""The rendered 2D keypoint benchmark on disk (SPair-like), and its predictions files.

Layout of a benchmark folder::

    benchmark.json            {"version", "category", "split", "size", "views", "seed", "fov",
                               "images": [id, ...], "skipped_models": [...]}
    images/<id>.png           the rendered photo-like image (random background and light)
    masks/<id>.png            the object mask (0/255)
    annotations/<id>.json     one per image, close to SPair-71k's fields (below)

``<id>`` is ``<model_id>_<view>``. An annotation holds ``filename``, ``mask``, ``category``,
``model_id``, ``image_width``, ``image_height``, ``bndbox`` ``[xmin, ymin, xmax, ymax]``
(pixels, from the mask), ``kps`` (K x [u, v] pixels, OpenCV convention of
:mod:`kpengine.render.cameras`), ``kps_ids`` (semantic ids), ``kps_visible`` (0/1 from the
depth buffer), ``kps_xyz`` (model frame), ``viewpoint`` (azimuth, elevation, distance, theta
and their 24/12 bins), ``center``, ``camera`` (intrinsics and R, t) and ``source`` (``mesh``
or ``pcd``: splatted point cloud). :func:`load_benchmark` checks the fields PCK needs.

Predictions file: ``{"<id>": {"<semantic_id>": [u, v]}}``; a missing image or keypoint counts
as wrong when scored (:mod:`kpengine.metrics.pck2d`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kpengine.errors import DataError
from kpengine.io.atomic import read_json, write_json

INDEX = "benchmark.json"

#: image id -> {semantic id as text: [u, v] pixels}
Predictions2D = dict[str, dict[str, list[float]]]


def image_path(root: str | Path, image_id: str) -> Path:
    return Path(root) / "images" / f"{image_id}.png"


def mask_path(root: str | Path, image_id: str) -> Path:
    return Path(root) / "masks" / f"{image_id}.png"


def annotation_path(root: str | Path, image_id: str) -> Path:
    return Path(root) / "annotations" / f"{image_id}.json"


def save_annotation(root: str | Path, image_id: str, annotation: Mapping[str, Any]) -> None:
    write_json(annotation_path(root, image_id), dict(annotation), indent=1)


def save_index(root: str | Path, index: Mapping[str, Any]) -> None:
    write_json(Path(root) / INDEX, dict(index), indent=1)


def _check_annotation(ann: Any, path: Path, image_id: str) -> dict:  # noqa: ANN401
    def bad(why: str) -> DataError:
        return DataError(f"image {image_id}: {why}", path=path)

    if not isinstance(ann, dict):
        raise bad("an annotation must be a JSON object")
    for key in ("category", "image_width", "image_height", "bndbox", "kps", "kps_ids", "kps_visible"):
        if key not in ann:
            raise bad(f"missing field {key!r}")
    if not (isinstance(ann["bndbox"], list) and len(ann["bndbox"]) == 4):
        raise bad(f"'bndbox' must be [xmin, ymin, xmax, ymax], got {ann['bndbox']!r}")
    k = len(ann["kps"])
    if not all(isinstance(p, list) and len(p) == 2 for p in ann["kps"]):
        raise bad("'kps' must be a list of [u, v] pairs")
    if len(ann["kps_ids"]) != k or len(ann["kps_visible"]) != k:
        raise bad(f"'kps', 'kps_ids' and 'kps_visible' differ in length ({k}, {len(ann['kps_ids'])}, "
                  f"{len(ann['kps_visible'])})")  # fmt: skip
    return ann


def load_benchmark(root: str | Path) -> tuple[dict, dict[str, dict]]:
    """The index and every annotation by image id; errors name the file and the image."""
    root = Path(root)
    index = read_json(root / INDEX)
    if not isinstance(index, dict) or not isinstance(index.get("images"), list):
        raise DataError("not a kpengine 2D benchmark index (no 'images' list)", path=root / INDEX)
    anns = {}
    for image_id in index["images"]:
        path = annotation_path(root, image_id)
        anns[image_id] = _check_annotation(read_json(path), path, image_id)
    return index, anns


def load_predictions_2d(path: str | Path) -> Predictions2D:
    """Read ``{"<image_id>": {"<semantic_id>": [u, v]}}``; ``DataError`` names the file and image."""
    preds = read_json(path)
    if not isinstance(preds, dict) or not all(isinstance(v, dict) for v in preds.values()):
        raise DataError('predictions must be {"<image_id>": {"<semantic_id>": [u, v]}}', path=path)
    for image_id, kps in preds.items():
        for sid, uv in kps.items():
            if not (
                isinstance(uv, list)
                and len(uv) == 2
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in uv)
            ):
                raise DataError(f"image {image_id}: semantic id {sid}: expected [u, v], got {uv!r}", path=path)
    return preds


def save_predictions_2d(path: str | Path, predictions: Mapping[str, Mapping[Any, Any]]) -> None:
    """Write 2D predictions atomically (semantic ids as text keys, [u, v] as floats; NaN kept)."""
    write_json(
        path,
        {
            image_id: {str(sid): [float(uv[0]), float(uv[1])] for sid, uv in kps.items()}
            for image_id, kps in predictions.items()
        },
    )


__all__ = [
    "INDEX",
    "Predictions2D",
    "annotation_path",
    "image_path",
    "load_benchmark",
    "load_predictions_2d",
    "mask_path",
    "save_annotation",
    "save_index",
    "save_predictions_2d",
]
