"""Training images from real shapes: random views rendered with OpenGL, composited on photo backgrounds.

For each view of a shape (paper §4's training data; conventions of :mod:`kpengine.render.cameras`):

1. **Viewpoint**: azimuth uniform over [0, 360), elevation uniform in ``elevation`` (default
   -10..60 degrees), in-plane roll ``theta`` normal with sd ``roll_sd`` clipped to 3 sd, horizontal
   field of view uniform in ``fov`` (default 20..60 degrees: the focal length) and the distance at
   which the object fills 0.55-0.9 of that frame (so narrow fields of view are far, weak perspective,
   and wide ones near, strong perspective).
2. **Crop and centre** (the paper assumes centred objects): the principal point and the focal length
   are moved so that the silhouette's box (the projection of every vertex, or every point plus its
   splat radius) is centred with its longer side ``1 / (1 + 2 margin)`` of the image, margin uniform in
   ``margin``. The camera stays a pinhole camera: the crop is part of its intrinsics.
3. **Render** with :mod:`kpengine.render.gl` at ``supersample`` times the output size: meshes with their
   MTL colours and textures (or one random colour per connected part when they have none), clouds as
   splats of their own colours (random colours when they have none); a random directional light (70 %)
   or a headlight, ambient 0.25-0.5.
4. **Appearance**: kornia's colour jitter on the object (brightness, contrast, saturation, hue),
   then composited on a background (:class:`~kpengine.image.backgrounds.BackgroundBank` crops of real
   photos away from their objects, or generated clutter); sometimes a slight blur and sensor noise on
   the whole image. Downsampled to the output size (antialiased silhouette edges).
5. **Keypoints**: projected with the final camera; visibility by the depth test of the rendered depth
   buffer for meshes (:func:`~kpengine.render.project.project_points`) and by
   :func:`~kpengine.render.project.splat_visibility` for splats.

Bathtubs and beds have no meshes here, only the official 2,048-point clouds: they are rendered as
oriented splats (surfels: discs of twice :func:`~kpengine.render.splat.default_radius` in each point's
PCA tangent plane; 1 and 1.5 times left holes, checked by eye), not as surfaces reconstructed from the
clouds. Why: the keypoints are points of
that very cloud, so splats keep them exactly on the rendered surface; a reconstruction (Poisson or
ball pivoting: open3d, a 400 MB dependency) of 2,048 points would close the openings of thin
double-walled shapes (a bathtub's basin) and move the surface off the keypoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.geometry.transforms import bbox_centre
from kpengine.image.backgrounds import BackgroundBank, generated_background
from kpengine.image.types import ImageSample, Keypoints2D, resize
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, fit_distance, make_camera

SURFEL_SCALE = 2.0
RENDERER = "gl-1: meshes rasterised; clouds as oriented surfels of 2x default_radius"

CONVENTIONS = (
    "kpengine.render.cameras: world y up (ShapeNet model_normalized, objects face -z); camera x right, y down, "
    "z forward; azimuth = camera on center + d (cos el sin az, sin el, cos el cos az): 0 sees the object's back, "
    "180 its front, 270 its side with the front to image-left; facing_azimuth = azimuth - 180 wrapped to "
    "(-180, 180] (the EPFL cars convention: 0 = the object faces the camera, +90 = front to image-left); "
    "elevation > 0 = camera above; theta = in-plane roll, image content turned clockwise; degrees"
)


def facing_azimuth(azimuth: float) -> float:
    """Camera azimuth (:mod:`kpengine.render.cameras`) -> the EPFL cars convention for ShapeNet-aligned
    objects (they face -z): 0 = the object faces the camera, +90 = its front to image-left, in (-180, 180]."""
    a = (azimuth - 180.0 + 180.0) % 360.0 - 180.0
    return 180.0 if a == -180.0 else a


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the view sampling and appearance (module docstring)."""

    size: int = 128
    supersample: int = 2
    elevation: tuple[float, float] = (-10.0, 60.0)
    fov: tuple[float, float] = (20.0, 60.0)
    fill: tuple[float, float] = (0.55, 0.9)
    roll_sd: float = 5.0
    margin: tuple[float, float] = (0.06, 0.14)
    jitter: bool = True

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class ShapeGeometry:
    """What a shape is drawn from: a GL renderer, the points bounding its silhouette, the splat radius
    (0 for meshes) and the source kind."""

    renderer: object
    hull_points: np.ndarray
    splat_radius: float
    source: str
    center: np.ndarray


