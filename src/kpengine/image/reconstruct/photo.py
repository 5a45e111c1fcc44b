"""A photo to a 3D shape (paper §4.2): 2.5D sketches -> voxels -> marching cubes -> mesh.

The networks see what they were trained on: a square crop in which the object's longer side is
1/1.2 of the frame (the renders' margin, ``image.synth``). The crop comes from the given mask's
box, or, without a mask, from the silhouette the sketch network predicts on the whole photo
(squashed to its input size); the sketches are then predicted again on that crop. A given mask
replaces the predicted silhouette channel. A back-projecting voxels run (``CompletionNet``) also needs
the camera and the viewpoint, which a photo does not record: the viewpoint is the estimate given (the
pipeline's viewpoint run) or the sketch network's RGB head, the intrinsics follow from the photo's field
of view (``fov``, the pipeline's assumption) and the crop, and the object's position in the camera from
the category's mean shape placed so that it fills the silhouette's box (``backproject.fit_camera``).
Bad input (no object, an object cut off by the frame,
nothing above the occupancy threshold, a run of another task, category or resolution) raises
DataError before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kpengine.errors import DataError
from kpengine.geometry.voxelize import VoxelGrid, voxels_to_mesh
from kpengine.image.crops import crop_square, normalise, square_box
from kpengine.image.reconstruct.data import sketch_tensor
from kpengine.image.reconstruct.nets import CompletionNet
from kpengine.image.renders import mask_box
from kpengine.image.viewpoint import angle_difference
from kpengine.io.mesh import Mesh

#: the crop around the object box: its longer side times this (renders: 1 + 2 x U[0.06, 0.14])
RECON_MARGIN = 1.2
#: the mean-shape probability above which the category's mean grid stands for the object when a photo's
#: camera is placed (the level at which the mean grid scores best against the bathtub training shapes)
PLACE_LEVEL = 0.3


def load_network(
    run: str | Path, task: str, *, resolution: int | None = None, category: str | None = None
) -> torch.nn.Module:
    """The best network of a sketch, voxels or naturalness run (eval mode); refuses another task, a
    category the run was not trained on, or another voxel resolution, naming both."""
    from kpengine.learn.checkpoint import best_checkpoint, load_checkpoint

    path = best_checkpoint(run)
    state = load_checkpoint(path, task=task)
    cfg = state["config"]
    if category is not None and category not in [c.strip() for c in str(cfg.get("category", "")).split(",")]:
        raise DataError(f"run was trained on {cfg.get('category')!r}; it cannot reconstruct {category!r}", path=path)
    if resolution is not None and "resolution" in cfg and cfg["resolution"] != resolution:
        raise DataError(f"run was trained at {cfg['resolution']}³, not {resolution}³", path=path)
    if task not in ("sketch", "voxels", "naturalness"):
        raise DataError(f"no reconstruction network for task {task!r}; choose sketch, voxels or naturalness")
    from kpengine.image.tasks import image_task

    model = image_task(task).load_model(state)
    model.config = cfg  # what it was trained with (size, resolution, category)
    return model


@dataclass
class Reconstruction:
    """``mesh`` in model units (centred on the shape's box centre), ``voxels`` (R, R, R) occupancy
    probabilities, ``grid``, the network-size ``crop`` (S, S, 3) uint8 and its predicted sketches
    ``mask`` (S, S) bool, ``depth`` (S, S), ``normals`` (3, S, S), and the crop ``box`` (x, y, w, h)
    of the photo; the viewpoints the networks read off the crop: ``view_rgb`` (the sketch network's
    head, from the RGB crop) and ``view_sketches`` (the voxel network's head, from the sketches),
    each ``{"azimuth", "elevation", "confidence"}`` or None when the network has no head."""

    mesh: Mesh
    voxels: np.ndarray
    grid: VoxelGrid
    crop: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    box: tuple[float, float, float, float]
    view_rgb: dict[str, float] | None = None
    view_sketches: dict[str, float] | None = None
    #: a back-projecting run's camera (8,) at the sketch size (``backproject.view_camera``'s layout) and the
    #: viewpoint it back-projected at; None for the sketch-encoding runs
    camera: np.ndarray | None = None
    view_used: dict[str, float] | None = None
    #: (24,) the sketch-encoding run's azimuth distribution read off the predicted sketches (its viewpoint head),
    #: the front/back cue of the half-turn hedge (``half_turn="sketches"``); None without such a head
    azimuth_sketches: np.ndarray | None = None


def _view(logits: dict[str, torch.Tensor] | None) -> dict[str, float] | None:
    if logits is None or "azimuth" not in logits:
        return None
    from kpengine.image.viewpoint import decode

    d = decode({"azimuth": logits["azimuth"][:1], "elevation": logits["elevation"][:1]})
    return {k: float(v[0]) for k, v in d.items()}


def category_index(voxel_net: torch.nn.Module, category: str | None) -> torch.Tensor:
    """(1,) long: the position of ``category`` among the voxels run's categories (0 when None)."""
    cats = [c.strip() for c in str(getattr(voxel_net, "config", {}).get("category", "")).split(",")]
    if category is None:
        if len(cats) > 1:
            raise DataError(f"the voxels run holds {', '.join(cats)}: name the photo's category")
        return torch.zeros(1, dtype=torch.long)
    if category not in cats:
        raise DataError(f"the voxels run was trained on {', '.join(cats)}; it cannot reconstruct {category!r}")
    return torch.tensor([cats.index(category)])


def _object_box(mask: np.ndarray, what: str) -> tuple[float, float, float, float]:
    if mask.sum() < 4:
        raise DataError(f"{what} is empty: no object found in the photo")
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        raise DataError(f"{what} touches the photo's border: the object is cut off (crop the photo wider)")
    return mask_box(mask)


@torch.no_grad()
def predict_sketches(net: torch.nn.Module, crops: np.ndarray) -> dict[str, torch.Tensor]:
    """(B, S, S, 3) uint8 -> the sketch network's outputs."""
    x = torch.from_numpy(np.array(crops, np.uint8)).permute(0, 3, 1, 2)
    return net(normalise(x))


@torch.no_grad()
def reconstruct_photo(
    image: np.ndarray,
    sketch_net: torch.nn.Module,
    voxel_net: torch.nn.Module | list[torch.nn.Module],
    mask: np.ndarray | None = None,
    level: float = 0.5,
    category: str | None = None,
    sketches: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    viewpoint: dict[str, float] | None = None,
    fov: float = 30.0,
    cone_weight: float | None = None,
    half_turn: float | str = 0.0,
) -> Reconstruction:
    """Photo (H, W, 3) uint8 [+ object mask (H, W) bool] -> :class:`Reconstruction`. ``category``: which
    of a multi-category voxels run's mean shapes to start from; ``sketches``: (mask (S, S), depth (S, S),
    normals (3, S, S)) of the crop that replace the predicted ones (the ground-truth ablation). For a
    back-projecting run: ``viewpoint`` ``{"azimuth", "elevation"}`` degrees and optionally ``"theta"``, the
    in-plane roll (0 when absent; the pipeline's refined pose has one) (else the sketch network's
    RGB head) and ``fov``, the photo's horizontal field of view in degrees (module docstring). Several
    voxels networks (a list, e.g. the default and a cone run): their occupancy probabilities averaged
    (docs/reconstruction.md, sixth pass: +0.025 / +0.040 IoU over the default alone); the viewpoint head
    read is the first one's that has one, the camera the first back-projecting one's. The half-turn hedge
    (docs/reconstruction.md, eighth pass): ``half_turn`` h places each back-projecting run's cone also at
    the viewpoint's half turn (azimuth + 180°, its own fitted camera) and weighs the two ``1 - h`` and ``h``;
    ``cone_weight`` w gives the back-projecting runs together the weight w and the others ``1 - w`` (None:
    every run alike; moot when the runs are all of one kind). ``half_turn="sketches"``: h from the front/back
    cue of the sketch-encoding run's viewpoint head, :func:`cue_share` of :func:`half_turn_share` at the
    viewpoint's azimuth."""
    if cone_weight is not None and not 0.0 <= float(cone_weight) <= 1.0:
        raise DataError(f"cone_weight {cone_weight} is not a weight in [0, 1]")
    if half_turn != "sketches" and not (isinstance(half_turn, (int, float)) and 0.0 <= float(half_turn) <= 1.0):
        raise DataError(f"half_turn {half_turn!r} is not a share in [0, 1] or 'sketches'")
    nets = voxel_nets(voxel_net)
    backproject = any(isinstance(n, CompletionNet) for n in nets)
    if backproject and viewpoint is None and getattr(sketch_net, "view_head", None) is None:
        raise DataError("a backproject voxels run needs the photo's viewpoint: give a viewpoint run, or a sketch "
                        "run with a viewpoint head")  # fmt: skip
    sizes = {int(n.config["size"]) if hasattr(n, "config") else 64 for n in nets}
    resolutions = {int(n.resolution) for n in nets}
    if len(sizes) > 1 or len(resolutions) > 1:
        raise DataError(f"the voxels runs to average read {sorted(sizes)} px sketches and decode "
                        f"{sorted(resolutions)}³ grids: they must agree")  # fmt: skip
    size = sizes.pop()
    if mask is None:
        whole = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        small = predict_sketches(sketch_net, whole[None])["mask"][0].numpy() > 0
        from kpengine.image.silhouette import largest_component

        small = largest_component(small) if small.any() else small
        _object_box(small, "the predicted silhouette")
        h, w = image.shape[:2]
        big = np.asarray(Image.fromarray(small.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 127
        box = mask_box(big)
    else:
        box = _object_box(np.asarray(mask, bool), "the given mask")
    crop = crop_square(image, box, RECON_MARGIN, size)
    sk = predict_sketches(sketch_net, crop[None])
    if sketches is not None:
        sk = {**sk, "depth": torch.as_tensor(sketches[1], dtype=torch.float32)[None],
              "normals": torch.as_tensor(sketches[2], dtype=torch.float32)[None]}  # fmt: skip
        sil = torch.as_tensor(np.asarray(sketches[0]) > 0.5, dtype=torch.float32)[None]
    elif mask is not None:
        rgb_mask = np.repeat(np.asarray(mask, np.uint8)[..., None] * 255, 3, -1)  # PIL crops RGB, not (H, W, 1)
        m = crop_square(rgb_mask, box, RECON_MARGIN, size)[..., 0] > 127
        sil = torch.from_numpy(m.astype(np.float32))[None]
    else:
        sil = (sk["mask"] > 0).float()
    if sil.sum() < 4:
        raise DataError("the predicted silhouette of the object crop is empty: no object to reconstruct")
    depth = sk["depth"] * sil
    normals = sk["normals"] * sil[:, None]
    camera = view_used = vlog = az_prob = None  # az_prob (24,): the first viewpoint head's azimuth distribution
    x = sketch_tensor(sil, depth, normals)
    probs, cone = [], []
    # the sketch-encoding runs first: the first one's viewpoint head may set the half turn's share
    for net in sorted(nets, key=lambda n: isinstance(n, CompletionNet)):
        cat = category_index(net, category)
        if isinstance(net, CompletionNet):
            if camera is None:
                view_used = dict(viewpoint) if viewpoint is not None else _view(sk)
                if view_used is None:
                    raise DataError("no viewpoint to back-project at: give a viewpoint run")
                camera = photo_camera(net, cat, sil[0] > 0.5, view_used, image.shape[:2], box, fov, size)
            h = half_turn
            if h == "sketches":
                if az_prob is None:
                    raise DataError("half_turn 'sketches' needs a sketch-encoding voxels run with a viewpoint head")
                h = float(cue_share(half_turn_share(az_prob, np.array([float(view_used["azimuth"])])))[0])
            p = _cone_probs(net, cat, x, camera, view_used)
            if h > 0.0:
                turned = {**view_used, "azimuth": float(view_used["azimuth"]) + 180.0}
                cam = photo_camera(net, cat, sil[0] > 0.5, turned, image.shape[:2], box, fov, size)
                p = (1.0 - h) * p + h * _cone_probs(net, cat, x, cam, turned)
            cone.append(p)
            continue
        if getattr(net, "view_head", None) is not None:
            occ, head = net(x, cat, with_view=True)
            if vlog is None:
                vlog, az_prob = head, torch.softmax(head["azimuth"][0], -1).numpy()
        else:
            occ = net(x, cat)
        probs.append(torch.sigmoid(occ)[0])
    if cone_weight is None or not cone or not probs:
        probs = torch.stack(probs + cone).mean(0).numpy()
    else:
        w = float(cone_weight)
        probs = ((1.0 - w) * torch.stack(probs).mean(0) + w * torch.stack(cone).mean(0)).numpy()
    grid = VoxelGrid(probs.shape[0])
    mesh = voxels_to_mesh(probs, grid, level)  # DataError when nothing is above the level
    return Reconstruction(
        mesh, probs, grid, crop, sil[0].numpy() > 0.5, depth[0].numpy(), normals[0].numpy(), box, _view(sk),
        _view(vlog), camera, view_used,
        az_prob,
    )  # fmt: skip


def half_turn_share(prob: np.ndarray, azimuth: np.ndarray, width: float = 30.0) -> np.ndarray:
    """The front/back cue (docs/reconstruction.md, eighth pass): azimuth distributions (N, K) (bin k centred at
    (k + 1/2) 360/K degrees) smoothed by a triangle of half-width ``width`` degrees, read at the azimuths (N,)
    ``a`` and their half turns: ``m(a + 180) / (m(a) + m(a + 180))``, 1/2 where both are 0."""
    prob, azimuth = np.atleast_2d(prob), np.atleast_1d(azimuth)
    centres = (np.arange(prob.shape[1]) + 0.5) * 360.0 / prob.shape[1]

    def mass(x: np.ndarray) -> np.ndarray:
        d = angle_difference(x[:, None], centres[None])
        return (prob * np.clip(1.0 - d / width, 0.0, None)).sum(1)

    at, half = mass(azimuth), mass(azimuth + 180.0)
    tot = at + half
    return np.where(tot > 0, half / np.where(tot > 0, tot, 1.0), 0.5)


def cue_share(share: np.ndarray, steps: int = 12) -> np.ndarray:
    """The cue's half-turn share per view: ``min(1/2, s)`` rounded to the nearest ``1 / steps`` (never more
    than an even split: the pose the pipeline keeps counts at least as much as its half turn)."""
    return np.round(np.minimum(0.5, share) * steps) / steps


def _cone_probs(
    net: CompletionNet, cat: torch.Tensor, x: torch.Tensor, camera: np.ndarray, view: dict[str, float]
) -> torch.Tensor:
    """A back-projecting run's occupancy probabilities (R, R, R) for the sketches ``x`` (1, 5, S, S) seen by
    ``camera`` (8,) from ``view`` (azimuth, elevation, optional roll ``theta``, degrees)."""
    from kpengine.image.reconstruct.backproject import observe

    obs = observe(x, torch.from_numpy(camera)[None], torch.tensor([float(view["azimuth"])]),
                  torch.tensor([float(view["elevation"])]), torch.tensor([float(view.get("theta", 0.0))]),
                  net.resolution, net.observation)  # fmt: skip
    return torch.sigmoid(net(obs, cat))[0]


def voxel_nets(voxel_net: torch.nn.Module | list[torch.nn.Module]) -> list[torch.nn.Module]:
    """One voxels network or several (averaged) -> a list of them."""
    return list(voxel_net) if isinstance(voxel_net, (list, tuple)) else [voxel_net]


def photo_camera(
    voxel_net: CompletionNet,
    category: torch.Tensor,
    silhouette: torch.Tensor,
    viewpoint: dict[str, float],
    photo_shape: tuple[int, int],
    box: tuple[float, float, float, float],
    fov: float,
    size: int,
) -> np.ndarray:
    """The (8,) camera of a photo's crop at the sketch size (``backproject.view_camera``'s layout): the
    photo's intrinsics (horizontal field of view ``fov``, principal point at its centre) carried into the
    crop (``crop_square``'s square of ``box``: a photo pixel-centre coordinate u is crop pixel
    ``(u + 0.5 - x0) size / side - 0.5``), and the object placed by ``backproject.fit_camera``: the
    category's mean grid (probability > ``PLACE_LEVEL``) at the viewpoint, filling the silhouette (S, S)."""
    from kpengine.image.reconstruct.backproject import camera_rotation, fit_camera
    from kpengine.render.cameras import Intrinsics

    h, w = photo_shape
    k = Intrinsics.from_fov(w, h, fov)
    cx, cy, side = square_box(box, RECON_MARGIN)
    x0, y0 = cx - side / 2, cy - side / 2
    scale = size / side
    intr = (k.fx * scale, k.fy * scale, (k.cx + 0.5 - x0) * scale - 0.5, (k.cy + 0.5 - y0) * scale - 0.5)
    rot = camera_rotation(torch.tensor([float(viewpoint["azimuth"])]), torch.tensor([float(viewpoint["elevation"])]),
                          torch.tensor([float(viewpoint.get("theta", 0.0))]))[0]  # fmt: skip
    level = float(np.log(PLACE_LEVEL / (1 - PLACE_LEVEL)))
    prior = voxel_net.prior[int(category[0])] > level  # the prior holds the mean grid's logits
    if not prior.any():
        raise DataError("the voxels run's mean shape is empty: nothing to place in the photo's camera")
    return fit_camera(prior, rot, silhouette, intr).numpy()


def sketch_picture(r: Reconstruction) -> np.ndarray:
    """(S, 4S, 3) uint8: the crop, the silhouette, depth (near = bright) and normals side by side."""
    s = r.crop.shape[0]
    sil = np.repeat((r.mask * 255).astype(np.uint8)[..., None], 3, -1)
    d = r.depth[r.mask] if r.mask.any() else np.zeros(1)
    lo, hi = float(d.min()), float(d.max())
    dn = np.where(r.mask, 1.0 - (r.depth - lo) / max(hi - lo, 1e-6), 0.0)
    depth = np.repeat((dn * 255).astype(np.uint8)[..., None], 3, -1)
    normals = np.where(r.mask[..., None], (r.normals.transpose(1, 2, 0) + 1) * 127.5, 0).astype(np.uint8)
    out = np.concatenate([r.crop, sil, depth, normals], axis=1)
    assert out.shape == (s, 4 * s, 3)
    return out
