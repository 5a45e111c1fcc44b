"""a CNN regressing an object crop into a shape-embedding run's shape space (joint retrieval, Li, Su et al.)

``--data``: a render set (``kpengine render-views``) with views of the category's train shapes on real
photo backgrounds; ``--category``: the category. ``--config``: ``shape_space`` (required: a
shape-embedding run directory or its ``shape_space.npz``), ``val_data`` (a render set of val-split
shapes: the validation measures are the paper's image->shape median rank and top-1/top-5 over the
whole shape space), ``size``, ``widths``, ``crop_size``, ``margins``, ``shift_jitter``. Views of
test-split shapes are refused: they stay unseen for the benchmark.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from kpengine.errors import DataError
from kpengine.image.datasets import Indices
from kpengine.image.retrieval.embedding import (
    ImageEmbeddingNet,
    RankSummary,
    distances_to,
    embed,
    eval_inputs,
    ranks_of,
    store_crops,
    training_batch,
)
from kpengine.image.tasks._common import ImageConfig, ImageTask
from kpengine.io.shapespace import ShapeSpace, load_shape_space
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ImageEmbeddingConfig(ImageConfig):
    shape_space: str = ""
    crop_size: int = 80
    margins: list[float] = field(default_factory=lambda: [1.1, 1.8])
    shift_jitter: float = 0.05
    epochs: int = 20

    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device", "data", "val_data", "shape_space")


def shape_space_path(path: str | Path) -> Path:
    """A shape-embedding run directory or a shape-space file -> the file."""
    p = Path(path)
    return p / "shape_space.npz" if p.is_dir() else p


@dataclass
class EmbeddingViews:
    """Stored crops (N, 3, S, S) uint8, targets (N, dim) float32, the row of each view's shape (N,), names."""

    crops: torch.Tensor
    targets: torch.Tensor
    rows: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.crops.shape[0])


def embedding_views(root: str | Path, space: ShapeSpace, crop_size: int, *, allow_test: bool = False) -> EmbeddingViews:
    """The views of ``space.category`` in a render set, with their shapes' points as targets. Views of
    shapes outside the space are skipped (warning); views of test-split shapes are refused unless
    ``allow_test`` (the benchmark's evaluation)."""
    from kpengine.io.renderset import load_render_set

    rs = load_render_set(root).select(categories=[space.category])
    if not len(rs):
        raise DataError(f"render set has no {space.category} views", path=root)
    index = space.index()
    keep, rows = [], []
    for k, v in enumerate(rs.views):
        row = index.get(v["model_id"])
        if row is None:
            continue
        if not allow_test and (v["split"] == "test" or space.splits[row] == "test"):
            raise DataError(
                f"view {v['id']} shows test-split shape {v['model_id']}: test shapes are never trained on", path=root
            )
        keep.append(k)
        rows.append(row)
    if len(keep) < len(rs):
        log.warning(
            "%s: %d of %d views show shapes outside the shape space; skipped", root, len(rs) - len(keep), len(rs)
        )
    if not keep:
        raise DataError(f"no view of the render set shows a shape of the {space.category} shape space", path=root)
    px = rs.images(keep)
    coords = torch.from_numpy(np.asarray(space.coords, np.float32))
    r = np.asarray(rows)
    return EmbeddingViews(
        store_crops(px["image"], px["mask"], crop_size), coords[r], r, [rs.views[k]["id"] for k in keep]
    )


@TASKS.register("image_embedding")
class ImageEmbeddingTask(ImageTask):
    config_class = ImageEmbeddingConfig

    def __init__(self, config: ImageEmbeddingConfig):
        super().__init__(config)
        self._space: ShapeSpace | None = None

    def space(self) -> ShapeSpace:
        if self._space is None:
            if not self.config.shape_space:
                raise DataError("image-embedding needs --config '{\"shape_space\": RUN_DIR}' (a shape-embedding run)")
            space = load_shape_space(shape_space_path(self.config.shape_space), need=("coords",))
            from kpengine.categories import resolve_category

            if space.category != resolve_category(self.config.category).name:
                raise DataError(
                    f"shape space is of category {space.category!r}, not {self.config.category!r}",
                    path=shape_space_path(self.config.shape_space),
                )
            self._space = space
        return self._space

    def load_sets(self) -> tuple[EmbeddingViews, EmbeddingViews | None]:
        c, s = self.config, self.space()
        val = embedding_views(c.val_data, s, c.crop_size) if c.val_data else None
        return embedding_views(c.data, s, c.crop_size), val

    def data(self) -> Data:
        train, _ = self.sets()
        c = self.config
        margins = (float(c.margins[0]), float(c.margins[1]))
        return Data(
            Indices(len(train)),
            None,
            lambda idx: training_batch(train.crops, train.targets, idx, c.size, margins, c.shift_jitter),
        )

    def model(self) -> nn.Module:
        return ImageEmbeddingNet(self._dim(), tuple(self.config.widths), self.config.size)

    def _dim(self) -> int:
        return int(self.space().coords.shape[1])

    @classmethod
    def load_model(cls, state: dict[str, Any]) -> nn.Module:
        cfg = state["config"]
        dim = int(state["shape_space"]["coords"].shape[1])
        model = ImageEmbeddingNet(dim, tuple(cfg["widths"]), int(cfg["size"]))
        model.load_state_dict(state["model"])
        return model.eval()

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, target = batch
        return (net(x) - target).pow(2).sum(1).mean()

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        inputs = eval_inputs(val.crops, self.config.size)
        points = embed(model, inputs)
        loss = float(((points - val.targets.double().numpy()) ** 2).sum(1).mean())
        ranks = ranks_of(distances_to(points, self.space().coords), val.rows)
        summary = RankSummary.of(ranks)
        return {"val_loss": loss, "median_rank": summary.median_rank, "top1": summary.top1, "top5": summary.top5}

    def checkpoint_extras(self) -> dict[str, Any]:
        s = self.space()
        return {
            "shape_space": {
                "category": s.category,
                "model_ids": list(s.model_ids),
                "splits": list(s.splits),
                "coords": torch.from_numpy(np.asarray(s.coords, np.float32)),
                "meta": s.meta,
                "path": str(shape_space_path(self.config.shape_space)),
            }
        }

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shapes": len(self.space())}
