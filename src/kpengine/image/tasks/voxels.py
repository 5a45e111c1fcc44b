"""voxels in the canonical frame from 2.5D sketches (paper §4.2, MarrNet/ShapeHD); 32³ default, 64³/128³ by option

``--data``: a render set (its mask, depth and normal maps are the input: the 3D estimator is trained on
ground-truth sketches, as MarrNet does, perturbed like predicted ones); ground-truth voxels come from the
shapes under ``shapes`` (KeypointNet layout: meshes filled, official clouds closed and filled; see
``kpengine.geometry.voxelize``). Settings without a flag go in ``--config``: ``shapes`` (required),
``resolution`` (32, 64, 128), ``size``, ``widths``, ``val_data``, ``views_per_shape``, ``pos_weight``,
``init_run`` (start from a voxels run's weights), ``view_weight`` (the viewpoint head's loss), ``perturb``
(sketch-fault strength of the training inputs, 0 = clean ground truth), ``silhouette_runs`` (``{category:
silhouette run}``: the silhouette networks' masks replace the input silhouettes, training and validation),
``naturalness_run`` and ``naturalness_weight`` (a trained naturalness critic whose negated score is added to
the loss, ShapeHD), ``sketch_run`` (inputs predicted by that sketch run, training and validation: MarrNet's
fine-tuning of the 3D estimator), ``basis`` (k > 0: predict k coefficients of each category's PCA basis of
training grids instead of decoding voxels, ``reconstruct.shape_space``), ``mirror`` (train on left-right
mirrored views half of the time, the grid mirrored with them), ``retrieval`` (the residual starts from a
learnt blend of the training grids instead of the mean grid; ``retrieval_tau``, ``retrieval_weight``: its
soft targets and their loss weight), ``iou_weight`` (a soft-IoU loss beside the BCE), ``backproject`` (the
fifth pass's 3D estimator: the visible depth back-projected into the canonical grid at the view's viewpoint
and completed by a 3D U-Net, ``reconstruct.backproject``; ``completion_width``, ``view_noise``: the training
viewpoint's azimuth, elevation and roll noise in degrees and its half-turn probability, and ``observation``:
"depth", or "cone" for the silhouette's cone alone, the depth-free variant of the sixth pass, or
"cone_noray", the cone without its ray channel: its ablation). The network predicts the residual from each
category's mean training grid, or from the retrieved blend (see ``image.reconstruct.nets.VoxelNet``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from kpengine.image.datasets import Indices
from kpengine.image.reconstruct.backproject import OBSERVATIONS, observe, viewpoint_noise
from kpengine.image.reconstruct.data import (
    SketchSet,
    category_voxels,
    load_sketch_set,
    perturb_sketches,
    silhouette_net_masks,
)
from kpengine.image.reconstruct.nets import (
    CompletionNet,
    VoxelNet,
    basis_loss,
    retrieval_loss,
    retrieval_targets,
    soft_iou_loss,
    voxel_loss,
)
from kpengine.image.reconstruct.shape_space import mirror_azimuth, mirror_grids, mirror_sketches, pca_basis
from kpengine.image.tasks._common import ImageConfig, ImageTask
from kpengine.image.tasks.sketch import categories_of
from kpengine.image.viewpoint import angle_difference, decode, viewpoint_loss
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import Data, module_device, to_cpu
from kpengine.metrics.shape3d import voxel_iou


@dataclass(kw_only=True)
class VoxelConfig(ImageConfig):
    shapes: str = ""
    resolution: int = 32
    views_per_shape: int = 0
    pos_weight: float = 2.0
    view_weight: float = 0.1
    perturb: float = 1.0
    naturalness_run: str = ""
    naturalness_weight: float = 0.0
    #: start from this voxels run's weights (fine-tuning, e.g. with the naturalness loss)
    init_run: str = ""
    #: train on this sketch run's predictions instead of the true sketches (MarrNet's fine-tuning)
    sketch_run: str = ""
    #: the silhouette networks' masks as the input silhouettes, training and validation ({category: silhouette
    #: run}; after ``sketch_run``, whose depth and normals are then cut to them): what the benchmark's best route
    #: reads (docs/reconstruction.md, seventh pass)
    silhouette_runs: dict[str, str] = field(default_factory=dict)
    #: skip each shape's first N views (e.g. those the sketch run was trained on)
    skip_views: int = 0
    #: predict this many PCA coefficients of the category's training grids (0: decode voxels)
    basis: int = 0
    #: mirror half of each training batch left-right (views and grids together; shape_space)
    mirror: bool = False
    #: start the residual from a learnt blend of the training grids (VoxelNet ``retrieval``)
    retrieval: bool = False
    #: temperature of the soft retrieval targets (IoU with the other training grids / tau)
    retrieval_tau: float = 0.05
    #: weight of the retrieval head's cross-entropy against those targets
    retrieval_weight: float = 0.1
    #: weight of a soft-IoU loss (1 − soft IoU) added to the BCE (decoder networks)
    iou_weight: float = 0.0
    #: back-project the visible depth into the canonical grid and complete it (``CompletionNet``)
    backproject: bool = False
    #: channels of the completion U-Net's first stage
    completion_width: int = 8
    #: training viewpoint noise: azimuth, elevation, roll standard deviations (degrees), half-turn probability
    view_noise: list[float] = field(default_factory=lambda: [10.0, 5.0, 3.0, 0.0])
    #: what the back-projection places: "depth" (the visible surface), "cone" (the silhouette's cone only) or
    #: "cone_noray" (the cone without its ray channel)
    observation: str = "depth"
    epochs: int = 20
    batch_size: int = 32

    RUNTIME: ClassVar[tuple[str, ...]] = (*ImageConfig.RUNTIME, "shapes")
    IDENTITY: ClassVar[tuple[str, ...]] = (*ImageConfig.IDENTITY, "resolution", "basis", "retrieval", "backproject",
                                         "observation")  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.shapes:
            raise ValueError("voxels needs the shapes' root for ground truth: --config '{\"shapes\": ROOT}'")
        if self.resolution not in (32, 64, 128):
            raise ValueError(f"resolution must be 32, 64 or 128, got {self.resolution}")
        if self.basis < 0:
            raise ValueError(f"basis must be 0 (voxel decoder) or a number of PCA components, got {self.basis}")
        if self.retrieval and (self.basis or self.mirror):
            raise ValueError("retrieval takes neither basis nor mirror (a mirrored shape is not in the bank)")
        if self.backproject and (self.basis or self.retrieval):
            raise ValueError("backproject takes neither basis nor retrieval (its prior is the category mean)")
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {', '.join(OBSERVATIONS)}, got {self.observation!r}")
        if self.observation != "depth" and not self.backproject:
            raise ValueError(f'observation "{self.observation}" is an input of the back-projecting estimator: '
                             'add "backproject": true')  # fmt: skip
        if len(self.view_noise) != 4 or min(self.view_noise) < 0 or self.view_noise[3] > 1:
            raise ValueError(
                f"view_noise is [azimuth sd, elevation sd, roll sd, half-turn probability], got {self.view_noise}"
            )
        if self.retrieval_tau <= 0:
            raise ValueError(f"retrieval_tau must be > 0, got {self.retrieval_tau}")


class VoxelData:
    """Sketch views and the ground-truth grid of each view's shape (grids shared by a shape's views);
    ``category_index`` (N,) the position of each view's category in ``categories``."""

    def __init__(self, sketches: SketchSet, grids: dict[tuple[str, str], np.ndarray], categories: list[str]):
        self.sketches = sketches
        keys = sorted(grids)
        self.keys = keys
        self.grids = torch.from_numpy(np.stack([grids[k] for k in keys])).float()
        where = {k: n for n, k in enumerate(keys)}
        self.shape_of = torch.tensor([where[(c, m)] for c, m in zip(sketches.category, sketches.model_id)])
        self.categories = categories
        self.category_index = torch.tensor([categories.index(c) for c in sketches.category])

    def __len__(self) -> int:
        return len(self.sketches)

    def shape_category(self) -> torch.Tensor:
        """(G,) the category index of each grid of ``grids`` (each shape once)."""
        return torch.tensor([self.categories.index(c) for c, _ in self.keys])

    def mean_grids(self) -> torch.Tensor:
        """(K, R, R, R): the mean ground-truth grid of each category's shapes (each shape once)."""
        cats = torch.tensor([self.categories.index(c) for c, _ in self.keys])
        return torch.stack([self.grids[cats == k].mean(0) for k in range(len(self.categories))])

    def bases(self, k: int, mirror: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per category the mean (K, R³) and the top-k PCA basis (K, k, R³) of its shapes' grids (each
        shape once; with ``mirror`` their x-mirrors too, the shapes a mirrored view shows)."""
        cats = torch.tensor([self.categories.index(c) for c, _ in self.keys])
        means, bases = [], []
        for j in range(len(self.categories)):
            g = self.grids[cats == j]
            m, b = pca_basis(torch.cat([g, mirror_grids(g)]) if mirror else g, k)
            means.append(m)
            bases.append(b)
        return torch.stack(means), torch.stack(bases)

    def batch(self, idx) -> tuple[torch.Tensor, ...]:
        """(sketches (B, 5, S, S), grids (B, R, R, R), category (B,), azimuth (B,), elevation (B,),
        shape (B,): the index of each view's grid in ``grids``, theta (B,), cameras (B, 8))."""
        i = torch.as_tensor(idx)
        sk = self.sketches
        s = self.shape_of[i]
        return (sk.sketches(i), self.grids[s], self.category_index[i], sk.azimuth[i], sk.elevation[i], s,
                sk.theta[i], sk.cameras[i])  # fmt: skip


@torch.no_grad()
def use_predicted_sketches(sk: SketchSet, net: nn.Module, batch: int = 64) -> None:
    """Replace a SketchSet's true mask, depth and normals by ``net``'s predictions on its images, in place
    (silhouette binary, depth and normals zero off it: what ``reconstruct_photo`` feeds the voxels run)."""
    from kpengine.image.crops import normalise

    net.eval()
    for s in range(0, len(sk), batch):
        i = torch.arange(s, min(s + batch, len(sk)))
        p = net(normalise(sk.images[i]))
        on = (p["mask"] > 0).float()
        sk.mask[i], sk.depth[i], sk.normals[i] = on, p["depth"] * on, p["normals"] * on[:, None]


def silhouette_nets(runs: dict[str, str], categories: list[str]) -> dict[str, tuple[nn.Module, int]]:
    """``{category: silhouette run}`` -> ``{category: (network in eval mode, its input size)}``; every category
    needs one, and each run must be a silhouette run of its category."""
    from kpengine.image.tasks import image_task
    from kpengine.learn.checkpoint import best_checkpoint, load_checkpoint

    missing = [c for c in categories if c not in runs]
    if missing:
        raise ValueError(f"silhouette_runs has no run for {', '.join(missing)}")
    out = {}
    for cat in categories:
        state = load_checkpoint(best_checkpoint(runs[cat]), task="silhouette", category=cat)
        out[cat] = (image_task("silhouette").load_model(state).eval(), int(state["config"]["size"]))
    return out


def use_silhouette_masks(sk: SketchSet, root: str, nets: dict[str, tuple[nn.Module, int]]) -> None:
    """Replace a SketchSet's silhouettes by the silhouette networks' masks on its views' renders, in place;
    depth and normals are zeroed off the new silhouette (``data.silhouette_net_masks``)."""
    on = silhouette_net_masks(root, sk.ids, sk.category, nets, sk.mask.shape[-1])
    sk.mask, sk.depth, sk.normals = on, sk.depth * on, sk.normals * on[:, None]


def voxel_data(
    root: str,
    shapes: str,
    size: int,
    categories: list[str],
    resolution: int,
    vps=None,
    training: bool = False,
    skip_views: int = 0,
) -> VoxelData:
    sk = load_sketch_set(root, size, categories, vps, training=training, skip_views=skip_views)
    return VoxelData(sk, category_voxels(shapes, set(zip(sk.category, sk.model_id)), resolution), categories)


@TASKS.register("voxels")
class VoxelTask(ImageTask):
    config_class = VoxelConfig

    def __init__(self, config: VoxelConfig):
        super().__init__(config)
        self._critic: nn.Module | None = None
        self._targets: torch.Tensor | None = None  # soft retrieval targets (G, G) among training grids
        self._gen = torch.Generator().manual_seed(config.seed)

    def load_sets(self) -> tuple[VoxelData, VoxelData | None]:
        c = self.config
        cats = categories_of(c.category)
        train = voxel_data(c.data, c.shapes, c.size, cats, c.resolution, c.views_per_shape or None, True, c.skip_views)
        val = voxel_data(c.val_data, c.shapes, c.size, cats, c.resolution) if c.val_data else None
        if c.sketch_run:  # MarrNet's fine-tuning: the inputs are what the sketch network predicts
            from kpengine.image.reconstruct.photo import load_network

            net = load_network(c.sketch_run, "sketch")
            if net.config["size"] != c.size:
                raise ValueError(f"sketch_run {c.sketch_run} predicts {net.config['size']} px sketches, not {c.size}")
            for d in (train, val):
                if d is not None:
                    use_predicted_sketches(d.sketches, net)
        if c.silhouette_runs:
            nets = silhouette_nets(c.silhouette_runs, cats)
            for d, root in ((train, c.data), (val, c.val_data)):
                if d is not None:
                    use_silhouette_masks(d.sketches, root, nets)
        return train, val

    def critic(self) -> nn.Module | None:
        c = self.config
        if self._critic is None and c.naturalness_run and c.naturalness_weight > 0:
            from kpengine.image.reconstruct.photo import load_network

            self._critic = load_network(c.naturalness_run, "naturalness", resolution=c.resolution)
            for p in self._critic.parameters():
                p.requires_grad_(False)
        return self._critic

    def data(self) -> Data:
        train, _ = self.sets()
        return Data(Indices(len(train)), None, train.batch)

    def model(self) -> nn.Module:
        c = self.config
        n_cat = len(categories_of(c.category))
        if c.backproject:
            return self._completion_model(n_cat)
        net = VoxelNet(c.resolution, c.size, tuple(c.widths), n_categories=n_cat, basis=c.basis, retrieval=c.retrieval)
        if self._sets is not None:  # training: the prior is the training shapes' mean (a checkpoint restores it)
            net.set_prior(self._sets[0].mean_grids())
            if c.basis:
                net.set_basis(*self._sets[0].bases(c.basis, c.mirror))
            if c.init_run:
                from kpengine.image.reconstruct.photo import load_network

                start = load_network(c.init_run, "voxels", resolution=c.resolution)
                if start.config["category"] != c.category or start.config["size"] != c.size:
                    raise ValueError(f"init_run {c.init_run} was trained on {start.config['category']} at "
                                     f"{start.config['size']} px, not {c.category} at {c.size} px")  # fmt: skip
                state = start.state_dict()
                if getattr(start, "retrieval", False) and not c.retrieval:
                    raise ValueError(f"init_run {c.init_run} has a retrieval prior: continue it with "
                                     '"retrieval": true')  # fmt: skip
                if c.retrieval and not getattr(start, "retrieval", False):
                    # a mean-prior run: its weights, and a fresh head (at zero: the blend is the mean)
                    missing, unexpected = net.load_state_dict(state, strict=False)
                    if unexpected or any(not k.startswith(("retrieve.", "bank")) for k in missing):
                        raise ValueError(f"init_run {c.init_run} does not fit this network: {missing + unexpected}")
                else:
                    net.load_state_dict(state)
            if c.retrieval and not (c.init_run and net.bank.shape[0]):
                train = self._sets[0]
                net.set_bank(train.grids, train.shape_category())
        return net

    def _completion_model(self, n_cat: int) -> nn.Module:
        c = self.config
        net = CompletionNet(c.resolution, n_cat, c.completion_width, c.observation)
        if self._sets is not None:  # training: the prior is the training shapes' mean (a checkpoint restores it)
            net.set_prior(self._sets[0].mean_grids())
            if c.init_run:
                from kpengine.image.reconstruct.photo import load_network

                start = load_network(c.init_run, "voxels", resolution=c.resolution)
                if not isinstance(start, CompletionNet) or start.config["category"] != c.category:
                    raise ValueError(f"init_run {c.init_run} is not a backproject voxels run of {c.category}")
                # either observation kind: the grids share their five slots (a cone run may start from a
                # depth run's completion, which then learns to do without the depth)
                net.load_state_dict(start.state_dict())
        return net

    def observations(self, batch: Any, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch -> (observation grids (B, 5, R, R, R), targets (B, R, R, R)) for the back-projecting
        estimator: in training the sketches perturbed, the viewpoint noisy (``view_noise``) and, with
        ``mirror``, half of the grids mirrored in x together with their targets (in the canonical frame
        the mirror of a scene is exact)."""
        x, target, _, az, el, _, theta, cams = batch
        c = self.config
        el_t = el
        if training:
            x = perturb_sketches(x.cpu(), self._gen, c.perturb).to(x.device) if c.perturb > 0 else x
            az, el_t, theta = viewpoint_noise(az.cpu(), el.cpu(), theta.cpu(), self._gen, *c.view_noise)
        obs = observe(x, cams, az, el_t, theta, c.resolution, c.observation)
        if training and c.mirror:
            flip = (torch.rand(x.shape[0], generator=self._gen) < 0.5).to(x.device)
            obs = torch.where(flip[:, None, None, None, None], obs.flip(2), obs)
            target = torch.where(flip[:, None, None, None], target.flip(1), target)
        return obs, target

    def targets(self) -> torch.Tensor:
        """The soft retrieval targets among the training grids (G, G), computed once."""
        if self._targets is None:
            train = self.sets()[0]
            self._targets = retrieval_targets(train.grids, train.shape_category(), self.config.retrieval_tau)
        return self._targets

    def loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        if self.config.backproject:
            obs, target = self.observations(batch, net.training)
            logits = net(obs, batch[2])
            loss = voxel_loss(logits, target, self.config.pos_weight)
            if self.config.iou_weight > 0:
                loss = loss + self.config.iou_weight * soft_iou_loss(logits, target)
            return loss
        x, target, cat, az, el, shape, *_ = batch
        if net.training and self.config.mirror:
            flip = (torch.rand(x.shape[0], generator=self._gen) < 0.5).to(x.device)  # the task's CPU generator
            x = torch.where(flip[:, None, None, None], mirror_sketches(x), x)
            target = torch.where(flip[:, None, None, None], mirror_grids(target), target)
            az = torch.where(flip, mirror_azimuth(az), az)
        if net.training and self.config.perturb > 0:
            # the perturbation draws from the task's CPU generator (reproducible on any device)
            x = perturb_sketches(x.cpu(), self._gen, self.config.perturb).to(x.device)
        if self.config.basis:
            occ, view = net.occupancy(x, cat)
            logits = None
            loss = basis_loss(occ, target, self.config.pos_weight)
        elif self.config.retrieval:
            out = net(x, cat, parts=True)  # through the (DDP) forward: gradients are synchronised
            logits, view = out["logits"], out["view"]
            loss = voxel_loss(logits, target, self.config.pos_weight)
            t = self.targets().to(logits.device)[shape.to(logits.device)]
            loss = loss + self.config.retrieval_weight * retrieval_loss(out["scores"], t)
        else:
            logits, view = net(x, cat, with_view=True)
            loss = voxel_loss(logits, target, self.config.pos_weight)
        if logits is not None and self.config.iou_weight > 0:
            loss = loss + self.config.iou_weight * soft_iou_loss(logits, target)
        if view is not None and self.config.view_weight > 0:
            loss = loss + self.config.view_weight * viewpoint_loss(view, az, el)
        critic = self.critic() if net.training else None
        if critic is not None:
            soft = occ.clamp(0.0, 1.0) if logits is None else torch.sigmoid(logits)
            critic.to(soft.device)
            loss = loss - self.config.naturalness_weight * critic(soft).mean()
        return loss

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        _, val = self.sets()
        if val is None:
            return None
        total, ious, az_err, blend_ious = 0.0, [], [], []
        for s in range(0, len(val), 64):
            batch = val.batch(torch.arange(s, min(s + 64, len(val))))
            x, target, cat, az, *_ = batch
            dev = module_device(model)
            view = None
            if self.config.backproject:  # the true viewpoint: the benchmark measures estimated ones
                obs, _ = self.observations([t.to(dev) for t in batch], False)
                logits = model(obs, cat.to(dev)).cpu()
                total += float(voxel_loss(logits, target, self.config.pos_weight)) * len(x)
            elif self.config.retrieval:
                out = to_cpu(model(x.to(dev), cat.to(dev), parts=True))
                logits, view = out["logits"], out["view"]
                total += float(voxel_loss(logits, target, self.config.pos_weight)) * len(x)
                blend_ious.append(voxel_iou((out["blend"] > 0.5).numpy(), target.numpy() > 0.5))
            elif self.config.basis:
                occ, view = to_cpu(model.occupancy(x.to(dev), cat.to(dev)))
                logits = occ - 0.5  # > 0 where occupied, as the logits
                total += float(basis_loss(occ, target, self.config.pos_weight)) * len(x)
            else:
                logits, view = to_cpu(model(x.to(dev), cat.to(dev), with_view=True))
                total += float(voxel_loss(logits, target, self.config.pos_weight)) * len(x)
            if self.config.iou_weight > 0 and not self.config.basis:  # the checkpoint is chosen by the trained loss
                total += self.config.iou_weight * float(soft_iou_loss(logits, target)) * len(x)
            ious.append(voxel_iou((logits > 0).numpy(), target.numpy() > 0.5))
            if view is not None:
                az_err.append(angle_difference(decode(view)["azimuth"].numpy(), az.numpy()))
        out = {"val_loss": total / len(val), "voxel_iou": float(np.concatenate(ious).mean())}
        if blend_ious:
            out["blend_iou"] = float(np.concatenate(blend_ious).mean())
        if az_err:
            out["azimuth_median_deg"] = float(np.median(np.concatenate(az_err)))
        return out

    def describe(self) -> dict[str, Any]:
        train, val = self.sets()
        return {
            "category": self.config.category,
            "resolution": self.config.resolution,
            "train_images": len(train),
            "train_shapes": len(train.grids),
            "val_images": len(val) if val else 0,
        }

    def title(self) -> str:
        return f"voxels {self.config.resolution}³ ({self.config.category})"
