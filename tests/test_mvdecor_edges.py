"""benchmarks/mvdecor_edges.py: the label-map corruptions that model a per-pixel classifier's edge errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import mvdecor_edges  # noqa: E402


class FixedDirection:
    """A stand-in generator whose ``integers`` always names one direction (index into DIRECTIONS)."""

    def __init__(self, k: int):
        self.k = k

    def integers(self, high, size=None):
        return self.k if size is None else np.full(size, self.k)


def _square() -> tuple[np.ndarray, np.ndarray]:
    """A 6x6 object (mask) whose left half is label 0, right half label 1; off the object label 9."""
    labels = np.full((8, 8), 9)
    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:7] = True
    labels[1:7, 1:4] = 0
    labels[1:7, 4:7] = 1
    return labels, mask


def test_exact_is_the_identity() -> None:
    labels, mask = _square()
    assert (mvdecor_edges.corrupt(labels, mask, "exact", np.random.default_rng(0)) == labels).all()


def test_a_one_pixel_shift_moves_the_edge_by_one_column_and_keeps_the_silhouette() -> None:
    labels, mask = _square()
    right = mvdecor_edges.DIRECTIONS.index((0, 1))  # (dy, dx): content moves one column right
    out = mvdecor_edges.corrupt(labels, mask, "shift1", FixedDirection(right))
    # hand-derived: the 0|1 edge was between columns 3 and 4, now between 4 and 5
    assert (out[1:7, 1:5] == 0).all() and (out[1:7, 5:7] == 1).all()
    assert (out[~mask] == 9).all()  # off the object untouched
    two = mvdecor_edges.corrupt(labels, mask, "shift2", FixedDirection(right))
    assert (two[1:7, 1:6] == 0).all() and (two[1:7, 6] == 1).all()


def test_ragged_edges_change_only_pixels_beside_another_label() -> None:
    labels, mask = _square()
    out = mvdecor_edges.corrupt(labels, mask, "edge1", np.random.default_rng(3))
    changed = out != labels
    assert changed.any()
    # only columns 3 and 4 (either side of the 0|1 edge) or the object's rim (beside "9") may change
    rim = mask & ~np.pad(np.ones((4, 4), bool), 2)
    assert (changed <= ((np.arange(8)[None, :] == 3) | (np.arange(8)[None, :] == 4) | rim)).all()
    # a changed pixel never takes the off-object label (its neighbour must be on the object)
    assert (out[mask] != 9).all()
