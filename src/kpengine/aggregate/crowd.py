"""Simulated crowds: annotators built from the ground-truth keypoints of real shapes.

The annotator model (every random choice drawn from one seeded generator, so a seed gives
the same RAW.json on every machine):

1. **Vocabulary.** Annotator *a* knows each semantic id of the category with probability
   ``keep_rate`` (at least ``min_known`` ids), and numbers the ids they know with a random
   permutation: their own ``kp_index``, consistent over all their models.
2. **Workload.** Each annotator annotates each model with probability ``coverage``; every
   model gets at least ``min_per_model`` annotators.
3. **Clicks.** On a model, for each known id that the model has in its ground truth: with
   probability ``miss_rate`` the annotator skips it; otherwise they click the ground-truth
   position plus isotropic Gaussian noise of standard deviation ``noise`` (model units),
   snapped to the nearest point of the model's cloud (clicks land on the surface). With
   probability ``wrong_rate`` the click goes to a uniformly random cloud point instead
   (a mis-click or a misunderstanding), keeping the same ``kp_index``.

Ground-truth ids a model does not have are never clicked (people do not click what is not
there). Click ``time`` is a synthetic, increasing timestamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kpengine.data.shape import Shape
from kpengine.io.clicks import Click


@dataclass(frozen=True)
class CrowdModel:
    """Parameters of the simulated annotators (see the module docstring)."""

    n_annotators: int = 12
    noise: float = 0.02
    wrong_rate: float = 0.05
    miss_rate: float = 0.1
    keep_rate: float = 0.8
    coverage: float = 0.5
    min_known: int = 3
    min_per_model: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_annotators < 1:
            raise ValueError("a crowd needs at least one annotator")
        for name in ("wrong_rate", "miss_rate", "keep_rate", "coverage"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    def to_json(self) -> dict:
        return asdict(self)


def simulate_crowd(shapes: Sequence[Shape], model: CrowdModel) -> list[Click]:
    """Raw clicks of ``model.n_annotators`` simulated people on ``shapes`` (see module docstring)."""
    rng = np.random.default_rng(model.seed)
    ids = np.unique(np.concatenate([s.semantic_ids for s in shapes])) if shapes else np.zeros(0, np.int64)
    n_ann, n_models = model.n_annotators, len(shapes)
    # 1. vocabulary and private numbering
    known = rng.random((n_ann, len(ids))) < model.keep_rate
    for a in range(n_ann):
        short = min(model.min_known, len(ids)) - known[a].sum()
        if short > 0:
            known[a, rng.choice(np.flatnonzero(~known[a]), short, replace=False)] = True
    numbering = np.stack([rng.permutation(len(ids)) for _ in range(n_ann)]) if len(ids) else np.zeros((n_ann, 0))
    # 2. workload
    works = rng.random((n_ann, n_models)) < model.coverage
    need = min(model.min_per_model, n_ann)
    for m in range(n_models):
        short = need - works[:, m].sum()
        if short > 0:
            works[rng.choice(np.flatnonzero(~works[:, m]), short, replace=False), m] = True
    # 3. clicks
    clicks: list[Click] = []
    t = 1.7e9
    id_pos = {int(s): i for i, s in enumerate(ids)}
    for m, shape in enumerate(shapes):
        pts = shape.points.astype(np.float64)
        tree = None
        for a in np.flatnonzero(works[:, m]):
            for k in range(len(shape.semantic_ids)):
                j = id_pos[int(shape.semantic_ids[k])]
                if not known[a, j] or rng.random() < model.miss_rate:
                    continue
                if rng.random() < model.wrong_rate:
                    idx = int(rng.integers(len(pts)))
                else:
                    target = shape.keypoints[k] + rng.normal(0.0, model.noise, 3)
                    if tree is None:
                        from scipy.spatial import cKDTree

                        tree = cKDTree(pts)
                    idx = int(tree.query(target)[1])
                t += float(rng.uniform(1.0, 6.0))
                clicks.append(
                    Click(
                        model_id=shape.model_id,
                        annotator=f"sim{a:03d}",
                        kp_index=int(numbering[a, j]),
                        xyz=tuple(float(v) for v in pts[idx]),  # type: ignore[arg-type]
                        point_index=idx,
                        time=round(t, 3),
                        class_id=shape.category.synset,
                    )
                )
    return clicks
