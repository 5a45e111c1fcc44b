"""Training data of the reconstruction networks: ground-truth voxels per shape, and 2.5D sketches
(silhouette, depth, camera-frame normals) of render-set views at the network's size.

Sketch targets (what the sketch network predicts and the voxel network reads), per view:
    * ``mask`` (S, S) in [0, 1]: the object mask, block-averaged from the render size;
    * ``depth`` (S, S): z-depth minus the camera's distance to the object centre (model units,
      so the object's centre is at 0 whatever the field of view), 0 off the object;
    * ``normals`` (3, S, S): unit normals in the camera frame (x right, y down, z forward:
      ``R @ n_world``), 0 off the object. Camera-frame normals are what a photo shows; world
      normals would need the viewpoint first.
The five channels stacked are the voxel network's input (``sketch_tensor``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kpengine.categories import resolve_category
from kpengine.errors import DataError
from kpengine.geometry.voxelize import voxelize_cloud, voxelize_mesh
from kpengine.image.reconstruct.backproject import view_camera
from kpengine.image.renderset import view_sample
from kpengine.io import layout
from kpengine.io.mesh import load_mesh
from kpengine.io.pcd import load_pcd
from kpengine.io.renderset import RenderSet, load_render_set

SKETCH_CHANNELS = 5


def shape_voxels(root: str | Path, category: str, model_id: str, resolution: int = 32) -> tuple[np.ndarray, str]:
    """Ground-truth occupancy (R, R, R) bool of one shape, and its source: the mesh when there is one
    (filled), else the official cloud (closed and filled; one closing step per 32 voxels)."""
    root = Path(root)
    cat = resolve_category(category)
    mesh_file = layout.mesh_path(root, cat.synset, model_id)
    if mesh_file is not None:
        return voxelize_mesh(load_mesh(mesh_file), resolution)[0], "mesh"
    pcd_file = layout.pcd_path(root, cat.synset, model_id)
    if not pcd_file.is_file():
        raise DataError("no mesh and no cloud to voxelize", path=pcd_file, model_id=model_id)
    return voxelize_cloud(load_pcd(pcd_file).points, resolution, close_steps=max(1, resolution // 32))[0], "pcd"


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, ...) -> (H / f, W / f, ...) by averaging f x f blocks."""
    h, w = a.shape[:2]
    return a.reshape(h // factor, factor, w // factor, factor, *a.shape[2:]).mean((1, 3))


def view_sketch(sample, size: int) -> dict[str, np.ndarray]:
    """One view (``ImageSample`` with mask, depth, normals, camera) -> ``image`` (S, S, 3) uint8 and
    the sketch targets of the module docstring at side ``size`` (the render side a multiple of it)."""
    h = sample.image.shape[0]
    if h % size:
        raise DataError(f"render side {h} is not a multiple of the network size {size}", path=sample.name)
    f = h // size
    mask = sample.mask.astype(np.float32)
    cover = block_mean(mask, f)
    inside = np.maximum(cover, 1e-6)
    dist = float(sample.viewpoint.distance)
    depth = np.where(sample.mask, sample.depth - dist, 0.0).astype(np.float32)
    normals = sample.normals @ sample.camera.R.T  # world -> camera frame, per pixel
    normals = np.where(sample.mask[..., None], normals, 0.0).astype(np.float32)
    d = block_mean(depth, f) / inside
    n = block_mean(normals, f)
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    on = cover > 0.5
    image = block_mean(sample.image.astype(np.float32), f).round().astype(np.uint8)
    return {
        "image": image,
        "mask": cover.astype(np.float32),
        "depth": np.where(on, d, 0.0).astype(np.float32),
        "normals": np.where(on[..., None], n, 0.0).transpose(2, 0, 1).astype(np.float32),
    }


@dataclass
class SketchSet:
    """Views of a render set at the network size: ``images`` (N, 3, S, S) uint8, ``mask`` (N, S, S),
    ``depth`` (N, S, S), ``normals`` (N, 3, S, S) float32, ``category`` and ``model_id`` (N,) str,
    the true ``azimuth`` and ``elevation`` (N,) degrees and the view ``ids``; the in-plane roll ``theta``
    (N,) degrees and each view's ``cameras`` (N, 8) at the sketch size (``backproject.view_camera``:
    what the back-projecting 3D estimator needs)."""

    images: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    category: list[str]
    model_id: list[str]
    azimuth: torch.Tensor
    elevation: torch.Tensor
    ids: list[str]
    theta: torch.Tensor | None = None
    cameras: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.model_id)

    def sketches(self, idx) -> torch.Tensor:
        """Ground-truth sketches (B, 5, S, S) of items ``idx`` (see :func:`sketch_tensor`)."""
        return sketch_tensor(self.mask[idx], self.depth[idx], self.normals[idx])