def _part_colours(mesh, rng: np.random.Generator) -> np.ndarray:
    """(F, 3) one random colour per connected part of the mesh, all of one random hue family."""
    import trimesh

    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    labels = trimesh.graph.connected_component_labels(tm.face_adjacency, node_count=len(mesh.faces))
    base = rng.uniform(0.15, 0.9, 3)
    palette = np.clip(base + rng.normal(0, 0.18, (labels.max() + 1, 3)), 0.05, 0.95)
    return palette[labels]


def shape_geometry(shape: Shape, rng: np.random.Generator) -> ShapeGeometry:
    """A GL renderer for a shape: its mesh when it has one (MTL appearance, else random part colours), else
    splats of its cloud (own colours, else one random colour with a little per-point variation)."""
    from kpengine.io.mesh import load_mesh
    from kpengine.render.appearance import load_obj_appearance
    from kpengine.render.gl import GLMeshRenderer, GLSplatRenderer
    from kpengine.render.splat import default_radius

    if shape.mesh_path is not None and Path(shape.mesh_path).is_file():
        path = Path(shape.mesh_path)
        mesh = load_mesh(path)
        appearance = load_obj_appearance(path) if path.suffix.lower() == ".obj" else None
        if appearance is not None and not appearance.materials:
            appearance = None
        if appearance is None and mesh.vertex_colors is None:
            renderer = GLMeshRenderer(mesh, face_colors=_part_colours(mesh, rng), name=str(path))
        else:
            renderer = GLMeshRenderer(mesh, appearance=appearance, name=str(path))
        v = mesh.vertices
        return ShapeGeometry(renderer, v, 0.0, "mesh", bbox_centre(v))
    pts = np.asarray(shape.points, np.float64)
    colors = shape.colors
    if colors is None or np.ptp(np.asarray(colors, np.int64), axis=0).max() == 0:
        base = rng.uniform(40, 230, 3)
        colors = np.clip(base + rng.normal(0, 8, (len(pts), 3)), 0, 255).astype(np.uint8)
    radius = SURFEL_SCALE * default_radius(pts)  # 2,048 points leave gaps between narrower surfels
    renderer = GLSplatRenderer(pts, colors=colors, radius=radius, oriented=True, max_radius_px=24, name=shape.model_id)
    return ShapeGeometry(renderer, pts, radius, "splat", bbox_centre(pts))


def random_viewpoint(rng: np.random.Generator, cfg: SynthConfig, radius: float) -> tuple[Viewpoint, float]:
    """A viewpoint and its horizontal field of view (degrees) for an object of bounding ``radius``."""
    fov = float(rng.uniform(*cfg.fov))
    k = Intrinsics.from_fov(cfg.size, cfg.size, fov)
    distance = fit_distance(radius, k, float(rng.uniform(*cfg.fill)))
    theta = float(np.clip(rng.normal(0.0, cfg.roll_sd), -3 * cfg.roll_sd, 3 * cfg.roll_sd))
    view = Viewpoint(float(rng.uniform(0.0, 360.0)), float(rng.uniform(*cfg.elevation)), distance, theta)
    return view, fov


def centred_camera(
    view: Viewpoint, fov: float, center: np.ndarray, hull: np.ndarray, splat_radius: float, size: int, margin: float
) -> Camera:
    """The camera of ``view`` whose intrinsics centre the projected ``hull`` points (N, 3) in a ``size``
    square image, their box's longer side ``size / (1 + 2 margin)``."""
    cam = make_camera(view, Intrinsics.from_fov(size, size, fov), center)
    uv, z = cam.project(hull)
    if not (z > 0).all():
        raise DataError("the camera is inside the object's bounds; the distance is too small")
    pad = splat_radius * cam.intrinsics.fx / z
    lo = np.min(uv - pad[:, None], axis=0) - 0.5  # pixel edges, not centres
    hi = np.max(uv + pad[:, None], axis=0) + 0.5
    side = float(np.max(hi - lo))
    s = size / (1.0 + 2.0 * margin) / side
    mid = (lo + hi) / 2
    k = cam.intrinsics
    c = (size - 1) / 2.0
    intr = Intrinsics(s * k.fx, s * k.fy, c - s * (mid[0] - k.cx), c - s * (mid[1] - k.cy), size, size)
    return Camera(intr, cam.R, cam.t)


def _to_tensor(rgb: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb, np.float32)).permute(2, 0, 1)[None]


