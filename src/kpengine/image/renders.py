"""Image sets on disk -> the networks' data: render sets (``kpengine render-views``), the older
``kpengine render-benchmark`` layout, EPFL cars.

Each image comes with its mask, viewpoint and camera, so one set trains the viewpoint network
(object crops from the mask's box), the silhouette network (whole images), the keypoint-heatmap
network (2D keypoints) and measures the pipeline. A render set may hold several categories: the
tasks read the views of their own category only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kpengine.errors import DataError
from kpengine.image.crops import crop_square, to_tensor
from kpengine.image.datasets import CROP_MARGIN, MaskSet, ViewSet, crops_from_frames
from kpengine.io.benchmark2d import load_benchmark
from kpengine.io.image import load_image, load_mask


@dataclass
class RenderedImage:
    """One rendered image: ``image`` (H, W, 3) uint8, ``mask`` (H, W) bool, and its annotation dict."""

    name: str
    image: np.ndarray
    mask: np.ndarray
    annotation: dict


def load_rendered(root: str | Path, limit: int | None = None) -> list[RenderedImage]:
    """Every image of a rendered set (benchmark layout), in index order."""
    root = Path(root)
    _, anns = load_benchmark(root)
    out = []
    for name, ann in list(anns.items())[:limit]:
        img = load_image(root / ann["filename"])
        mask = load_mask(root / ann["mask"], expected_shape=img.shape[:2])
        out.append(RenderedImage(name, img, mask, ann))
    return out


def is_render_set(path: str | Path) -> bool:
    """True for a ``kpengine render-views`` folder (``index.json``), False for the benchmark layout."""
    return (Path(path) / "index.json").is_file()


def load_render_views(root: str | Path, category: str | None = None, limit: int | None = None) -> list[RenderedImage]:
    """The views of ``category`` (name or synset; None: every view) of a render set, in index order.

    ``annotation`` is the view's index entry plus ``"viewpoint"`` (azimuth, elevation, theta), the
    key the benchmark layout has, so both layouts feed :func:`view_set` and :func:`mask_set`."""
    from kpengine.categories import resolve_category
    from kpengine.io.renderset import load_render_set

    rs = load_render_set(root)
    if category is not None:
        try:
            name = resolve_category(category).name
        except DataError:
            name = category  # a category registered by another process (sample data): take the name as given
        rs = rs.select(categories=[name])
        if not len(rs):
            have = sorted({v["category"] for v in load_render_set(root)})
            raise DataError(f"render set has no views of category {name!r} (it has {', '.join(have)})", path=root)
    out = []
    for i in range(len(rs) if limit is None else min(limit, len(rs))):
        d = rs.read_view(i, ("mask",))
        v = d["view"]
        if d["mask"] is None:
            raise DataError(f"view {v['id']} has no mask (render the set with --maps mask)", path=root)
        ann = {**v, "viewpoint": {"azimuth": v["azimuth"], "elevation": v["elevation"], "theta": v["theta"]}}
        out.append(RenderedImage(v["id"], d["image"], d["mask"], ann))
    return out


def load_image_set(path: str | Path, category: str | None = None, limit: int | None = None) -> list[RenderedImage]:
    """A render set (its ``category`` views) or a benchmark-layout set (every image); else a DataError."""
    if is_render_set(path):
        return load_render_views(path, category, limit)
    if (Path(path) / "benchmark.json").is_file():
        return load_rendered(path, limit)
    raise DataError(
        "not a rendered image set (no index.json of `kpengine render-views`, no benchmark.json of render-benchmark)",
        path=path,
    )


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of a (H, W) bool mask's pixels (pixel edges, so a single pixel is 1 x 1)."""
    ii, jj = np.nonzero(mask)
    if len(ii) == 0:
        raise DataError("empty mask: no object box")
    return float(jj.min()) - 0.5, float(ii.min()) - 0.5, float(jj.max() - jj.min() + 1), float(ii.max() - ii.min() + 1)


def view_set(items: list[RenderedImage], size: int = 96) -> ViewSet:
    """Object crops by the mask's box, with the rendered azimuth and elevation."""
    crops = np.stack([crop_square(it.image, mask_box(it.mask), CROP_MARGIN, size) for it in items])
    az = torch.tensor([it.annotation["viewpoint"]["azimuth"] for it in items], dtype=torch.float32)
    el = torch.tensor([it.annotation["viewpoint"]["elevation"] for it in items], dtype=torch.float32)
    return ViewSet(to_tensor(crops), az, el, [it.name for it in items])


def squash(image: np.ndarray, size: int, resample=Image.BILINEAR) -> np.ndarray:
    """Resize (H, W[, 3]) uint8 to (size, size[, 3]) ignoring the aspect ratio (the photo's whole frame)."""
    return np.asarray(Image.fromarray(image).resize((size, size), resample))


def mask_set(items: list[RenderedImage], size: int = 96) -> MaskSet:
    imgs = np.stack([squash(it.image, size) for it in items])
    masks = np.stack([squash(it.mask.astype(np.uint8) * 255, size) for it in items])
    return MaskSet(to_tensor(imgs), torch.from_numpy(masks), [it.name for it in items])


def _epfl_view_sets(root: Path, size: int) -> tuple[ViewSet, ViewSet]:
    """Crops of sequences 1-10 and 11-20, azimuths in kpengine's camera convention, elevations unknown."""
    from kpengine.io.epfl_cars import TEST_SEQUENCES, TRAIN_SEQUENCES, load_epfl_cars

    out = []
    for seqs in (TRAIN_SEQUENCES, TEST_SEQUENCES):
        frames = load_epfl_cars(root, seqs)
        crops = crops_from_frames([f.path for f in frames], [f.bbox for f in frames], size)
        # EPFL's 0 = the car faces the camera; kpengine's camera azimuth 0 sees a ShapeNet object's back
        az = torch.tensor([(f.azimuth + 180.0) % 360.0 for f in frames], dtype=torch.float32)
        out.append(ViewSet(crops, az, torch.full_like(az, float("nan")), [f.path.name for f in frames]))
    return out[0], out[1]


def is_epfl(path: str | Path) -> bool:
    return (Path(path) / "tripod-seq.txt").is_file()


def view_sets(
    data: str | Path, val_data: str | Path | None, size: int = 96, category: str | None = None
) -> tuple[ViewSet, ViewSet | None]:
    """Training and validation crops of ``category`` from rendered sets (either layout) or the EPFL cars folder.

    EPFL cars: the standard protocol, sequences 1-10 to train and 11-20 to validate (a photo
    dataset has no separate validation split; the image commands read the last epoch, so
    nothing is chosen on those sequences)."""
    if is_epfl(data):
        return _epfl_view_sets(Path(data), size)
    train = view_set(load_image_set(data, category), size)
    return train, view_set(load_image_set(val_data, category), size) if val_data else None


def mask_sets(
    data: str | Path, val_data: str | Path | None, size: int = 96, category: str | None = None
) -> tuple[MaskSet, MaskSet | None]:
    """Whole images and masks of ``category`` from rendered sets (either layout)."""
    train = mask_set(load_image_set(data, category), size)
    return train, mask_set(load_image_set(val_data, category), size) if val_data else None
