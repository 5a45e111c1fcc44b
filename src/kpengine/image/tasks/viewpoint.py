"""azimuth (24 bins) and elevation (12 bins) of an object crop, soft labels (paper §4.3); EPFL cars or renders

``--data``: a render set (``kpengine render-views``; the views of ``--category``), the older
``kpengine render-benchmark`` layout, or the EPFL cars folder
(sequences 1-10 train, 11-20 validate). Settings without a flag go in ``--config``: ``size``
(network input, px), ``widths`` (ResNet stage widths), ``val_data``, ``zoom_jitter``,
``shift_jitter``, ``flip``, ``swap``, ``grey``, ``erase``, ``crop_size``, ``half_weight`` (a front/back
head, 0 = none), ``dropout``, ``label_smoothing``, and the EPFL cars' instance-cue settings
``blank_outside_box``, ``mix`` (probability of same-view mixing with another car), ``mix_mode``
(``cutmix`` or ``blend``), ``mix_fraction``, ``mix_tolerance`` (:mod:`kpengine.image.instance_cues`);
left unset (None), those two follow ``EPFL_RECIPE`` on EPFL cars and are off elsewhere. ``init``: a
viewpoint run whose whole network this run starts from (:func:`start_weights`), to train on past where a
run stopped with a fresh schedule (the ninth session's bathtub run stopped at epoch 75 of 150, still
improving, and kept no optimizer state to resume from).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from kpengine.errors import DataError
from kpengine.image.crops import colour_jitter, normalise, resample
from kpengine.image.datasets import (
    CROP_MARGIN,
    VIEW_MARGIN,
    Indices,
    ViewSet,
    predict_viewpoints,
    viewpoint_batch,
    viewpoint_inputs,
)
from kpengine.image.instance_cues import blank_outside_box, blend, cutmix, instance_ids, same_view_partners
from kpengine.image.renders import is_epfl, view_sets
from kpengine.image.tasks._common import ImageConfig, ImageTask
from kpengine.image.viewpoint import ViewpointNet, viewpoint_loss, viewpoint_metrics
from kpengine.learn.checkpoint import best_checkpoint, load_checkpoint
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, module_device, to_cpu


@dataclass(kw_only=True)
class ViewpointConfig(ImageConfig):
    flip: bool = True
    #: probabilities of a colour-channel permutation, a grey image, a blanked rectangle per training crop
    swap: float = 0.0
    grey: float = 0.0
    erase: float = 0.0
    #: side of the stored crops (px); the network input ``size`` is re-sampled from them
    crop_size: int = 96
    epochs: int = 60
    #: weight of the front/back half head's loss; 0 = no half head (the paper's network)
    half_weight: float = 0.0
    dropout: float = 0.3
    label_smoothing: float = 0.0
    #: grey outside the object's box (EPFL cars: the protocol's box), train and validation alike
    blank_outside_box: bool | None = None
    #: probability that a training crop is mixed with another instance's crop of the same view
    mix: float | None = None
    mix_mode: str = "cutmix"
    #: cutmix: largest pasted share of the area (drawn from [0.1, mix_fraction]); blend: largest
    #: weight of the partner (drawn from [0, mix_fraction])
    mix_fraction: float = 0.5
    mix_tolerance: float = 7.5
    #: a viewpoint run (its best.pt, else last.pt) whose weights this run starts from; "" = random
    init: str = ""

    #: ``init`` is read only when a run starts: a resumed run loads its own checkpoint over it, so a
    #: resume must not need the start run to still exist
    RUNTIME: ClassVar[tuple[str, ...]] = (*ImageConfig.RUNTIME, "init")


def start_weights(cfg: ViewpointConfig) -> dict[str, torch.Tensor]:
    """The whole network of the viewpoint run ``cfg.init``, for a run of ``cfg`` to go on training
    from. DataError naming the checkpoint when it is another task's or category's, or a network of
    another shape (input size, stage widths, half head): its weights would not load, or would load
    into a network that reads the crop differently."""
    path = best_checkpoint(cfg.init)
    state = load_checkpoint(path, task="viewpoint", category=cfg.category)
    saved = state["config"]
    mine = {"size": cfg.size, "widths": list(cfg.widths), "half head": cfg.half_weight > 0}
    theirs = {
        "size": saved.get("size"),
        "widths": list(saved.get("widths") or []),
        "half head": float(saved.get("half_weight") or 0.0) > 0,
    }
    for name, value in mine.items():
        if theirs[name] != value:
            raise DataError(f"run to start from has {name} {theirs[name]}, this run {value}", path=path)
    return state["model"]


#: what EPFL cars train with when ``blank_outside_box`` / ``mix`` are left unset (docs/benchmarks.md)
EPFL_RECIPE = {"blank_outside_box": True, "mix": 0.0}


@TASKS.register("viewpoint")
class ViewpointTask(ImageTask):
    config_class = ViewpointConfig

    def __init__(self, config: ViewpointConfig):
        super().__init__(config)
        if config.blank_outside_box is None and config.data:
            # stored resolved, so inference knows it even where the training data path does not exist
            config.blank_outside_box = bool(self.setting("blank_outside_box"))

    def setting(self, name: str) -> Any:
        """A config value, with ``EPFL_RECIPE`` (EPFL cars) or off (other data) standing in for None."""
        value = getattr(self.config, name)
        if value is None:
            return EPFL_RECIPE[name] if is_epfl(self.config.data) else type(EPFL_RECIPE[name])()
        return value

    def load_sets(self) -> tuple[ViewSet, ViewSet | None]:
        c = self.config
        train, val = view_sets(c.data, c.val_data or None, c.crop_size, c.category)
        if self.setting("blank_outside_box"):
            if not is_epfl(c.data):
                raise DataError("blank_outside_box needs the EPFL cars folder (its boxes are the protocol's input)")
            from kpengine.io.epfl_cars import TEST_SEQUENCES, TRAIN_SEQUENCES, load_epfl_cars

            for views, seqs in ((train, TRAIN_SEQUENCES), (val, TEST_SEQUENCES)):
                blank_outside_box(views.crops, [f.bbox for f in load_epfl_cars(c.data, seqs)], CROP_MARGIN)
        return train, val

    def data(self) -> Data:
        train, _ = self.sets()
        c = self.config
        mix = float(self.setting("mix"))
        if mix > 0 and c.mix_mode not in ("cutmix", "blend"):
            raise DataError(f"mix_mode must be 'cutmix' or 'blend', not {c.mix_mode!r}")
        instances = instance_ids(train.names) if mix > 0 else None

        def batch(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x, az, el = viewpoint_batch(
                train, idx, c.size, c.zoom_jitter, c.shift_jitter, c.flip, c.swap, c.grey, c.erase
            )
            if mix > 0:
                x = self.mix_same_view(train, instances, idx, x, az, mix)
            return x, az, el

        return Data(Indices(len(train)), None, batch)

    def mix_same_view(
        self, train: ViewSet, instances: np.ndarray, idx: list[int], x: torch.Tensor, az: torch.Tensor, p: float
    ) -> torch.Tensor:
        """Network inputs x (B, 3, S, S) of items ``idx`` at azimuths az (B,) (after mirroring) ->
        x with a share ``p`` of them mixed with a crop of another instance at the same view."""
        c = self.config
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (), generator=gen)))
        chosen = np.flatnonzero(torch.rand(len(idx), generator=gen).numpy() < p)
        j, mirror = same_view_partners(
            az.numpy()[chosen], instances[np.asarray(idx)[chosen]], train.azimuth.numpy(), instances,
            c.mix_tolerance, rng,
        )  # fmt: skip
        chosen, j, mirror = chosen[j >= 0], j[j >= 0], mirror[j >= 0]
        if len(chosen) == 0:
            return x
        n = len(chosen)
        zoom = VIEW_MARGIN / CROP_MARGIN * (1 + c.zoom_jitter * (2 * torch.rand(n, generator=gen) - 1))
        shift = c.shift_jitter * (2 * torch.rand(n, 2, generator=gen) - 1)
        y = normalise(colour_jitter(resample(train.crops[j], c.size, zoom, shift, torch.from_numpy(mirror)), gen))
        amount = torch.rand(n, generator=gen)
        rows = torch.from_numpy(chosen)
        x = x.clone()
        if c.mix_mode == "cutmix":
            x[rows] = cutmix(x[rows], y, 0.1 + amount * (c.mix_fraction - 0.1), gen)
        else:
            x[rows] = blend(x[rows], y, 1.0 - amount * c.mix_fraction)
        return x

    def model(self) -> nn.Module:
        c = self.config
        net = ViewpointNet(c.size, tuple(c.widths), dropout=c.dropout, half_head=c.half_weight > 0)
        # inference (kpengine viewpoint, understand) must grey outside the object's box as training did
        net.blank_outside_box = bool(self.setting("blank_outside_box"))
        if c.init:
            net.load_state_dict(start_weights(c))
        return net

    @classmethod
    def load_model(cls, state: dict[str, Any]) -> nn.Module:
        """The network of a checkpoint; its own weights replace ``init``'s, so the run it started from is
        not read (it may be gone)."""
        return super().load_model({**state, "config": {**state["config"], "init": ""}})

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        x, az, el = batch
        return viewpoint_loss(net(x), az, el, self.config.half_weight, self.config.label_smoothing)

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        total, c, dev = 0.0, self.config, module_device(model)
        for i in range(0, len(val), 256):
            logits = to_cpu(model(viewpoint_inputs(val.crops[i : i + 256], self.config.size).to(dev)))
            n = min(256, len(val) - i)
            az, el = val.azimuth[i : i + 256], val.elevation[i : i + 256]
            total += float(viewpoint_loss(logits, az, el, c.half_weight)) * n
        p = predict_viewpoints(model, val.crops, flip_average=False)
        known = bool(torch.isfinite(val.elevation).all())
        met = viewpoint_metrics(
            p["azimuth"],
            val.azimuth.numpy(),
            p["elevation"] if known else None,
            val.elevation.numpy() if known else None,
        )
        met.pop("n")
        return {"val_loss": total / max(len(val), 1), **met, "median_confidence": float(np.median(p["confidence"]))}
