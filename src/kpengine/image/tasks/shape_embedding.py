"""the shape space of joint shape-image retrieval: light-field HoG distances mapped by Sammon MDS to 128-d

``--data``: a KeypointNet-layout root; ``--category``: its shapes (every split: the collection the
photos are retrieved from). Each shape's cloud is drawn from 12 azimuths x 2 elevations, a HoG per
view, distances summed over corresponding views, divided by their mean; the "network" is the (N, 128)
configuration, started by classical MDS and moved by Adam on Sammon's stress (one full-batch step per
item, ``steps_per_epoch`` per epoch). The run directory also gets ``shape_space.npz``
(:mod:`kpengine.io.shapespace`). Settings in ``--config``: ``dim``, ``azimuths``, ``elevations``,
``view_size``, ``distance`` (sum | rotation), ``steps_per_epoch``, ``cache`` (a file keeping the
descriptors between runs).
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
from kpengine.image.retrieval.lightfield import LightFieldSpec, lfd_distances, light_field
from kpengine.image.retrieval.sammon import floored, sammon_stress, sammon_stress_torch, start_coords
from kpengine.io.shapespace import ShapeSpace, load_shape_space, save_shape_space
from kpengine.learn.config import RunConfig
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, Task

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ShapeEmbeddingConfig(RunConfig):
    data: str
    category: str
    dim: int = 128
    azimuths: int = 12
    elevations: list[float] = field(default_factory=lambda: [10.0, 35.0])
    view_size: int = 64
    distance: str = "sum"
    steps_per_epoch: int = 100
    cache: str = ""
    epochs: int = 6
    batch_size: int = 1
    lr: float = 0.02
    lr_schedule: str = "cosine"

    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device", "data", "cache")
    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "category", "dim")

    def spec(self) -> LightFieldSpec:
        return LightFieldSpec(azimuths=self.azimuths, elevations=tuple(self.elevations), size=self.view_size)


class SammonEmbedding(nn.Module):
    """The configuration (N, dim) as a parameter; ``forward(target (N, N))`` is its Sammon stress."""

    def __init__(self, coords: np.ndarray | torch.Tensor):
        super().__init__()
        self.coords = nn.Parameter(torch.as_tensor(np.asarray(coords), dtype=torch.float64).clone())

    def forward(self, target: torch.Tensor) -> torch.Tensor:
        return sammon_stress_torch(self.coords, target)


def collection(root: str | Path, category: str) -> tuple[list, list[str]]:
    """Every annotated shape of ``category`` with a cloud, and its official split."""
    from kpengine.data.dataset import KeypointNetDataset

    shapes, splits = [], []
    for split in ("train", "val", "test"):
        for s in KeypointNetDataset(root, category, split):
            if s.points is not None and len(s.points):
                shapes.append(s)
                splits.append(split)
    if len(shapes) < 3:
        raise DataError(f"category {category!r} has {len(shapes)} shapes with clouds; a shape space needs 3", path=root)
    return shapes, splits


def descriptors(config: ShapeEmbeddingConfig) -> ShapeSpace:
    """The category's light field and distances: from ``config.cache`` when it holds the same shapes and
    settings, else rendered (and cached there)."""
    from kpengine.categories import resolve_category

    category = resolve_category(config.category).name
    spec = config.spec()
    if config.cache and Path(config.cache).is_file():
        cached = load_shape_space(config.cache, need=("hog", "distances"))
        if cached.meta.get("spec") == spec.to_json() and cached.meta.get("distance") == config.distance:
            if cached.category == category:
                log.info("light field of %d %s shapes from %s", len(cached), category, config.cache)
                return cached
        log.warning("%s holds other light-field settings; rendering again", config.cache)
    shapes, splits = collection(config.data, category)

    def progress(k: int, n: int) -> None:
        if k % 50 == 0 or k == n:
            log.info("light field: %d/%d shapes", k, n)

    lf = light_field(shapes, spec, progress)
    d = lfd_distances(lf.hog, mode=config.distance, azimuths=spec.azimuths)
    iu = np.triu_indices(len(d), 1)
    scale = float(d[iu].mean())
    space = ShapeSpace(
        category,
        lf.model_ids,
        splits,
        hog=lf.hog,
        distances=d / scale,
        meta={"spec": spec.to_json(), "distance": config.distance, "distance_scale": scale},
    )
    if config.cache:
        save_shape_space(config.cache, space)
    return space


def nearest_agreement(coords: np.ndarray, distances: np.ndarray) -> float:
    """Fraction of shapes whose nearest neighbour in the embedding is their nearest by ``distances``."""
    from scipy.spatial.distance import cdist

    y = np.asarray(coords, np.float64)
    e = cdist(y, y)
    d = np.array(distances, np.float64)
    np.fill_diagonal(e, np.inf)
    np.fill_diagonal(d, np.inf)
    return float((e.argmin(1) == d.argmin(1)).mean())


@TASKS.register("shape_embedding")
class ShapeEmbeddingTask(Task):
    config_class = ShapeEmbeddingConfig

    def __init__(self, config: ShapeEmbeddingConfig):
        super().__init__(config)
        if config.distance not in ("sum", "rotation"):
            raise DataError(f"distance {config.distance!r}; choose sum or rotation")
        self._space: ShapeSpace | None = None

    def space(self) -> ShapeSpace:
        if self._space is None:
            self._space = descriptors(self.config)
            self._target = floored(self._space.distances)
        return self._space

    def data(self) -> Data:
        self.space()
        return Data(Indices(self.config.steps_per_epoch), None, lambda idx: torch.as_tensor(idx))

    def model(self) -> nn.Module:
        return SammonEmbedding(start_coords(self.space().distances, self.config.dim, self.config.seed))

    @classmethod
    def load_model(cls, state: dict[str, Any]) -> nn.Module:
        model = SammonEmbedding(torch.zeros_like(state["model"]["coords"]))
        model.load_state_dict(state["model"])
        return model.eval()

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        return net(self._target)

    def size(self, batch: Any) -> int:
        return 1

    def validate(self, model: nn.Module) -> dict[str, float]:
        d = self.space().distances
        stress, _ = sammon_stress(model.coords.detach().numpy(), d)
        return {"val_loss": stress, "nearest_agreement": nearest_agreement(model.coords.detach().numpy(), d)}

    def checkpoint_extras(self) -> dict[str, Any]:
        s = self.space()
        return {"model_ids": s.model_ids, "splits": s.splits, "category": s.category}

    def describe(self) -> dict[str, Any]:
        return {"category": self.space().category, "shapes": len(self.space()), "dim": self.config.dim}

    def finish(self, model: nn.Module, out: Path) -> None:
        """Write ``shape_space.npz``: descriptors, distances and the trained configuration."""
        s = self.space()
        coords = model.coords.detach().numpy().astype(np.float32)
        stress, _ = sammon_stress(coords, s.distances)
        space = ShapeSpace(s.category, s.model_ids, s.splits, s.hog, s.distances, coords, {**s.meta, "stress": stress})
        save_shape_space(out / "shape_space.npz", space)

    def title(self) -> str:
        return f"shape-embedding ({self.config.category}, Sammon stress)"
