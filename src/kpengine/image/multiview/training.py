"""What the two MvDeCor tasks share: their config, the shapes they read, view pairs and batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.image.multiview.correspond import MATCH_DISTANCE, sample_matches
from kpengine.image.multiview.unet import INPUTS, UNet, view_inputs
from kpengine.image.multiview.views import ViewCache, build_view_cache
from kpengine.learn.config import RunConfig
from kpengine.learn.losses import info_nce


@dataclass(kw_only=True)
class MultiviewConfig(RunConfig):
    """``data``: KeypointNet root; ``views``: the view cache directory (rendered on first use);
    ``inputs``: rgb | rgbnd | geometry; ``widths``/``embedding_dim``: the U-Net."""

    data: str
    category: str
    views: str
    inputs: str = "rgbnd"
    size: int = 96
    n_views: int = 12
    widths: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    embedding_dim: int = 32
    #: pretraining: matched pixels per view pair, InfoNCE temperature, match distance (model units)
    pixels: int = 256
    temperature: float = 0.07
    match_distance: float = MATCH_DISTANCE
    #: splits pretrained on (never the test split)
    pretrain_splits: list[str] = field(default_factory=lambda: ["train", "val"])
    batch_size: int = 8
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    epochs: int = 20

    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device", "data", "views")
    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "category", "inputs", "size", "n_views", "widths", "embedding_dim")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inputs not in INPUTS:
            raise ValueError(f"unknown inputs {self.inputs!r}; choose one of {', '.join(INPUTS)}")
        if "test" in self.pretrain_splits:
            raise ValueError("pretraining on the test split would leak its shapes into the benchmark")
        from kpengine.categories import resolve_category

        self.category = resolve_category(self.category).name


def load_shapes(cfg: MultiviewConfig, split: str, model_ids: list[str] | None = None) -> KeypointNetDataset:
    ds = KeypointNetDataset(cfg.data, cfg.category, split, model_ids=model_ids)
    if len(ds) == 0:
        raise DataError(f"{cfg.category}/{split} has no usable shapes under {cfg.data}: {ds.problem_summary()}")
    return ds


def open_views(cfg: MultiviewConfig, shapes: list[Shape]) -> tuple[ViewCache, list[Shape]]:
    """The view cache with every shape rendered (missing ones rendered now); shapes whose views
    failed (empty renders) are dropped with a warning in the result, the rest go on."""
    report = build_view_cache(cfg.views, shapes, cfg.category, size=cfg.size, n_views=cfg.n_views)
    cache = ViewCache(cfg.views, cfg.category)
    kept = [s for s in shapes if s.model_id not in report["failed"]]
    if not kept:
        raise DataError(f"no shape could be rendered: {report['failed']}", path=cfg.views)
    return cache, kept


def new_unet(cfg: MultiviewConfig) -> UNet:
    return UNet(INPUTS[cfg.inputs], tuple(cfg.widths), cfg.embedding_dim)


class EpochIndices(torch.utils.data.Dataset):
    """0..n-1 with an ``epoch`` the run sets (the batches draw from (seed, epoch, item))."""

    def __init__(self, n: int):
        self.n, self.epoch = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def pair_batch(
    cfg: MultiviewConfig, cache: ViewCache, shapes: list[Shape], idx: list[int], epoch: int
) -> dict[str, Any]:
    """Two views of each shape in ``idx`` and their matched pixels: x (2B, C, H, W) (views a of
    every shape, then views b), pixels a list of B ((M,), (M,)) flat index pairs."""
    xs_a, xs_b, pairs = [], [], []
    for i in idx:
        views = cache.get(shapes[i].model_id)
        rng = np.random.default_rng((cfg.seed, epoch, i))
        best = None
        for _ in range(4):  # a pair that shares little surface: draw again
            a, b = rng.choice(views.n_views, size=2, replace=False)
            pa, pb = sample_matches(views, int(a), int(b), cfg.pixels, rng, cfg.match_distance)
            if best is None or len(pa) > len(best[2]):
                best = (a, b, pa, pb)
            if len(pa) >= cfg.pixels // 2:
                break
        a, b, pa, pb = best
        x = view_inputs(views, cfg.inputs, [a, b])
        xs_a.append(x[0])
        xs_b.append(x[1])
        pairs.append((torch.from_numpy(pa), torch.from_numpy(pb)))
    x = torch.from_numpy(np.stack(xs_a + xs_b))
    return {"x": x, "pairs": pairs, "model_id": [shapes[i].model_id for i in idx]}


def pair_loss(net: torch.nn.Module, batch: dict[str, Any], temperature: float) -> torch.Tensor:
    """Mean over shapes of the dense InfoNCE between the matched pixels of their two views."""
    emb = net(batch["x"])
    b = len(batch["pairs"])
    flat = emb.flatten(2)  # (2B, D, HW)
    losses = [
        info_nce(flat[k][:, pa].T, flat[b + k][:, pb].T, temperature)
        for k, (pa, pb) in enumerate(batch["pairs"])
        if len(pa) > 1
    ]
    if not losses:
        return emb.sum() * 0.0
    return torch.stack(losses).mean()
