"""The rigid-geometry conventions of kpengine, stated once: rotations, so(3), bounding-box centre.

Sense of rotations
    **Right-handed.** :func:`rotation_about` ``(axis, angle)`` turns by ``angle`` radians
    counter-clockwise seen from the positive end of the axis looking towards the origin (the
    right-hand rule). About +y (the ShapeNet up axis) that maps +z towards +x and +x towards
    -z; about +z it maps +x towards +y. A negative angle turns the other way; code that needs
    the opposite sense (the official KeypointNet relabellings) passes ``-angle`` and says so.

Points are rows
    Point sets are ``(N, 3)`` arrays; a rotation ``R`` (3, 3) acts on them as
    ``points @ R.T`` (the same as ``R @ p`` for each point ``p``).

so(3)
    :func:`skew` maps a rotation vector ``w`` (3,) to ``[w]x`` with ``[w]x v = w x v``;
    :func:`so3_exp` is its matrix exponential (a rotation by ``|w|`` about ``w / |w|``,
    right-handed as above), differentiable in torch, exact at ``w = 0``.

Bounding-box centre
    :func:`bbox_centre` is the midpoint of the axis-aligned bounding box (ShapeNet clouds and
    meshes are not centred: ``model_normalized`` only fixes the diagonal to 1). Cameras look
    at it, the aggregation's symmetry planes and axes pass through it, the embedding network
    centres clouds on it.

Hand-written rather than taken from kornia: the NumPy paths turn a handful of keypoints or one
cloud and a torch round trip costs more than the work; for so(3) the measured comparison with
``kornia.geometry.conversions.axis_angle_to_rotation_matrix`` is in docs/architecture.md.
"""

from __future__ import annotations

import numpy as np
import torch

_AXES = {"x": 0, "y": 1, "z": 2}


def rotation_about(axis: str | int, angle: float) -> np.ndarray:
    """Right-handed rotation (3, 3) float64 by ``angle`` radians about the coordinate axis ``axis``
    (``"x"``/``"y"``/``"z"`` or 0/1/2)."""
    k = _AXES[axis] if isinstance(axis, str) else int(axis)
    i, j = (k + 1) % 3, (k + 2) % 3  # the plane turned, in cyclic order (x->y about z, y->z about x, z->x about y)
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def rotate_about_y(points: np.ndarray, angle: float, centre: np.ndarray) -> np.ndarray:
    """Points (N, 3) turned right-handedly by ``angle`` about the vertical (y) line through ``centre`` (3,)."""
    points, centre = np.asarray(points, np.float64), np.asarray(centre, np.float64)
    return (points - centre) @ rotation_about("y", angle).T + centre


def bbox_centre(points: np.ndarray) -> np.ndarray:
    """Midpoint (3,) of the axis-aligned bounding box of points or vertices (N, 3), in their dtype."""
    points = np.asarray(points)
    return (points.min(axis=0) + points.max(axis=0)) / 2


def skew(w: torch.Tensor) -> torch.Tensor:
    """The cross-product matrix (3, 3) of ``w`` (3,): ``skew(w) @ v == cross(w, v)``; differentiable."""
    z = torch.zeros((), dtype=w.dtype, device=w.device)
    return torch.stack([torch.stack([z, -w[2], w[1]]), torch.stack([w[2], z, -w[0]]), torch.stack([-w[1], w[0], z])])


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation (3, 3) ``exp([w]x)`` for a rotation vector ``w`` (3,): ``|w|`` radians about ``w``, right-handed.

    ``torch.linalg.matrix_exp`` rather than Rodrigues' formula: no special case (and no
    undefined gradient) at ``w = 0``, where pose refinement starts."""
    return torch.linalg.matrix_exp(skew(w))