def sketch_tensor(mask: torch.Tensor, depth: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """(B, S, S), (B, S, S), (B, 3, S, S) -> (B, 5, S, S): the voxel network's input. Depth is scaled
    by 4 (model units of about ±0.25 to about ±1, like the other channels)."""
    return torch.cat([mask[:, None], 4.0 * depth[:, None], normals], 1)


def load_sketch_set(
    root: str | Path,
    size: int = 64,
    categories: list[str] | None = None,
    views_per_shape: int | None = None,
    splits: list[str] | None = None,
    training: bool = False,
    skip_views: int = 0,
) -> SketchSet:
    """Read a render set's views (``views_per_shape``: the first N views of each shape after the first
    ``skip_views``) as a SketchSet; ``training`` refuses test-split views (evaluation renders)."""
    rs: RenderSet = load_render_set(root)
    rs = rs.select(categories=categories, splits=splits)
    if training and any(v["split"] == "test" for v in rs.views):
        raise DataError("the render set holds test-split views (evaluation renders): never train on them", path=root)
    if len(rs) == 0:
        raise DataError(f"no views of {categories or 'any category'} in the render set", path=root)
    keep, seen = [], {}
    for i, v in enumerate(rs.views):
        if not (v.get("depth") and v.get("normals") and v.get("mask")):
            raise DataError(
                f"view {v['id']} has no depth/normals/mask map (render with --maps mask,depth,normals)", path=root
            )
        n = seen.get(v["model_id"], 0)
        k = n - skip_views
        if k >= 0 and (views_per_shape is None or k < views_per_shape):
            keep.append(i)
        seen[v["model_id"]] = n + 1
    parts = [view_sketch(view_sample(rs, i), size) for i in keep]
    return SketchSet(
        torch.from_numpy(np.stack([p["image"] for p in parts]).transpose(0, 3, 1, 2).copy()),
        torch.from_numpy(np.stack([p["mask"] for p in parts])),
        torch.from_numpy(np.stack([p["depth"] for p in parts])),
        torch.from_numpy(np.stack([p["normals"] for p in parts])),
        [rs.views[i]["category"] for i in keep],
        [rs.views[i]["model_id"] for i in keep],
        torch.tensor([float(rs.views[i]["azimuth"]) for i in keep]),
        torch.tensor([float(rs.views[i]["elevation"]) for i in keep]),
        [rs.views[i]["id"] for i in keep],
        torch.tensor([float(rs.views[i]["theta"]) for i in keep]),
        torch.from_numpy(np.stack([view_camera(rs.views[i], size) for i in keep])),
    )


@torch.no_grad()
def silhouette_net_masks(
    root: str | Path, ids: list[str], categories: list[str], nets: dict[str, tuple[torch.nn.Module, int]], size: int
) -> torch.Tensor:
    """The silhouette networks' masks of render-set views at the sketch size: (N, S, S) float32 in {0, 1}.

    Each view ``ids[n]`` of category ``categories[n]`` is read at its render size, the category's network
    ``nets[category]`` = (silhouette network, its input size) predicts the mask on the whole render
    (``datasets.predict_mask``: what ``understand`` feeds the reconstruction without a given mask), and
    the mask is block-averaged to ``size`` and thresholded at 0.5 (as ``view_sketch`` makes the true one).
    The benchmark's ``/sil`` rows and the voxels option ``silhouette_runs`` both use it."""
    from kpengine.image.datasets import predict_mask

    rs = load_render_set(root)
    where = {v["id"]: k for k, v in enumerate(rs.views)}
    out = []
    for vid, cat in zip(ids, categories):
        if cat not in nets:
            raise DataError(f"no silhouette run for category {cat!r}", path=root)
        net, net_size = nets[cat]
        image = view_sample(rs, where[vid], ()).image
        if image.shape[0] % size:
            raise DataError(f"render side {image.shape[0]} is not a multiple of the sketch size {size}", path=root)
        m = predict_mask(net, image, net_size).astype(np.float32)
        out.append(block_mean(m, image.shape[0] // size) > 0.5)
    return torch.from_numpy(np.stack(out).astype(np.float32))


def category_voxels(
    root: str | Path, pairs: set[tuple[str, str]], resolution: int = 32
) -> dict[tuple[str, str], np.ndarray]:
    """Ground-truth grids for (category, model_id) pairs."""
    return {p: shape_voxels(root, p[0], p[1], resolution)[0] for p in sorted(pairs)}


def perturb_sketches(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Ground-truth sketches (B, 5, S, S) -> sketches with the faults a sketch network makes, for
    training the voxel network (it reads predicted sketches at test time; trained on clean ones only,
    the first network lost 0.05 IoU on bathtubs and 0.15 on beds from them): per item, the silhouette
    grown or shrunk by one pixel (a 3x3 max / min filter, probability 1/3 each), depth noise
    (sd 0.1 of the x4 scale, then a 3x3 box blur with probability 1/2) and normal noise (sd 0.15,
    renormalised), all zeroed off the new silhouette, which is binary (as at test time)."""
    b = x.shape[0]

    def pick(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) < p).view(b, 1, 1, 1)

    m = x[:, :1]
    grown = F.max_pool2d(m, 3, 1, 1)
    shrunk = -F.max_pool2d(-m, 3, 1, 1)
    r = torch.rand(b, generator=gen).view(b, 1, 1, 1)
    m = torch.where(r < 1 / 3, grown, torch.where(r < 2 / 3, shrunk, m))
    on = (m > 0.5).float()
    d = x[:, 1:2] + strength * 0.1 * torch.randn(x[:, 1:2].shape, generator=gen)
    d_blur = F.avg_pool2d(d, 3, 1, 1, count_include_pad=False)
    d = torch.where(pick(0.5), d_blur, d)
    # grown pixels take the nearest depth/normals of the old silhouette (a 3x3 max of |value|-ordered
    # values would be costlier; the mean over the neighbours inside is close enough at one pixel)
    inside = (x[:, :1] > 0.5).float()
    cnt = F.avg_pool2d(inside, 3, 1, 1) * 9
    d_fill = F.avg_pool2d(d * inside, 3, 1, 1) * 9 / cnt.clamp(min=1)
    d = torch.where(inside > 0, d, d_fill)
    n = x[:, 2:5]
    n_fill = F.avg_pool2d(n * inside, 3, 1, 1) * 9 / cnt.clamp(min=1)
    n = torch.where(inside > 0, n, n_fill) + strength * 0.15 * torch.randn(n.shape, generator=gen)
    n = F.normalize(n, dim=1, eps=1e-6)
    return torch.cat([on, d * on, n * on], 1)


def augment_views(
    images: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor, normals: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """A training batch of the sketch network, augmented: (B, 3, S, S) uint8 images and their
    (B, S, S) mask, (B, S, S) depth, (B, 3, S, S) normals -> float images in [0, 1] and the targets,
    moved together, and the (B,) bool flips.

    * **Framing** (``crops.resample``): zoom U[0.9, 1.1], shift U[-0.04, 0.04] of the width, a left-right
      flip with probability 1/2 (the camera-frame normals' x is negated with it). A photo's crop comes
      from a mask box with a fixed margin, the renders' margins vary (1.12-1.28): the network must not
      rely on the framing. Depth and normals are resampled weighted by the mask, so edge pixels do not
      blend with the zeros outside.
    * **Appearance** (kornia): colour jiggle (brightness, contrast, saturation 0.3, hue 0.05),
      Gaussian blur (sigma 0.1-1.2, p 0.3), Gaussian noise (sd 0.03, p 0.3): real photos are blurrier,
      noisier and differently lit than the renders.
    """
    import kornia.augmentation as K

    from kpengine.image.crops import resample

    b, _, s, _ = images.shape
    zoom = 0.9 + 0.2 * torch.rand(b, generator=gen)
    shift = 0.08 * torch.rand(b, 2, generator=gen) - 0.04
    flip = torch.rand(b, generator=gen) < 0.5
    m = mask[:, None].float()
    stack = torch.cat([images.float() / 255.0, m, depth[:, None] * m, normals * m], 1)
    out = resample(stack, s, zoom, shift, flip)
    img, m2 = out[:, :3], out[:, 3]
    w = m2.clamp(min=1e-6)
    d2 = out[:, 4] / w
    n2 = out[:, 5:8] / w[:, None]
    n2 = torch.cat([torch.where(flip[:, None, None, None], -n2[:, :1], n2[:, :1]), n2[:, 1:]], 1)
    n2 = F.normalize(n2, dim=1, eps=1e-6)
    on = m2 > 0.5
    d2 = torch.where(on, d2, 0.0)
    n2 = torch.where(on[:, None], n2, 0.0)
    photometric = torch.nn.Sequential(
        K.ColorJiggle(0.3, 0.3, 0.3, 0.05, p=1.0),
        K.RandomGaussianBlur((5, 5), (0.1, 1.2), p=0.3),
        K.RandomGaussianNoise(std=0.03, p=0.3),
    )
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        img = photometric(img).clamp(0.0, 1.0)
    return img, m2, d2, n2, flip
