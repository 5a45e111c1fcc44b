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

**Crowds shaped like KeypointNet's** (:meth:`CrowdModel.keypointnet`, ``kpengine
simulate-crowd --like-keypointnet``): the real ground truth comes from a pool of 5-26 people
per category (the paper's Table 3: bed 8, bathtub 15, chair 15, airplane 26), each model
clicked by only a few of them. The defaults above put every annotator on half the models
(~6 per model of 12); the KeypointNet-shaped crowd instead

- draws ``per_model`` = (3, 5) annotators per model (uniform count) from a pool of
  ``n_annotators`` = Table 3's size, without replacement, each with probability
  proportional to a per-annotator *activity* ``exp(N(0, activity_spread^2))`` (some
  people annotate far more models than others: per-annotator coverage);
- gives each annotator their own noise ``noise * exp(N(0, noise_spread^2))``;
- makes a fraction ``mirrored`` of the annotators name left and right from their own
  view: on each model, with probability ``mirror_flip``, they click the mirror partner
  (the ground truth's reflection pair) under an id's number. A *consistent* swap would be
  harmless (numbers are private anyway); what hurts is that the meaning flips between
  models, as it does for a person whose "left" depends on how the model was turned;
- keeps wrong clicks (``wrong_rate``) and misses (``miss_rate``), and vocabularies
  (``keep_rate``), as above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kpengine.data.shape import Shape
from kpengine.io.clicks import Click

# annotator pool per category, KeypointNet (You et al. 2020) Table 3, as quoted in issue 13
TABLE3_POOL = {"bed": 8, "bathtub": 15, "chair": 15, "airplane": 26}


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
    per_model: tuple[int, int] | None = None
    activity_spread: float = 0.0
    noise_spread: float = 0.0
    mirrored: float = 0.0
    mirror_flip: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_annotators < 1:
            raise ValueError("a crowd needs at least one annotator")
        if self.per_model is not None:
            lo, hi = self.per_model
            if not 1 <= lo <= hi:
                raise ValueError(f"per_model must be (lo, hi) with 1 <= lo <= hi, got {self.per_model}")
        for name in ("wrong_rate", "miss_rate", "keep_rate", "coverage", "mirrored", "mirror_flip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("noise", "noise_spread", "activity_spread"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def keypointnet(cls, category: str, seed: int = 0, **overrides) -> CrowdModel:
        """A crowd shaped like KeypointNet's for ``category`` (see the module docstring).

        Pool size from the paper's Table 3 where the issue quotes it, else 15; 3-5 annotators
        per model; activity spread 1.0 (the busiest of 15 people does ~10x the models of the
        least busy), noise 0.02 with spread 0.5, 15 % mirrored annotators.
        """
        base = {
            "n_annotators": TABLE3_POOL.get(category, 15),
            "per_model": (3, 5),
            "activity_spread": 1.0,
            "noise": 0.02,
            "noise_spread": 0.5,
            "mirrored": 0.15,
            "seed": seed,
        }
        base.update(overrides)
        return cls(**base)

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
    # per-annotator traits from their own stream, so the default crowd's clicks stay as they were
    traits = np.random.default_rng([model.seed, 1])
    activity = np.exp(traits.normal(0.0, model.activity_spread, n_ann))
    noise = model.noise * np.exp(traits.normal(0.0, model.noise_spread, n_ann))
    mirrored = traits.random(n_ann) < model.mirrored
    if model.per_model is None:
        works = rng.random((n_ann, n_models)) < model.coverage
        need = min(model.min_per_model, n_ann)
        for m in range(n_models):
            short = need - works[:, m].sum()
            if short > 0:
                works[rng.choice(np.flatnonzero(~works[:, m]), short, replace=False), m] = True
    else:
        works = np.zeros((n_ann, n_models), bool)
        lo, hi = model.per_model
        for m in range(n_models):
            k = min(int(rng.integers(lo, hi + 1)), n_ann)
            works[traits.choice(n_ann, k, replace=False, p=activity / activity.sum()), m] = True
    # 3. clicks
    clicks: list[Click] = []
    t = 1.7e9
    id_pos = {int(s): i for i, s in enumerate(ids)}
    for m, shape in enumerate(shapes):
        pts = shape.points.astype(np.float64)
        tree = None
        partner = np.arange(len(shape.semantic_ids))
        for g in shape.symmetries.reflection if shape.symmetries is not None else []:
            if len(g.kp_indexes) == 2:
                i, j = g.kp_indexes
                partner[i], partner[j] = j, i
        for a in np.flatnonzero(works[:, m]):
            flip = bool(mirrored[a]) and traits.random() < model.mirror_flip
            for k in range(len(shape.semantic_ids)):
                j = id_pos[int(shape.semantic_ids[k])]
                if not known[a, j] or rng.random() < model.miss_rate:
                    continue
                if rng.random() < model.wrong_rate:
                    idx = int(rng.integers(len(pts)))
                else:
                    at = partner[k] if flip else k
                    target = shape.keypoints[at] + rng.normal(0.0, noise[a], 3)
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
