"""Raw crowd clicks ready for aggregation: checks against a dataset, and grouping.

The file format (RAW.json) and the :class:`~kpengine.io.clicks.Click` type live in
:mod:`kpengine.io.clicks`. :func:`check_clicks` checks clicks against the models of a
dataset and returns what can be used plus a list of ``Problem`` messages, so one bad click
never stops the rest; :class:`ClickSet` groups the kept clicks by model as arrays.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from kpengine.errors import Problem
from kpengine.io.clicks import MAX_KEYPOINTS, Click


def check_clicks(
    clicks: Sequence[Click], model_ids: Iterable[str], *, max_points: int = MAX_KEYPOINTS
) -> tuple[list[Click], list[Problem]]:
    """Keep the clicks that can be aggregated; say why each other one was dropped.

    - clicks on models not in ``model_ids`` are dropped (one problem per annotator and model);
    - duplicates (same model, annotator and ``kp_index``) keep the first click;
    - an annotator with more than ``max_points`` distinct points on a model keeps the first
      ``max_points`` (in file order);
    - an annotator who annotated one model only is kept, with a warning: their numbering
      ties nothing across models, so they add saliency but no cross-model consistency.
    """
    known = set(model_ids)
    problems: list[Problem] = []
    unknown: Counter[tuple[str, str]] = Counter()
    seen: set[tuple[str, str, int]] = set()
    per_pair: Counter[tuple[str, str]] = Counter()
    kept: list[Click] = []
    dup: Counter[tuple[str, str]] = Counter()
    over: Counter[tuple[str, str]] = Counter()
    for c in clicks:
        if c.model_id not in known:
            unknown[(c.model_id, c.annotator)] += 1
            continue
        key = (c.model_id, c.annotator, c.kp_index)
        if key in seen:
            dup[(c.model_id, c.annotator)] += 1
            continue
        if per_pair[(c.model_id, c.annotator)] >= max_points:
            over[(c.model_id, c.annotator)] += 1
            continue
        seen.add(key)
        per_pair[(c.model_id, c.annotator)] += 1
        kept.append(c)
    for (mid, ann), n in sorted(unknown.items()):
        problems.append(Problem(mid, f"annotator {ann}: {n} click(s) on a model that is not in the dataset; ignored"))
    for (mid, ann), n in sorted(dup.items()):
        problems.append(
            Problem(mid, f"annotator {ann}: {n} duplicate click(s) (same kp_index twice); kept the first", fatal=False)
        )
    for (mid, ann), n in sorted(over.items()):
        problems.append(
            Problem(
                mid,
                f"annotator {ann}: more than {max_points} points on one model; kept the first {max_points}, "
                f"ignored {n}",
                fatal=False,
            )
        )
    models_of: dict[str, set[str]] = defaultdict(set)
    for c in kept:
        models_of[c.annotator].add(c.model_id)
    for ann, mids in sorted(models_of.items()):
        if len(mids) == 1:
            problems.append(
                Problem(
                    next(iter(mids)),
                    f"annotator {ann} annotated this model only: their clicks add saliency but cannot tie "
                    "semantic ids across models",
                    fatal=False,
                )
            )
    return kept, problems


@dataclass
class ModelClicks:
    """The clicks on one model as arrays.

    ``xyz`` (C, 3) float32, ``annotator`` (C,) int64 index into :attr:`ClickSet.annotators`,
    ``label`` (C,) int64 global class id of (annotator, kp_index), ``point_index`` (C,) int64
    nearest cloud point (filled in by :func:`ClickSet.snap`; -1 before).
    """

    xyz: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    point_index: np.ndarray


@dataclass
class ClickSet:
    """Validated clicks of a category, grouped by model, with global class ids.

    Class ``label`` numbers each (annotator, kp_index) pair once: the classes the embedding
    learns. ``classes`` (L, 2) holds (annotator index, kp_index) per label.
    """

    annotators: list[str]
    classes: np.ndarray
    models: dict[str, ModelClicks]

    @classmethod
    def from_clicks(cls, clicks: Sequence[Click]) -> ClickSet:
        annotators = sorted({c.annotator for c in clicks})
        a_index = {a: i for i, a in enumerate(annotators)}
        pairs = sorted({(a_index[c.annotator], c.kp_index) for c in clicks})
        label_of = {p: i for i, p in enumerate(pairs)}
        grouped: dict[str, list[Click]] = defaultdict(list)
        for c in clicks:
            grouped[c.model_id].append(c)
        models = {}
        for mid, cs in grouped.items():
            models[mid] = ModelClicks(
                xyz=np.array([c.xyz for c in cs], np.float32).reshape(-1, 3),
                annotator=np.array([a_index[c.annotator] for c in cs], np.int64),
                label=np.array([label_of[(a_index[c.annotator], c.kp_index)] for c in cs], np.int64),
                point_index=np.array([-1 if c.point_index is None else c.point_index for c in cs], np.int64),
            )
        classes = np.array(pairs, np.int64).reshape(-1, 2)
        return cls(annotators, classes, models)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_clicks(self) -> int:
        return sum(len(m.xyz) for m in self.models.values())
