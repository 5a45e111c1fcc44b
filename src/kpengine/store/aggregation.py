"""Run the crowd aggregation (KeypointNet §3.4) on a category's raw annotations in the store.

Used by ``kpengine aggregate --db URL --category NAME`` and by the admin endpoint
``POST /api/admin/aggregate/{category}``. The raw clicks are read with the same query as
the raw export (:func:`~kpengine.store.exchange.raw_clicks`), so what an admin
downloads is exactly what was aggregated. The slow part (the pipeline) runs outside any
transaction; the result is written in one transaction by
:func:`~kpengine.store.verify.save_aggregation`, so annotators keep saving meanwhile and a
failed run leaves the previous proposal in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from kpengine.errors import DataError
from kpengine.io import layout
from kpengine.store.db import Store
from kpengine.store.exchange import raw_clicks
from kpengine.store.repo import get_category
from kpengine.store.schema import Model
from kpengine.store.verify import save_aggregation


def infer_root(session: Any, category: str) -> Path:  # noqa: ANN401 - Session
    """The dataset root the category was imported from, found from a stored point-cloud or
    mesh path (the store keeps only server-side paths written by ``kpengine db import``)."""
    cat = get_category(session, category)
    if cat is None:
        raise DataError(f"no category {category!r} in the store")
    for model in session.scalars(select(Model).where(Model.category_id == cat.id).order_by(Model.id)):
        for stored, up in ((model.pcd_path, 3), (model.mesh_path, 5), (model.mesh_path, 3)):
            if not stored:
                continue
            root = Path(stored).parents[up - 1]
            if layout.pcd_path(root, cat.synset, model.model_id) == Path(stored) or (
                layout.mesh_path(root, cat.synset, model.model_id) == Path(stored)
            ):
                return root
    raise DataError(f"cannot tell where the geometry of {category} lies; pass --data ROOT")


def aggregate_category(
    store: Store,
    category: str,
    root: str | Path | None = None,
    cfg: Any = None,  # noqa: ANN401
    on_stage: Any = None,  # noqa: ANN401 - Callable[[str, float], None], see aggregate()
) -> tuple[Any, dict[str, Any]]:
    """Aggregate ``category`` from the store and save the result as pending keypoints.

    Returns the ``AggregationResult`` and a summary (run id, keypoints written, report).
    ``on_stage(name, fraction)`` hears the pipeline's stages (a server job's progress).
    """
    from kpengine.aggregate.pipeline import AggregateConfig, aggregate
    from kpengine.data import KeypointNetDataset

    with store.session() as s:
        cat = get_category(s, category)
        if cat is None:
            raise DataError(f"no category {category!r} in the store")
        name = cat.name
        clicks = raw_clicks(s, name)
        root = Path(root) if root is not None else infer_root(s, name)
    wanted = {c.model_id for c in clicks}
    shapes = list(KeypointNetDataset(root, name, "all", model_ids=wanted)) if wanted else []
    result = aggregate(shapes, clicks, cfg or AggregateConfig(progress=False), on_stage=on_stage)
    with store.session() as s:
        cat = get_category(s, name)
        run = save_aggregation(s, cat, result)  # type: ignore[arg-type]
        summary = {
            "run": run.id,
            "category": name,
            "keypoints": sum(len(a.keypoints) for a in result.annotations),
            "clusters": result.clustering.n_clusters,
            "noise_candidates": result.report["noise_candidates"],
            "problems": result.report["problems"],
        }
    return result, summary


__all__ = ["aggregate_category", "infer_root", "raw_clicks"]
