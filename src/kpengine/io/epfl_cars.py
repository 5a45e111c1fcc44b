"""The EPFL multi-view car dataset (Ozuysal, Lepetit, Fua, CVPR 2009): photos, boxes, azimuths.

Layout (as shipped): ``tripod-seq.txt`` (sequence count and size; frames per sequence; file-name
patterns; the frame completing one full turn; the frame facing the camera; the sense of
rotation), ``tripod_seq_SS_NNN.jpg`` (frames from 1), ``bbox_SS.txt`` (``x y w h`` per frame)
and ``times_SS.txt`` (one ``YYYY:MM:DD HH:MM:SS`` capture time per frame).

The ground-truth azimuth of frame f, as public code for this dataset computes it, is
``sense * 360 * (t_f - t_front) / (t_full - t_1)`` wrapped to (-180, 180]: 0 = the car faces
the camera, +90 = side view with the front to image-left. The turntable turns at constant speed,
so time is the angle; the whole-second clock makes a label uncertain by a degree or two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from kpengine.errors import DataError

TRAIN_SEQUENCES = tuple(range(1, 11))  # the standard protocol: train on 1-10, test on 11-20
TEST_SEQUENCES = tuple(range(11, 21))


@dataclass(frozen=True)
class CarFrame:
    """One photo: its file, sequence and frame numbers, car box ``(x, y, w, h)`` and azimuth (degrees)."""

    path: Path
    sequence: int
    frame: int
    bbox: tuple[float, float, float, float]
    azimuth: float


def _ints(line: str, n: int, path: Path, what: str) -> list[int]:
    try:
        values = [int(v) for v in line.split()]
    except ValueError as exc:
        raise DataError(f"{what}: expected integers, got {line!r}", path=path) from exc
    if len(values) != n:
        raise DataError(f"{what}: expected {n} values, got {len(values)}", path=path)
    return values


def _times(path: Path, n_frames: int) -> np.ndarray:
    if not path.is_file():
        raise DataError("capture-time file missing", path=path)
    stamps = [s.strip() for s in path.read_text().splitlines() if s.strip()]
    if len(stamps) < n_frames:
        raise DataError(f"{len(stamps)} capture times for {n_frames} frames", path=path)
    try:
        seconds = [datetime.strptime(s, "%Y:%m:%d %H:%M:%S").timestamp() for s in stamps[:n_frames]]
    except ValueError as exc:
        raise DataError(f"bad capture time ({exc})", path=path) from exc
    t = np.asarray(seconds, np.float64)
    return t - t[0]


def _boxes(path: Path, n_frames: int) -> np.ndarray:
    if not path.is_file():
        raise DataError("box file missing", path=path)
    try:
        rows = [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise DataError(f"bad box line ({exc})", path=path) from exc
    if len(rows) < n_frames or any(len(r) != 4 for r in rows[:n_frames]):
        raise DataError(f"expected {n_frames} lines of 'x y w h'", path=path)
    boxes = np.asarray(rows[:n_frames], np.float64)
    if not np.isfinite(boxes).all() or (boxes[:, 2:] <= 0).any():
        raise DataError("box with non-finite values or non-positive size", path=path)
    return boxes


def wrap_degrees(angle: np.ndarray | float) -> np.ndarray:
    """Angles to (-180, 180]."""
    a = np.mod(np.asarray(angle, np.float64) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)


def load_epfl_cars(root: str | Path, sequences: tuple[int, ...] | None = None) -> list[CarFrame]:
    """Every frame of the chosen sequences (all 20 by default) with its box and azimuth label."""
    root = Path(root)
    meta = root / "tripod-seq.txt"
    if not meta.is_file():
        raise DataError("not an EPFL cars folder (no tripod-seq.txt)", path=meta)
    lines = [ln for ln in meta.read_text().splitlines() if ln.strip()]
    if len(lines) < 7:
        raise DataError(f"expected 7 lines, got {len(lines)}", path=meta)
    n_seq = _ints(lines[0], 3, meta, "line 1")[0]
    counts = _ints(lines[1], n_seq, meta, "line 2 (frames per sequence)")
    full = _ints(lines[4], n_seq, meta, "line 5 (frame completing a turn)")
    front = _ints(lines[5], n_seq, meta, "line 6 (frame facing the camera)")
    sense = _ints(lines[6], n_seq, meta, "line 7 (sense of rotation)")
    pattern = lines[2].strip()
    chosen = tuple(range(1, n_seq + 1)) if sequences is None else sequences
    frames: list[CarFrame] = []
    for s in chosen:
        if not 1 <= s <= n_seq:
            raise DataError(f"sequence {s} outside 1..{n_seq}", path=meta)
        n = counts[s - 1]
        t = _times(root / f"times_{s:02d}.txt", n)
        boxes = _boxes(root / f"bbox_{s:02d}.txt", n)
        turn = t[full[s - 1] - 1] - t[0]
        if turn <= 0:
            raise DataError(f"sequence {s}: full-turn frame at time 0", path=meta)
        az = wrap_degrees(sense[s - 1] * 360.0 * (t - t[front[s - 1] - 1]) / turn)
        for f in range(1, n + 1):
            path = root / (pattern % (s, f))
            frames.append(CarFrame(path, s, f, tuple(boxes[f - 1].tolist()), float(az[f - 1])))
    return frames
