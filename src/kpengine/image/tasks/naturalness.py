"""naturalness critic of voxel shapes (ShapeHD's 3D WGAN-GP): real shapes' grids vs a voxels run's outputs

Trains the critic only (the voxels task adds its negated score to its loss with ``naturalness_run``
and ``naturalness_weight``). Real: the ground-truth grids of the shapes of ``--data``'s training
views (``shapes`` root); fake: the occupancy probabilities the trained ``voxels_run`` predicts from
those views' ground-truth sketches, computed once. Loss: critic(fake) - critic(real) + 10 x gradient
penalty. Settings in ``--config``: ``shapes``, ``voxels_run`` (required), ``val_data``, ``channels``,
``gp_weight``, ``views_per_shape``. Validation: the critic's gap between real and fake grids of the
validation set (``val_loss`` is its negation without the penalty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from kpengine.image.datasets import Indices
from kpengine.image.reconstruct.nets import NaturalnessNet, gradient_penalty
from kpengine.image.tasks.sketch import categories_of
from kpengine.image.tasks.voxels import VoxelData, voxel_data
from kpengine.learn.config import RunConfig
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, Task, module_device


@dataclass(kw_only=True)
class NaturalnessConfig(RunConfig):
    data: str
    category: str
    shapes: str = ""
    voxels_run: str = ""
    val_data: str = ""
    resolution: int = 32
    channels: int = 16
    gp_weight: float = 10.0
    views_per_shape: int = 0
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4

    RUNTIME: ClassVar[tuple[str, ...]] = ("epochs", "threads", "workers", "device", "data", "val_data", "shapes")
    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "category", "resolution", "channels")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.shapes or not self.voxels_run:
            raise ValueError('naturalness needs --config \'{"shapes": ROOT, "voxels_run": RUN_DIR}\'')


def _fakes(run: str, data: VoxelData, resolution: int) -> torch.Tensor:
    from kpengine.image.reconstruct.photo import load_network

    net = load_network(run, "voxels", resolution=resolution)
    with torch.no_grad():
        x = data.sketches.sketches(torch.arange(len(data)))
        c = data.category_index
        return torch.cat([torch.sigmoid(net(x[i : i + 64], c[i : i + 64])) for i in range(0, len(x), 64)])


@TASKS.register("naturalness")
class NaturalnessTask(Task):
    config_class = NaturalnessConfig

    def __init__(self, config: NaturalnessConfig):
        super().__init__(config)
        self._sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """split -> (real grids (N, R, R, R), fake grids (N, R, R, R)), one pair per view."""
        if self._sets is None:
            c = self.config
            cats = categories_of(c.category)
            self._sets = {}
            for split, root, vps in (("train", c.data, c.views_per_shape or None), ("val", c.val_data, None)):
                if not root:
                    continue
                # the voxels run was trained at its own sketch size: read it from its config
                from pathlib import Path

                from kpengine.learn.checkpoint import load_checkpoint

                size = load_checkpoint(Path(c.voxels_run) / "last.pt")["config"]["size"]
                d = voxel_data(root, c.shapes, size, cats, c.resolution, vps)
                self._sets[split] = (d.grids[d.shape_of], _fakes(c.voxels_run, d, c.resolution))
        return self._sets

    def data(self) -> Data:
        real, fake = self.sets()["train"]
        return Data(Indices(len(real)), None, lambda idx: (real[torch.tensor(idx)], fake[torch.tensor(idx)]))

    def model(self) -> nn.Module:
        return NaturalnessNet(self.config.resolution, self.config.channels)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.config.lr, betas=(0.5, 0.9))  # WGAN-GP's settings

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        real, fake = batch
        gap = net(real).mean() - net(fake).mean()
        with torch.enable_grad():
            gp = gradient_penalty(net, real, fake) if net.training else torch.zeros(())
        return -gap + self.config.gp_weight * gp

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        if "val" not in self.sets():
            return None
        real, fake = self.sets()["val"]
        dev = module_device(model)
        r = torch.cat([model(real[i : i + 64].to(dev)).cpu() for i in range(0, len(real), 64)])
        f = torch.cat([model(fake[i : i + 64].to(dev)).cpu() for i in range(0, len(fake), 64)])
        gap = float(r.mean() - f.mean())
        acc = float(((r > f.median()).float().mean() + (f < r.median()).float().mean()) / 2)
        return {"val_loss": -gap, "gap": gap, "separation": acc}

    def describe(self) -> dict[str, Any]:
        s = self.sets()
        return {
            "category": self.config.category,
            "train_pairs": len(s["train"][0]),
            "resolution": self.config.resolution,
        }

    def title(self) -> str:
        return f"naturalness critic ({self.config.category})"
