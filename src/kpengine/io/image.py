"""Photos and masks on disk: read what can be read as 8-bit RGB, refuse the rest by name; write atomically.

What :func:`load_image` does with each kind of file (Pillow reads it):

- 8-bit RGB: as is. Greyscale, palette and 1-bit: converted to RGB (nothing is lost).
- CMYK (print JPEGs), 16-bit or 32-bit greyscale, 16-bit RGB, and alpha (RGBA, LA, palette with
  transparency): converted, with a warning naming the file and what was done (CMYK through Pillow's
  naive conversion, no colour profile; 16-bit scaled to 8; alpha dropped: the transparent pixels keep
  their stored colour).
- Unreadable or truncated files, other modes (floating-point images, YCbCr without a decoder...),
  images larger than ``max_pixels`` (default 64 megapixels, Pillow's decompression-bomb guard
  included): :class:`~kpengine.errors.DataError` naming the file and what was expected.

:func:`load_mask` reads a (H, W) bool mask (non-zero = object; an alpha channel if the file has
one, else the greyscale value), and refuses a mask of another size than ``expected_shape`` or an empty
one. :func:`check_object_inside` says whether the object touches the image border (cut off by the
frame), which crops centred on the object cannot undo.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import atomic_open

log = logging.getLogger(__name__)

MAX_PIXELS = 64_000_000


def _open(path: Path, max_pixels: int):
    from PIL import Image

    if not path.is_file():
        raise DataError("image file not found", path=path)
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DataError(f"image too large to read safely ({exc})", path=path) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"not a readable image ({type(exc).__name__}: {exc})", path=path) from exc
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise DataError(
            f"image is {w}x{h} = {w * h / 1e6:.1f} megapixels; at most {max_pixels / 1e6:.0f} expected "
            "(downscale it first)",
            path=path,
        )
    if w == 0 or h == 0:
        img.close()
        raise DataError(f"image is empty ({w}x{h})", path=path)
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"image data is truncated or corrupt ({type(exc).__name__}: {exc})", path=path) from exc
    return img


def _to_rgb(img, path: Path) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, np.uint8)
    if mode in ("L", "1", "P") and "transparency" not in img.info:
        return np.asarray(img.convert("RGB"), np.uint8)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        log.warning("%s: image has an alpha channel (%s); dropped, kept the stored colours", path, mode)
        return np.asarray(img.convert("RGBA"), np.uint8)[..., :3].copy()
    if mode == "CMYK":
        log.warning("%s: CMYK image converted to RGB without a colour profile", path)
        return np.asarray(img.convert("RGB"), np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        log.warning("%s: %s greyscale image scaled to 8 bits (/ %d)", path, mode, int(top // 255))
        g = np.clip(np.round(a * 255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    raise DataError(
        f"image mode {mode!r} is not supported; expected 8-bit RGB (greyscale, palette, CMYK, 16-bit and alpha "
        "are converted)",
        path=path,
    )


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (conversions and refusals in the module docstring)."""
    path = Path(path)
    img = _open(path, max_pixels)
    try:
        return _to_rgb(img, path)
    finally:
        img.close()


def load_mask(
    path: str | Path, *, expected_shape: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """(H, W) bool object mask: True where the file's alpha (if any) or grey value is non-zero.

    Refuses a mask whose (H, W) differs from ``expected_shape`` (the photo's), and an empty one."""
    path = Path(path)
    img = _open(path, max_pixels)
    try:
        if img.mode in ("RGBA", "LA", "PA"):
            m = np.asarray(img.getchannel("A")) > 0
        elif img.mode == "P" and "transparency" in img.info:
            m = np.asarray(img.convert("RGBA").getchannel("A")) > 0
        else:
            m = np.asarray(img.convert("L") if img.mode not in ("L", "1", "I", "I;16", "F") else img) > 0
    finally:
        img.close()
    if expected_shape is not None and m.shape != tuple(expected_shape):
        raise DataError(
            f"mask is {m.shape[1]}x{m.shape[0]} but its image is {expected_shape[1]}x{expected_shape[0]}", path=path
        )
    if not m.any():
        raise DataError("mask is empty (no object pixel); expected the object's pixels non-zero", path=path)
    return m


def check_object_inside(mask: np.ndarray, where: str | Path | None = None, *, strict: bool = False) -> bool:
    """True when the object of a (H, W) mask stays off the image border. Otherwise warn (or with ``strict``
    raise) that it is cut off by the frame: a crop centred on it shows part of an object."""
    edge = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
    if not edge:
        return True
    message = "the object touches the image border (cut off by the frame?); expected it wholly inside"
    if strict:
        raise DataError(message, path=where)
    log.warning("%s: %s", where if where is not None else "mask", message)
    return False


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write (H, W, 3) or (H, W) uint8, or (H, W) bool (0/255), or (H, W) uint16 as PNG (JPEG if the name
    ends in .jpg/.jpeg, quality 95), atomically."""
    from PIL import Image

    path = Path(path)
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if not (
        (a.dtype == np.uint8 and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))))
        or (a.dtype == np.uint16 and a.ndim == 2)
    ):
        raise DataError(f"cannot save an image of shape {a.shape} and type {a.dtype}", path=path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    if fmt == "JPEG" and a.dtype != np.uint8:
        raise DataError("JPEG holds 8-bit images only", path=path)
    with atomic_open(path, "wb") as fh:
        im = Image.fromarray(np.ascontiguousarray(a))
        im.save(fh, format=fmt, **({"quality": 95} if fmt == "JPEG" else {"compress_level": 1}))
