"""a CNN regressing an object crop into a shape-embedding run's shape space (joint retrieval, Li, Su et al.)

``--data``: a render set (``kpengine render-views``) with views of the category's train shapes on real
photo backgrounds; ``--category``: the category. ``--config``: ``shape_space`` (required: a
shape-embedding run directory or its ``shape_space.npz``), ``val_data`` (a render set of val-split
shapes: the validation measures are the paper's image->shape median rank and top-1/top-5 over the
whole shape space; "best" is the lowest mean rank), ``size``, ``widths``, ``crop_size``,
``margins``, ``shift_jitter``, ``flip`` (mirror half the crops), ``rank_weight`` and ``temperature``
(the distance-softmax term of :func:`~kpengine.image.retrieval.embedding.embedding_loss` over the
training shapes; 0: the paper's plain L2). Views of test-split shapes are refused: they stay unseen
for the benchmark.
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
    embedding_loss,
    eval_inputs,
    ranks_of,
    standardisation,
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
    flip: bool = False
    rank_weight: float = 0.0
    temperature: float = 0.1
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
        self._points: tuple[torch.Tensor, float] | None = None

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

    def gallery(self) -> tuple[np.ndarray, torch.Tensor]:
        """The training shapes' rows of the space (G,), sorted, and each view's position among them (N,)."""
        train, _ = self.sets()
        rows = np.unique(train.rows)
        return rows, torch.from_numpy(np.searchsorted(rows, train.rows)).long()

    def data(self) -> Data:
        train, _ = self.sets()
        _, positions = self.gallery()
        c = self.config
        margins = (float(c.margins[0]), float(c.margins[1]))
        return Data(
            Indices(len(train)),
            None,
            lambda idx: training_batch(train.crops, positions, idx, c.size, margins, c.shift_jitter, c.flip),
        )

    def model(self) -> nn.Module:
        centre, scale = standardisation(self.space().coords)
        return ImageEmbeddingNet(self._dim(), tuple(self.config.widths), self.config.size, centre, scale)

    def _dim(self) -> int:
        return int(self.space().coords.shape[1])

    @classmethod
    def load_model(cls, state: dict[str, Any]) -> nn.Module:
        cfg = state["config"]
        dim = int(state["shape_space"]["coords"].shape[1])
        model = ImageEmbeddingNet(dim, tuple(cfg["widths"]), int(cfg["size"]))
        weights = dict(state["model"])
        # runs from before the standardisation have neither buffer: their head's output is the point itself
        weights.setdefault("centre", torch.zeros(dim))
        weights.setdefault("scale", torch.tensor(1.0))
        model.load_state_dict(weights)
        return model.eval()

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, positions = batch
        c = self.config
        if self._points is None:
            rows, _ = self.gallery()
            coords = np.asarray(self.space().coords, np.float64)
            spread2 = float(((coords - coords.mean(0)) ** 2).sum(1).mean())
            self._points = (torch.from_numpy(coords[rows]).float(), spread2)
        points, spread2 = self._points
        points = points.to(x.device)
        return embedding_loss(
            net(x), positions, points, spread2=spread2, rank_weight=c.rank_weight, temperature=c.temperature
        )

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        inputs = eval_inputs(val.crops, self.config.size)
        points = embed(model, inputs)
        coords = np.asarray(self.space().coords, np.float64)
        spread2 = float(((coords - coords.mean(0)) ** 2).sum(1).mean())
        l2 = float(((points - val.targets.double().numpy()) ** 2).sum(1).mean()) / spread2
        ranks = ranks_of(distances_to(points, coords), val.rows)
        summary = RankSummary.of(ranks)
        # what "best" minimises is retrieval itself: the mean rank as a fraction of the space (0: always
        # first, 0.5: chance); the L2 in the training loss's units (1 = predicting the centre) goes beside it
        loss = float(np.mean((ranks - 1) / max(len(coords) - 1, 1)))
        return {"val_loss": loss, "val_l2": l2, "median_rank": summary.median_rank, "top1": summary.top1,
                "top5": summary.top5}  # fmt: skip

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
