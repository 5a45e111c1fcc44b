"""Crowd problems named in the aggregation report, once the semantic ids are known.

The aggregation goes on past all of these (it is built for partial, noisy clicks); they
are named so a verifier knows where to look:

- **an annotator whose numbering changes meaning between models**: the clicks of one
  (annotator, kp_index) class land, on different models, on keypoints of different
  semantic ids -- e.g. left and right swapped on some models. Flagged when at least
  ``min_models`` of the class's clicks meet a recovered keypoint (within ``radius``) and
  the second most frequent id takes at least ``min_share`` of them;
- **a model with one click**: its keypoints rest on a single person's single click;
- **an id every annotator of a model skipped**: an id carried by at least ``common`` of
  the models (90 %) is missing on a model that has clicks -- all of its annotators left
  it out (or the model lacks it, which only a person can tell: the verify page's "add").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from kpengine.errors import Problem


def crowd_problems(
    model_ids: Sequence[str],
    clicks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    keypoints: Sequence[tuple[np.ndarray, np.ndarray]],
    annotators: Sequence[str],
    classes: np.ndarray,
    radius: float = 0.05,
    min_models: int = 4,
    min_share: float = 0.25,
    common: float = 0.9,
) -> list[Problem]:
    """Problems (non-fatal) of a finished aggregation.

    ``clicks`` per model: (xyz (C, 3), label (C,), annotator (C,)); ``keypoints`` per model:
    (xyz (K, 3), semantic id (K,)); ``classes`` (L, 2) (annotator index, kp_index) per label.
    """
    out: list[Problem] = []
    meaning: dict[int, Counter[int]] = {}
    for (xyz, label, _), (kp, ids) in zip(clicks, keypoints):
        if len(kp) == 0 or len(xyz) == 0:
            continue
        d = np.linalg.norm(xyz[:, None, :] - kp[None, :, :], axis=-1)
        j = d.argmin(axis=1)
        for lab, jj, ok in zip(label.tolist(), j.tolist(), (d[np.arange(len(xyz)), j] < radius).tolist()):
            if ok:
                meaning.setdefault(lab, Counter())[int(ids[jj])] += 1
    for lab, cnt in sorted(meaning.items()):
        top = cnt.most_common(2)
        total = sum(cnt.values())
        if total >= min_models and len(top) == 2 and top[1][1] >= min_share * total:
            a, k = int(classes[lab, 0]), int(classes[lab, 1])
            out.append(
                Problem(
                    "*",
                    f"annotator {annotators[a]!r}'s number {k} changes meaning between models: it names id "
                    f"{top[0][0]} on {top[0][1]} and id {top[1][0]} on {top[1][1]} of {total} models "
                    "(left/right by view?); their clicks still count, as evidence for either",
                    fatal=False,
                )
            )
    for m, (xyz, _, _) in zip(model_ids, clicks):
        if len(xyz) == 1:
            out.append(Problem(m, "only one click on this model: its keypoints rest on one person's click", False))
    carried = Counter(int(s) for _, ids in keypoints for s in set(ids.tolist()))
    n = len(keypoints)
    usual = sorted(s for s, c in carried.items() if n >= 5 and c >= common * n)
    for m, (_, ids) in zip(model_ids, keypoints):
        missing = sorted(set(usual) - set(ids.tolist()))
        if missing:
            out.append(
                Problem(m, f"ids {missing} are on >= {common:.0%} of the models but nobody clicked them here", False)
            )
    return out
