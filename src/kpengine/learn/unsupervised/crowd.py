"""Annotators who accept suggested keypoints: a simulated crowd's clicks, moved onto suggestions.

The annotation page shows an unsupervised run's keypoints faintly; one click on one makes it a
keypoint (``web/src/annotate.ts``). To measure what that does to aggregation, a simulated crowd
(``kpengine.aggregate.crowd.simulate_crowd``, unchanged) is given this habit afterwards: an
annotator about to click near a suggestion (within ``radius``, model units) takes the suggestion
instead with probability ``accept``. As on the page, a suggestion once accepted on a model is
no longer offered to that annotator there, so nobody puts two of their keypoints on one
suggestion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from kpengine.io.clicks import Click


def snap_to_suggestions(
    clicks: Sequence[Click],
    suggestions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    radius: float,
    accept: float,
    seed: int = 0,
) -> tuple[list[Click], np.ndarray]:
    """The clicks with some moved onto suggestions, and a (C,) bool mask of the moved ones.

    ``suggestions``: {model_id: (point indices (K,), positions (K, 3))}; a click on a model
    without suggestions stays. Clicks are visited in the given order (a crowd's time order),
    each takes the nearest suggestion still offered to its annotator on its model."""
    if radius < 0 or not 0.0 <= accept <= 1.0:
        raise ValueError(f"radius must be >= 0 and accept in [0, 1], got {radius}, {accept}")
    rng = np.random.default_rng(seed)
    taken: dict[tuple[str, str], set[int]] = {}
    out: list[Click] = []
    moved = np.zeros(len(clicks), bool)
    for c, click in enumerate(clicks):
        draw = rng.random()  # one draw per click, so the same seed moves the same clicks at any radius
        if click.model_id not in suggestions:
            out.append(click)
            continue
        idx, xyz = suggestions[click.model_id]
        used = taken.setdefault((click.annotator, click.model_id), set())
        d = np.linalg.norm(np.asarray(xyz, np.float64) - np.asarray(click.xyz, np.float64), axis=1)
        d[list(used)] = np.inf
        k = int(np.argmin(d)) if len(d) else -1
        if k < 0 or d[k] > radius or draw >= accept:
            out.append(click)
            continue
        used.add(k)
        moved[c] = True
        xyz_k = tuple(float(v) for v in xyz[k])
        # the mesh location of the old click no longer applies; the cloud point does
        out.append(replace(click, xyz=xyz_k, point_index=int(idx[k]), face_index=None, face_uv=None))
    return out, moved
