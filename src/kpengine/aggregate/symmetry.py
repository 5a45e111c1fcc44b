"""Symmetries of aggregated keypoints, in the official KeypointNet schema.

Models are canonically oriented (ShapeNetCore.v2: y up), so:

- **Reflection pairs**: mirror every keypoint across the plane ``x = c_x`` (and, where
  ``axes`` includes it, ``z = c_z``), c = the cloud's bounding-box centre; keypoint i and
  j != i form a pair on a model when the mirror of i lies within ``tol`` of j and j is the
  nearest keypoint to it. A pair of semantic ids (s, t) is accepted for the category when at
  least ``min_agree`` of the models that carry both vote for it; every model carrying both
  then gets the pair.
- **Rotation groups**: rotate about the vertical axis through (c_x, c_z) by 2 pi / n,
  n = 2..8; an orbit of n keypoints that map onto each other (within ``tol``) is a group;
  accepted per set of semantic ids by the same vote, largest n first (ids already in a
  larger group are not regrouped). ``is_circle`` when the cloud itself is rotationally
  invariant (rotated by an angle that is no multiple of 2 pi / n, its mean nearest-point
  distance to itself stays below ``circle_tol``); the circle is the group's centroid, mean
  radius and the vertical normal. Otherwise ``"circle": {}`` as in the official files.

Groups name keypoint-list indices of each model (``kp_indexes``), as the official files do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from kpengine.geometry.transforms import bbox_centre, rotate_about_y
from kpengine.io.annotations import Circle, ReflectionGroup, RotationGroup, Symmetries

MAX_FOLD = 8


@dataclass(frozen=True)
class SymmetryConfig:
    tol: float = 0.05
    min_agree: float = 0.5
    axes: tuple[int, ...] = (0, 2)
    circle_tol: float = 0.01


def model_reflection_pairs(xyz: np.ndarray, centre: np.ndarray, axis: int, tol: float) -> list[tuple[int, int]]:
    """Index pairs (i, j), i < j, of keypoints (K, 3) mirrored across the plane through ``centre`` normal to axis."""
    if len(xyz) < 2:
        return []
    mirrored = xyz.copy()
    mirrored[:, axis] = 2 * centre[axis] - mirrored[:, axis]
    d = np.linalg.norm(mirrored[:, None, :] - xyz[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    j = d.argmin(axis=1)
    ok = d[np.arange(len(xyz)), j] <= tol
    return sorted({(min(i, int(j[i])), max(i, int(j[i]))) for i in np.flatnonzero(ok) if j[j[i]] == i})


def model_rotation_orbits(xyz: np.ndarray, centre: np.ndarray, fold: int, tol: float) -> list[tuple[int, ...]]:
    """Orbits (sorted index tuples of length ``fold``) of keypoints (K, 3) under rotation by 2 pi / fold."""
    if len(xyz) < fold:
        return []
    rotated = rotate_about_y(xyz, 2 * np.pi / fold, centre)
    d = np.linalg.norm(rotated[:, None, :] - xyz[None, :, :], axis=-1)
    f = d.argmin(axis=1)
    f[d[np.arange(len(xyz)), f] > tol] = -1
    orbits = set()
    for i in range(len(xyz)):
        orbit, k = [i], i
        for _ in range(fold - 1):
            k = f[k]
            if k < 0 or k in orbit:
                break
            orbit.append(int(k))
        if len(orbit) == fold and f[orbit[-1]] == i:
            orbits.add(tuple(sorted(orbit)))
    return sorted(orbits)


def is_continuous(points: np.ndarray, centre: np.ndarray, fold: int, tol: float) -> bool:
    """Whether the cloud (N, 3) is (nearly) invariant under a rotation that is no multiple of 2 pi / fold."""
    angle = 2 * np.pi / fold * 0.5 + 0.1
    moved = rotate_about_y(points, angle, centre)
    return float(cKDTree(points).query(moved)[0].mean()) <= tol


def detect_symmetries(
    keypoints: Sequence[np.ndarray],
    ids: Sequence[np.ndarray],
    clouds: Sequence[np.ndarray],
    cfg: SymmetryConfig = SymmetryConfig(),
) -> list[Symmetries]:
    """Symmetries per model from keypoints (K_m, 3), their semantic ids (K_m,) and clouds (N, 3)."""
    centres = [bbox_centre(np.asarray(c, np.float64)) for c in clouds]
    present = [set(np.asarray(i).tolist()) for i in ids]
    # --- reflection votes over semantic-id pairs
    votes: Counter[tuple[int, int]] = Counter()
    for xyz, sid, c in zip(keypoints, ids, centres):
        found = set()
        for axis in cfg.axes:
            for i, j in model_reflection_pairs(np.asarray(xyz, np.float64), c, axis, cfg.tol):
                s, t = int(sid[i]), int(sid[j])
                if s != t:
                    found.add((min(s, t), max(s, t)))
        votes.update(found)
    pairs = [p for p, v in votes.items() if v >= cfg.min_agree * sum(p[0] in ids_ and p[1] in ids_ for ids_ in present)]
    # --- rotation votes over semantic-id sets, largest fold first
    groups: list[tuple[int, ...]] = []
    covered: set[int] = set()
    for fold in range(MAX_FOLD, 1, -1):
        rv: Counter[tuple[int, ...]] = Counter()
        for xyz, sid, c in zip(keypoints, ids, centres):
            found = set()
            for orbit in model_rotation_orbits(np.asarray(xyz, np.float64), c, fold, cfg.tol):
                sem = tuple(sorted(int(sid[k]) for k in orbit))
                if len(set(sem)) == fold:
                    found.add(sem)
            rv.update(found)
        for sem, v in sorted(rv.items()):
            if covered & set(sem):
                continue
            carriers = sum(set(sem) <= p for p in present)
            if v >= cfg.min_agree * carriers:
                groups.append(sem)
                covered |= set(sem)
    # --- per-model output
    out = []
    for xyz, sid, cloud, c in zip(keypoints, ids, clouds, centres):
        where = {int(s): k for k, s in enumerate(np.asarray(sid).tolist())}
        refl = [ReflectionGroup([where[s], where[t]]) for s, t in sorted(pairs) if s in where and t in where]
        rot = []
        for sem in groups:
            if not all(s in where for s in sem):
                continue
            idx = [where[s] for s in sem]
            if is_continuous(np.asarray(cloud, np.float64), c, len(sem), cfg.circle_tol):
                pts = np.asarray(xyz, np.float64)[idx]
                centre = pts.mean(axis=0)
                radius = float(np.linalg.norm(pts - centre, axis=1).mean())
                circle = Circle(tuple(centre.tolist()), radius, (0.0, 1.0, 0.0))  # type: ignore[arg-type]
                rot.append(RotationGroup(idx, is_circle=True, circle=circle))
            else:
                rot.append(RotationGroup(idx, is_circle=False, extra={"circle": {}}))
        out.append(Symmetries(refl, rot))
    return out
