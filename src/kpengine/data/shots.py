"""Few-shot subsets: k labelled shapes drawn from a split, the same draw for every method.

The draw depends on the sorted model ids, k and the seed only, so MvDeCor and the point
baselines trained with the same ``--shots K --seed S`` see exactly the same labelled shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kpengine.errors import DataError


def draw_shots(model_ids: Sequence[str], k: int, seed: int, where: str = "the train split") -> list[str]:
    """``k`` ids of ``model_ids`` without replacement (in sorted order); DataError when k is not
    in 1..len(model_ids)."""
    ids = sorted(model_ids)
    if k < 1:
        raise DataError(f"--shots must be at least 1, got {k}")
    if k > len(ids):
        raise DataError(f"--shots {k} is larger than {where}, which has {len(ids)} usable shapes")
    pick = np.random.default_rng(seed).choice(len(ids), size=k, replace=False)
    return [ids[i] for i in sorted(pick)]
