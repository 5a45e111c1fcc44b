"""Point Cloud Data (PCD) files, per the PCL spec: ASCII, binary and binary_compressed.

KeypointNet ships ASCII PCDs with fields ``x y z rgb`` where ``rgb`` is an unsigned int
packing 0xRRGGBB. PCL itself often writes ``rgb`` as a float whose bits hold the same
packed integer; both are read. Points come back as float32 (N, 3), colours as uint8 (N, 3).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.errors import DataError
from kpengine.io.atomic import write_bytes

_NUMPY_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("U", 1): "u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
    ("I", 1): "i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
}


@dataclass
class PointCloud:
    """Points (N, 3) float32 and optional per-point colours (N, 3) uint8."""

    points: np.ndarray
    colors: np.ndarray | None = None


def _lzf_decompress(data: bytes, expected: int) -> bytes:
    """LZF decompression (liblzf format) as used by PCL's binary_compressed PCDs."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            out += data[i : i + ctrl + 1]
            i += ctrl + 1
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                length += data[i]
                i += 1
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            if ref < 0:
                raise ValueError("corrupt LZF stream")
            for _ in range(length + 2):  # may overlap itself, so byte by byte
                out.append(out[ref])
                ref += 1
    if len(out) != expected:
        raise ValueError(f"LZF stream gave {len(out)} bytes, header says {expected}")
    return bytes(out)


def _unpack_rgb(column: np.ndarray) -> np.ndarray:
    packed = column.astype(np.uint32) if column.dtype != np.float32 else column.view(np.uint32)
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=-1).astype(np.uint8)


def _ascii_type(name: str, dt: str) -> str:
    if name in ("rgb", "rgba") and np.dtype(dt).kind == "f":
        return "<u4"
    return "<f8" if np.dtype(dt).kind == "f" else dt


def load_pcd(path: str | Path) -> PointCloud:
    """Read a PCD file; raises ``DataError`` naming the file for anything malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError("PCD file not found", path=path) from exc
    header: dict[str, list[str]] = {}
    offset = 0
    while True:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise DataError("PCD header has no DATA line (file truncated?)", path=path)
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header.get("SIZE", ["4"] * len(fields))]
        types = header.get("TYPE", ["F"] * len(fields))
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        n_points = int(header.get("POINTS", [int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])])[0])
        kind = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError) as exc:
        raise DataError(f"malformed PCD header ({exc})", path=path) from exc
    if not {"x", "y", "z"} <= set(fields):
        raise DataError(f"PCD has no x y z fields (fields: {' '.join(fields)})", path=path)
    columns: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for name, size, typ, count in zip(fields, sizes, types, counts):
        dt = _NUMPY_TYPES.get((typ.upper(), size))
        if dt is None:
            raise DataError(f"unsupported PCD field type {typ}{size} for {name}", path=path)
        # PCL names every padding field "_": a repeated name gets its own column (its values are never used)
        seen[name] = seen.get(name, 0) + 1
        base = name if seen[name] == 1 else f"{name}#{seen[name]}"
        columns += [(base if count == 1 else f"{base}_{k}", dt) for k in range(count)]
    dtype = np.dtype(columns)
    body = raw[offset:]
    try:
        if kind == "ascii":
            # floats parsed as float64 and rounded to float32 once, below (the writer checks its text
            # the same way); a float rgb is written as its packed integer in ASCII (as PCL does)
            text_dtype = np.dtype([(name, _ascii_type(name, dt)) for name, dt in columns])
            data = np.loadtxt(io.BytesIO(body), dtype=text_dtype, ndmin=1) if n_points else np.empty(0, text_dtype)
            if len(data) != n_points:
                raise ValueError(f"expected {n_points} rows of {len(columns)} values, got {len(data)} rows")
        elif kind == "binary":
            need = n_points * dtype.itemsize
            if len(body) < need:
                raise ValueError(f"binary body holds {len(body)} bytes, {need} needed")
            data = np.frombuffer(body[:need], dtype=dtype)
        elif kind == "binary_compressed":
            compressed, uncompressed = struct.unpack("<II", body[:8])
            flat = _lzf_decompress(body[8 : 8 + compressed], uncompressed)
            data = np.empty(n_points, dtype=dtype)
            pos = 0
            for name, dt in columns:  # column-major ("structure of arrays")
                width = np.dtype(dt).itemsize * n_points
                data[name] = np.frombuffer(flat[pos : pos + width], dtype=dt)
                pos += width
        else:
            raise ValueError(f"unknown DATA kind {kind!r}")
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable PCD data: {exc}", path=path) from exc
    points = np.stack([data["x"], data["y"], data["z"]], axis=-1).astype(np.float32)
    if not np.isfinite(points).all():
        bad = int((~np.isfinite(points).all(axis=1)).sum())
        raise DataError(f"{bad} points have NaN or infinite coordinates", path=path)
    colors = None
    for name in ("rgb", "rgba"):
        if name in data.dtype.names:
            colors = _unpack_rgb(data[name])
    return PointCloud(points, colors)


def save_pcd(path: str | Path, cloud: PointCloud, *, binary: bool = False) -> None:
    """Write ``x y z rgb`` (rgb as packed unsigned int, like KeypointNet) atomically.

    ASCII coordinates are written with six decimals (as the official KeypointNet clouds are,
    so loading and saving one gives back the same bytes) where that text reads back to the
    same float32, else with the shortest text that does, so load -> save -> load is exact.
    """
    pts = np.asarray(cloud.points, dtype=np.float32)
    n = len(pts)
    colors = np.full((n, 3), 255, np.uint8) if cloud.colors is None else np.asarray(cloud.colors, np.uint8)
    packed = (colors[:, 0].astype(np.uint32) << 16) | (colors[:, 1].astype(np.uint32) << 8) | colors[:, 2]
    head = (
        "VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\n"
        f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {'binary' if binary else 'ascii'}\n"
    )
    if binary:
        rec = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
        rec["x"], rec["y"], rec["z"], rec["rgb"] = pts[:, 0], pts[:, 1], pts[:, 2], packed
        write_bytes(path, head.encode() + rec.tobytes())
        return
    text = np.char.mod("%.6f", pts.astype(np.float64)).astype(object)  # object: no fixed-width truncation
    inexact = text.astype(np.float64).astype(np.float32).view(np.uint32) != pts.view(np.uint32)
    for i, k in zip(*np.nonzero(inexact)):
        text[i, k] = np.format_float_positional(pts[i, k], unique=True, trim="-")
    lines = [f"{x} {y} {z} {c}" for (x, y, z), c in zip(text.tolist(), packed.tolist())]
    write_bytes(path, (head + "\n".join(lines) + "\n").encode())
