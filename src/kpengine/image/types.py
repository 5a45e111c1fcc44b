"""Image data types: a photo or a render with its mask, camera and 2D keypoints; crops that keep them consistent.

Conventions are those of :mod:`kpengine.render.cameras` (stated once there): pixels in OpenCV
style, ``u`` the column to the right, ``v`` the row down, pixel ``image[i, j]`` centred on
``(u, v) = (j, i)`` and covering ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``. A camera here *is*
that module's :class:`~kpengine.render.cameras.Camera`.

Geometric edits (:func:`crop`, :func:`resize`, :func:`crop_and_resize`, :func:`centre_on_object`)
are one affine map of pixel coordinates, ``u' = s_x (u - x0 + 0.5) - 0.5`` (the same for ``v``),
applied alike to the image, the mask, the per-pixel maps, the keypoints and the camera's
intrinsics (``fx' = s_x fx``, ``cx' = s_x (cx - x0 + 0.5) - 0.5``; ``R``, ``t`` unchanged), so
that ``camera.project(xyz)`` lands on the moved keypoints exactly. Pixels from outside the source
image are filled (image ``fill`` colour, mask False, depth 0, normals 0, index -1), as a renderer
leaves the background. A keypoint that leaves the image becomes not visible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kpengine.errors import DataError
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)``: the pixels ``x0 <= j < x1``, ``y0 <= i < y1`` (may reach outside the image)."""