def _jitter(fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """kornia colour jitter (brightness, contrast, saturation, hue) of an (H, W, 3) float image in [0, 1]."""
    import kornia.enhance as ke

    x = _to_tensor(fg)
    x = ke.adjust_brightness(x, float(rng.uniform(-0.12, 0.12)))
    x = ke.adjust_contrast(x, float(rng.uniform(0.75, 1.25)))
    x = ke.adjust_saturation(x, float(rng.uniform(0.6, 1.4)))
    x = ke.adjust_hue(x, float(rng.uniform(-0.08, 0.08)) * 2 * math.pi)
    return x[0].permute(1, 2, 0).clamp(0, 1).numpy()


def _camera_effects(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half the time a slight Gaussian blur (kornia) and sensor noise on an (H, W, 3) float image."""
    import kornia.filters as kf
    import torch

    if rng.random() >= 0.5:
        return rgb
    x = _to_tensor(rgb)
    sigma = float(rng.uniform(0.3, 0.9))
    x = kf.gaussian_blur2d(x, (5, 5), (sigma, sigma))
    x = x + float(rng.uniform(0.0, 0.02)) * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    return x[0].permute(1, 2, 0).clamp(0, 1).numpy()


def _area_resize(a: np.ndarray, size: int) -> np.ndarray:
    """(H, W[, C]) float32 -> (size, size[, C]) with Pillow's antialiased bilinear filter, channel by channel."""
    from PIL import Image

    if a.shape[0] == size and a.shape[1] == size:
        return a.astype(np.float32)
    chans = [a] if a.ndim == 2 else [a[..., c] for c in range(a.shape[2])]
    out = [
        np.asarray(Image.fromarray(np.ascontiguousarray(c, np.float32)).resize((size, size), Image.Resampling.BILINEAR))
        for c in chans
    ]
    return out[0] if a.ndim == 2 else np.stack(out, axis=-1)


def render_view(
    shape: Shape,
    geometry: ShapeGeometry,
    rng: np.random.Generator,
    cfg: SynthConfig,
    background: Callable[[np.random.Generator, int], tuple[np.ndarray, str]],
) -> tuple[ImageSample, dict]:
    """One random training view of ``shape``: the sample (image, mask, camera, keypoints, depth, normals,
    viewpoint) at ``cfg.size`` and its extra labels (``fov``, ``background``, ``source``).

    Compositing is premultiplied-alpha at the output size: the supersampled render (on black) and its mask
    are downsampled alike, so ``colour / alpha`` is the object's colour at the edge pixels, and the image is
    ``alpha * jitter(colour / alpha) + (1 - alpha) * background``: no dark or background-coloured halo."""
    from kpengine.render.project import project_points, splat_visibility

    radius = float(np.linalg.norm(geometry.hull_points - geometry.center, axis=1).max()) + geometry.splat_radius
    view, fov = random_viewpoint(rng, cfg, radius)
    big = cfg.size * cfg.supersample
    cam = centred_camera(
        view, fov, geometry.center, geometry.hull_points, geometry.splat_radius, big, float(rng.uniform(*cfg.margin))
    )
    light = None
    if rng.random() < 0.7:
        light = rng.normal(size=3) + np.array([0.0, 1.2, 0.0]) + 0.8 * (cam.position - geometry.center)
    r = geometry.renderer.render(cam, background=(0.0, 0.0, 0.0), light=light, ambient=float(rng.uniform(0.25, 0.5)))
    if not r.mask.any():
        raise DataError("the view shows nothing of the object", model_id=shape.model_id)
    if geometry.source == "mesh":
        proj = project_points(shape.keypoints, cam, r.depth)
    else:
        proj = splat_visibility(shape.keypoints, cam, r, geometry.splat_radius)
    names = tuple(f"kp{int(s)}" for s in shape.semantic_ids)
    sample = ImageSample(
        r.color,
        mask=r.mask,
        camera=cam,
        keypoints=Keypoints2D(proj.uv, proj.visible, shape.semantic_ids, names),
        depth=r.depth,
        normals=r.normals,
        viewpoint=view,
        center=geometry.center,
        name=shape.model_id,
        model_id=shape.model_id,
        category=shape.category.name,
    )
    sample = resize(sample, cfg.size)  # camera, keypoints, mask (area, > 1/2), depth and normals (nearest)
    alpha = _area_resize(r.mask.astype(np.float32), cfg.size)[..., None]
    premult = _area_resize(r.color.astype(np.float32) / 255.0, cfg.size)
    fg = np.where(alpha > 1e-3, premult / np.maximum(alpha, 1e-3), 0.0).clip(0.0, 1.0)
    if cfg.jitter:
        fg = _jitter(fg, rng)
    bg, bg_name = background(rng, cfg.size)
    rgb = alpha * fg + (1.0 - alpha) * (bg.astype(np.float32) / 255.0)
    if cfg.jitter:
        rgb = _camera_effects(rgb, rng)
    image = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    sample = sample.replace(image=image)
    fov_eff = math.degrees(2 * math.atan(cfg.size / (2 * sample.camera.intrinsics.fx)))
    return sample, {"fov": fov_eff, "background": bg_name, "source": geometry.source}


def background_source(bank: BackgroundBank | None) -> Callable[[np.random.Generator, int], tuple[np.ndarray, str]]:
    if bank is None or len(bank) == 0:
        return lambda rng, size: (generated_background(rng, size), "generated")
    return bank.sample


def shape_seed(seed: int, category: str, model_id: str) -> np.random.Generator:
    """A generator per (seed, category, model): the same views whatever order or resumption."""
    import hashlib

    digest = hashlib.sha256(f"{seed}/{category}/{model_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def render_shape_views(
    shape: Shape,
    n_views: int,
    cfg: SynthConfig,
    seed: int,
    background: Callable[[np.random.Generator, int], tuple[np.ndarray, str]],
) -> Iterator[tuple[ImageSample, dict]]:
    """``n_views`` random views of one shape (deterministic given ``seed``)."""
    rng = shape_seed(seed, shape.category.name, shape.model_id)
    geometry = shape_geometry(shape, rng)
    try:
        for _ in range(n_views):
            yield render_view(shape, geometry, rng, cfg, background)
    finally:
        release = getattr(geometry.renderer, "release", None)
        if release is not None:
            release()


def unannotated_mesh_shapes(root: str | Path, category: str) -> list[Shape]:
    """Keypoint-free shapes for the category's meshes under ``root`` that have no annotation and are in no split.

    Silhouette and viewpoint networks need views, not keypoints, and ShapeNet meshes of one category share
    one frame, so an unannotated mesh is a training shape for them (airplane: 8 of the 9 OBJ files here have
    no KeypointNet annotation, docs/benchmarks.md "SPair"). A mesh listed in any split file is left out: a
    test-split shape is never rendered for training, whatever its annotation. Keypoints are empty (K = 0)."""
    from kpengine.categories import resolve_category
    from kpengine.io import layout
    from kpengine.io.annotations import ModelAnnotation, Symmetries, load_annotations
    from kpengine.io.mesh import load_mesh
    from kpengine.io.splits import load_split

    root = Path(root)
    cat = resolve_category(category)
    ann = layout.annotation_path(root, cat.name)
    annotated: set[str] = set()
    if ann is not None:  # an element that fails to parse is still an annotated model: not "unannotated"
        models, problems = load_annotations(ann)
        annotated = {a.model_id for a in models} | {str(p.model_id) for p in problems}
    in_splits = set()
    for split in ("train", "val", "test"):
        if layout.split_path(root, split).is_file():
            in_splits |= {m for s, m in load_split(layout.split_path(root, split)) if s == cat.synset}
    shapes = []
    for mid in layout.mesh_dir_ids(root, cat.synset):
        path = layout.mesh_path(root, cat.synset, mid)
        if path is None or mid in annotated or mid in in_splits:
            continue
        v = np.asarray(load_mesh(path).vertices, np.float32)
        shapes.append(
            Shape(
                model_id=mid, category=cat, points=v, colors=None, keypoints=np.zeros((0, 3), np.float32),
                semantic_ids=np.zeros(0, np.int64), point_indices=np.zeros(0, np.int64), symmetries=Symmetries(),
                annotation=ModelAnnotation(cat.synset, mid, []), source="mesh", mesh_path=path,
            )
        )  # fmt: skip
    return shapes


def build_render_set(
    root: str | Path,
    categories: list[str],
    split: str,
    out: str | Path,
    *,
    views_per_shape: int = 8,
    cfg: SynthConfig = SynthConfig(),
    seed: int = 0,
    backgrounds: str | Path | None = None,
    maps: tuple[str, ...] = ("mask", "depth", "normals"),
    limit: int | None = None,
    evaluation: bool = False,
    unannotated: bool = False,
    log: Callable[[str], None] = lambda s: None,
    progress: Callable[[int], None] = lambda n: None,
) -> dict:
    """Render ``views_per_shape`` views of every shape of ``categories`` in ``split`` into the render set ``out``
    (layout in :mod:`kpengine.io.renderset`). Resumable: shapes whose shard exists with the same settings are
    skipped; ``index.json`` is rewritten after each category (``"complete": false`` until the last).
    ``limit`` caps shapes per category. ``unannotated`` (train split only) adds the category's meshes that
    have no annotation and no split (:func:`unannotated_mesh_shapes`), views without keypoints.
    ``evaluation`` allows the test split (held-out shapes rendered only to
    measure on, never to train: the index records ``"evaluation": true``). Returns the index."""
    import time

    from kpengine.data.dataset import KeypointNetDataset
    from kpengine.io.renderset import (
        load_shard,
        save_index,
        save_shard,
        save_view_files,
        view_paths,
    )

    if split not in ("train", "val") and not (evaluation and split == "test"):
        raise DataError(
            f"training renders come from the train or val split, not {split!r}: test shapes stay unseen "
            "(an evaluation set of the test split needs evaluation=True, --evaluation on the command line)"
        )
    out = Path(out)
    bank = BackgroundBank.from_root(backgrounds, cache=1024) if backgrounds is not None else None
    background = background_source(bank)
    config = {
        "data": str(Path(root).resolve()),
        "categories": list(categories),
        "split": split,
        "views_per_shape": views_per_shape,
        "seed": seed,
        "maps": list(maps),
        "backgrounds": None if backgrounds is None else str(Path(backgrounds).resolve()),
        "background_photos": 0 if bank is None else len(bank),
        "limit": limit,
        **({"unannotated": True} if unannotated else {}),
        **({"evaluation": True} if evaluation else {}),
        "renderer": RENDERER,
        **cfg.to_json(),
    }
    shard_config = {k: v for k, v in config.items() if k not in ("categories", "limit")}
    views: list[dict] = []
    skipped: list[str] = []  # shapes that failed to render
    problems: list[str] = []  # dataset loading, one line per category (e.g. annotated models without geometry)
    stats = {"rendered_views": 0, "resumed_views": 0, "seconds_rendering": 0.0}
    for category in categories:
        t0 = time.perf_counter()
        ds = KeypointNetDataset(root, category, split)
        shapes = list(ds)[:limit] if limit is not None else list(ds)
        if unannotated and split == "train":
            shapes += unannotated_mesh_shapes(root, category)
        if ds.problems:
            problems.append(ds.problem_summary())
        log(f"{category}/{split}: {len(shapes)} shapes to render, loaded in {time.perf_counter() - t0:.1f} s")
        for shape in shapes:
            done = load_shard(out, ds.category.name, shape.model_id, shard_config)
            if done is not None:
                views += done
                stats["resumed_views"] += len(done)
                progress(len(done))
                continue
            t1 = time.perf_counter()
            shape_views = []
            try:
                for k, (sample, extra) in enumerate(render_shape_views(shape, views_per_shape, cfg, seed, background)):
                    view_id = f"{shape.model_id}_{k}"
                    paths = view_paths(ds.category.name, view_id, maps)
                    save_view_files(out, paths, sample.image, sample.mask, sample.depth, sample.normals)
                    vp = sample.viewpoint
                    shape_views.append(
                        {
                            "id": view_id,
                            "category": ds.category.name,
                            "model_id": shape.model_id,
                            "split": split,
                            **extra,
                            **paths,
                            "azimuth": round(vp.azimuth, 4),
                            "facing_azimuth": round(facing_azimuth(vp.azimuth), 4),
                            "elevation": round(vp.elevation, 4),
                            "theta": round(vp.theta, 4),
                            "distance": round(vp.distance, 6),
                            "center": sample.center.tolist(),
                            "camera": sample.camera.to_json(),
                            "keypoints": sample.keypoints.to_json(),
                        }
                    )
                    progress(1)
            except DataError as exc:
                skipped.append(f"{category}/{shape.model_id}: {exc}")
                log(f"skipped {category}/{shape.model_id}: {exc}")
                continue
            stats["seconds_rendering"] += time.perf_counter() - t1
            stats["rendered_views"] += len(shape_views)
            save_shard(out, ds.category.name, shape.model_id, shard_config, shape_views)
            views += shape_views
        if category != categories[-1]:  # a usable partial set while the rest renders
            save_index(out, config, views, CONVENTIONS, complete=False)
    index = save_index(out, config, views, CONVENTIONS)
    return {
        "views": len(views),
        "skipped": skipped,
        "problems": problems,
        **stats,
        "index": str(out / "index.json"),
        "config": config,
        "_index": index,
    }