@dataclass(frozen=True)
class Keypoints2D:
    """K keypoints in one image.

    ``uv`` (K, 2) float64 pixels (u right, v down; NaN where the point has no projection, e.g. behind
    the camera); ``visible`` (K,) bool: seen in this image (inside it and not occluded; always False
    where ``uv`` is NaN); ``semantic_ids`` (K,) int64 the category's semantic ids (the ids of
    :class:`kpengine.data.shape.Shape`); ``names`` (K,) optional names, one per keypoint, or empty.
    """

    uv: np.ndarray
    visible: np.ndarray
    semantic_ids: np.ndarray
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        uv = np.asarray(self.uv, np.float64)
        uv = uv.reshape(0, 2) if uv.size == 0 else uv
        vis = np.asarray(self.visible, bool).reshape(-1)
        ids = np.asarray(self.semantic_ids).reshape(-1)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise DataError(f"keypoints uv must be (K, 2), got {uv.shape}")
        k = len(uv)
        if vis.shape != (k,) or ids.shape != (k,):
            raise DataError(f"keypoints: uv has {k} rows but visible {vis.shape} and semantic_ids {ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"keypoint semantic_ids must be integers, got {ids.dtype}")
        if self.names and len(self.names) != k:
            raise DataError(f"keypoints: {len(self.names)} names for {k} keypoints")
        if np.isinf(uv).any():
            raise DataError("keypoint uv must be finite or NaN (no projection)")
        vis = vis & np.isfinite(uv).all(axis=1)
        object.__setattr__(self, "uv", uv)
        object.__setattr__(self, "visible", vis)
        object.__setattr__(self, "semantic_ids", ids.astype(np.int64))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    def __len__(self) -> int:
        return len(self.uv)

    def select(self, which: np.ndarray) -> Keypoints2D:
        """The keypoints picked by a (K,) bool mask or an index array."""
        which = np.asarray(which)
        idx = np.nonzero(which)[0] if which.dtype == bool else which.astype(np.int64)
        names = tuple(self.names[i] for i in idx) if self.names else ()
        return Keypoints2D(self.uv[idx], self.visible[idx], self.semantic_ids[idx], names)

    def inside(self, width: int, height: int) -> np.ndarray:
        """(K,) bool: the point's pixel lies in a ``height`` x ``width`` image."""
        u, v = self.uv[:, 0], self.uv[:, 1]
        with np.errstate(invalid="ignore"):
            return (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)

    def to_json(self) -> dict:
        """``{"uv": [[u, v] | null, ...], "visible": [0/1], "semantic_ids": [...], "names": [...]}``."""
        uv = [None if not np.isfinite(p).all() else [round(float(p[0]), 4), round(float(p[1]), 4)] for p in self.uv]
        return {
            "uv": uv,
            "visible": self.visible.astype(int).tolist(),
            "semantic_ids": self.semantic_ids.tolist(),
            "names": list(self.names),
        }

    @classmethod
    def from_json(cls, obj: dict) -> Keypoints2D:
        try:
            uv = np.array([[np.nan, np.nan] if p is None else p for p in obj["uv"]], np.float64).reshape(-1, 2)
            return cls(
                uv, np.array(obj["visible"], bool), np.array(obj["semantic_ids"], np.int64), tuple(obj.get("names", ()))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed 2D keypoints ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class ImageSample:
    """One image of one object, photo or render, with whatever is known about it.

    ``image`` (H, W, 3) uint8 RGB. Optional: ``mask`` (H, W) bool object silhouette; ``camera`` the
    pinhole camera (its size is (H, W)); ``keypoints`` the object's 2D keypoints; ``depth`` (H, W)
    float32 z-depth (0 off the object); ``normals`` (H, W, 3) float32 unit world-frame normals (0
    off the object); ``index`` (H, W) int64 triangle (mesh) or point (cloud) seen per pixel, -1
    off the object; ``viewpoint`` the object-centred azimuth/elevation/distance/theta of
    :mod:`kpengine.render.cameras`, with ``center`` (3,) the world point it looks at. ``name``
    identifies the image (file or render id); ``model_id``, ``category`` the object when known.
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    camera: Camera | None = None
    keypoints: Keypoints2D | None = None
    depth: np.ndarray | None = None
    normals: np.ndarray | None = None
    index: np.ndarray | None = None
    viewpoint: Viewpoint | None = None
    center: np.ndarray | None = None
    name: str = ""
    model_id: str | None = None
    category: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        img = np.asarray(self.image)
        where = self.name or None
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}", path=where)
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise DataError(f"image is empty ({img.shape[1]}x{img.shape[0]})", path=where)
        h, w = img.shape[:2]

        def check(name: str, arr: np.ndarray | None, shape: tuple[int, ...], dtype) -> np.ndarray | None:
            if arr is None:
                return None
            arr = np.asarray(arr)
            if arr.shape != shape:
                raise DataError(f"{name} is {arr.shape}, the image needs {shape}", path=where)
            return arr.astype(dtype, copy=False)

        mask = self.mask
        if mask is not None and np.asarray(mask).dtype != bool:
            raise DataError(f"mask must be bool, got {np.asarray(mask).dtype}", path=where)
        object.__setattr__(self, "image", img)
        object.__setattr__(self, "mask", check("mask", mask, (h, w), bool))
        object.__setattr__(self, "depth", check("depth", self.depth, (h, w), np.float32))
        object.__setattr__(self, "normals", check("normals", self.normals, (h, w, 3), np.float32))
        object.__setattr__(self, "index", check("index", self.index, (h, w), np.int64))
        if self.camera is not None and (self.camera.width, self.camera.height) != (w, h):
            raise DataError(f"camera is {self.camera.width}x{self.camera.height}, the image {w}x{h}", path=where)
        if self.center is not None:
            c = np.asarray(self.center, np.float64)
            if c.shape != (3,):
                raise DataError(f"center must be (3,), got {c.shape}", path=where)
            object.__setattr__(self, "center", c)

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]

    def bbox(self) -> Box:
        """``(x0, y0, x1, y1)`` of the mask (exclusive ends). Needs a non-empty mask."""
        if self.mask is None or not self.mask.any():
            raise DataError("no object mask to take a bounding box of", path=self.name or None)
        return mask_box(self.mask)

    def replace(self, **changes) -> ImageSample:
        return dataclasses.replace(self, **changes)


def mask_box(mask: np.ndarray) -> Box:
    """``(x0, y0, x1, y1)`` of the True pixels of a (H, W) mask, exclusive ends."""
    ii, jj = np.nonzero(mask)
    if len(ii) == 0:
        raise DataError("empty mask has no bounding box")
    return int(jj.min()), int(ii.min()), int(jj.max()) + 1, int(ii.max()) + 1


def square_box(box: Box, margin: float = 0.1) -> Box:
    """The square box centred on ``box`` whose side is the longer side of ``box`` times ``1 + 2 margin``."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    side = max(int(np.ceil(side)), 1)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    nx0, ny0 = int(np.floor(cx - side / 2.0 + 0.5)), int(np.floor(cy - side / 2.0 + 0.5))
    return nx0, ny0, nx0 + side, ny0 + side


def _window(arr: np.ndarray, box: Box, fill) -> np.ndarray:
    """``arr[y0:y1, x0:x1]`` with out-of-image pixels set to ``fill``."""
    x0, y0, x1, y1 = box
    h, w = arr.shape[:2]
    out = np.empty((y1 - y0, x1 - x0, *arr.shape[2:]), arr.dtype)
    out[...] = fill
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return out


def _resample(arr: np.ndarray, width: int, height: int, smooth: bool) -> np.ndarray:
    """Resize (h, w[, c]) to (height, width[, c]): bilinear (``smooth``, uint8 RGB), else nearest pixel centre."""
    h, w = arr.shape[:2]
    if (h, w) == (height, width):
        return arr.copy()
    if smooth:
        from PIL import Image

        return np.asarray(Image.fromarray(arr).resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None))
    # nearest: output pixel centre u' maps back to u = (u' + 0.5) * w / width - 0.5
    jj = np.clip(np.floor((np.arange(width) + 0.5) * w / width).astype(np.int64), 0, w - 1)
    ii = np.clip(np.floor((np.arange(height) + 0.5) * h / height).astype(np.int64), 0, h - 1)
    return arr[ii][:, jj]


def _pick_on_object(arr: np.ndarray, mask: np.ndarray, f: int) -> np.ndarray:
    """Downscale (H, W, ...) by the integer ``f``: each output pixel takes the source pixel of its f x f block
    nearest the block centre *among the object's pixels* (``mask`` (H, W)), so thin parts keep their depth."""
    h, w = mask.shape
    oh, ow = h // f, w // f
    off = np.arange(f) - (f - 1) / 2.0
    order = np.argsort((off[:, None] ** 2 + off[None, :] ** 2).ravel(), kind="stable")
    blocks = mask.reshape(oh, f, ow, f).transpose(0, 2, 1, 3).reshape(oh, ow, f * f)[..., order]
    pick = order[np.argmax(blocks, axis=-1)]  # the first object pixel by distance; the centre one if none
    rest = arr.shape[2:]
    a = arr.reshape(oh, f, ow, f, *rest).swapaxes(1, 2).reshape(oh, ow, f * f, *rest)
    idx = pick.reshape(oh, ow, 1, *([1] * len(rest)))
    return np.take_along_axis(a, idx, axis=2)[:, :, 0]


def _resample_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-weighted resize of a bool mask, thresholded at one half."""
    h, w = mask.shape
    if (h, w) == (height, width):
        return mask.copy()
    from PIL import Image

    m = Image.fromarray(mask.astype(np.float32))
    return np.asarray(m.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)) >= 0.5


def crop_and_resize(
    sample: ImageSample, box: Box, size: tuple[int, int] | int | None = None, fill: Sequence[int] = (0, 0, 0)
) -> ImageSample:
    """Cut ``box`` out of ``sample`` (padding with ``fill`` outside the image) and resize it to ``size``
    (``(width, height)`` or one side for a square; None keeps the box's size).

    The image is resampled bilinearly, the mask by area then thresholded at 0.5, depth, normals and
    index by nearest pixel (no blending across the silhouette; for an integer downscale, the object pixel
    nearest each output pixel's centre, so thin parts keep their values), then emptied off the new mask.
    Keypoints and the camera move with the pixels (module docstring); keypoints that fall outside become
    not visible."""
    x0, y0, x1, y1 = (int(b) for b in box)
    bw, bh = x1 - x0, y1 - y0
    if bw <= 0 or bh <= 0:
        raise DataError(f"crop box {box} is empty", path=sample.name or None)
    if size is None:
        ow, oh = bw, bh
    elif isinstance(size, int | np.integer):
        ow = oh = int(size)
    else:
        ow, oh = (int(s) for s in size)
    if ow <= 0 or oh <= 0:
        raise DataError(f"output size must be positive, got {ow}x{oh}", path=sample.name or None)
    sx, sy = ow / bw, oh / bh
    box = (x0, y0, x1, y1)

    def warp(arr, fill_value, smooth=False):
        return None if arr is None else _resample(_window(arr, box, fill_value), ow, oh, smooth)

    image = warp(sample.image, np.asarray(fill, np.uint8), smooth=True)
    mask = None if sample.mask is None else _resample_mask(_window(sample.mask, box, False), ow, oh)
    kps = None
    if sample.keypoints is not None:
        k = sample.keypoints
        uv = np.stack([sx * (k.uv[:, 0] - x0 + 0.5) - 0.5, sy * (k.uv[:, 1] - y0 + 0.5) - 0.5], axis=1)
        moved = Keypoints2D(uv, k.visible, k.semantic_ids, k.names)
        kps = Keypoints2D(uv, moved.visible & moved.inside(ow, oh), k.semantic_ids, k.names)
    camera = None
    if sample.camera is not None:
        i = sample.camera.intrinsics
        intr = Intrinsics(sx * i.fx, sy * i.fy, sx * (i.cx - x0 + 0.5) - 0.5, sy * (i.cy - y0 + 0.5) - 0.5, ow, oh)
        camera = Camera(intr, sample.camera.R, sample.camera.t)
    f = bw // ow
    if sample.mask is not None and f > 1 and bw == f * ow and bh == f * oh:  # integer downscale: on-object picks
        src_mask = _window(sample.mask, box, False)

        def warp(arr, fill_value, smooth=False):  # noqa: F811 - the on-object variant of the nearest warp
            return None if arr is None else _pick_on_object(_window(arr, box, fill_value), src_mask, f)

    depth, normals, index = warp(sample.depth, 0.0), warp(sample.normals, 0.0), warp(sample.index, -1)
    if mask is not None and (ow, oh) != (bw, bh):  # maps stay empty off the (area-resampled) mask
        for arr, empty in ((depth, 0.0), (normals, 0.0), (index, -1)):
            if arr is not None:
                arr[~mask] = empty
    return sample.replace(
        image=image, mask=mask, camera=camera, keypoints=kps, depth=depth, normals=normals, index=index
    )


def crop(sample: ImageSample, box: Box, fill: Sequence[int] = (0, 0, 0)) -> ImageSample:
    """Cut ``box`` out without resizing (see :func:`crop_and_resize`)."""
    return crop_and_resize(sample, box, None, fill)


def resize(sample: ImageSample, size: tuple[int, int] | int) -> ImageSample:
    """Resize the whole sample to ``size`` (``(width, height)`` or one side) keeping everything consistent."""
    return crop_and_resize(sample, (0, 0, sample.width, sample.height), size)


def centre_on_object(
    sample: ImageSample, size: int, margin: float = 0.1, box: Box | None = None, fill: Sequence[int] = (0, 0, 0)
) -> ImageSample:
    """The paper's input: a square crop centred on the object, its longer side ``1 / (1 + 2 margin)`` of
    the crop, resized to ``size`` x ``size``. The object's box is ``box`` or the mask's."""
    return crop_and_resize(sample, square_box(sample.bbox() if box is None else box, margin), size, fill)


__all__ = [
    "Box",
    "ImageSample",
    "Keypoints2D",
    "centre_on_object",
    "crop",
    "crop_and_resize",
    "mask_box",
    "resize",
    "square_box",
]
