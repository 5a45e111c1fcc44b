"""From one photo to pixel-level semantics (You et al. §4): the 2D-3D-2D pipeline.

photo (+ optional mask)
  -> mask (the silhouette network, when no mask is given)
  -> viewpoint (the viewpoint network on the object crop: azimuth, elevation, confidence)
  -> shape (the nearest annotated shapes of the knowledge base: by the joint image-shape
     embedding when a run is given, else by silhouette IoU at the estimated viewpoint; or, with
     ``shape_route="reconstruct"``, the photo's own shape from 2.5D sketches -> voxels -> marching
     cubes (:mod:`kpengine.image.reconstruct`); ``"both"`` keeps whichever fits the mask better)
  -> semantics on the shape (keypoints transferred by the dense contrastive embedding and the
     per-point embedding, when an embedding run is given; the shape's own annotation otherwise)
  -> pose refinement (soft silhouette against the mask, :mod:`kpengine.render.refine`; the
     paper's ~20 steps)
  -> projection with depth-buffer visibility -> 2D keypoints with names and confidences, a
     per-pixel semantic-id map, an embedding map, an overlay picture;
  -> with a keypoint-heatmap run: the heatmap network's agreement with each pose hypothesis's
     projected keypoints helps choose among them, and each id's projection is fused with the
     heatmap's distribution (:mod:`kpengine.image.fusion`; departures from the paper,
     docs/understanding.md, "2D-3D fusion").

A keypoint's ``confidence`` is its transfer confidence (cosine similarity to the semantic id's
prototype, 1 for annotated keypoints) times the final silhouette IoU of the fitted shape times the
pose's confidence (:func:`kpengine.image.poses.pose_confidence`: the chosen start's share of the viewpoint
distribution's mass among the starts tried; 1 with a single start): a keypoint is only as
trustworthy as the shape and pose it was projected with, and a bathtub whose network puts 0.55 on
a view and 0.45 on its half turn has its ids at the right end with about that probability.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.geometry.transforms import bbox_centre
from kpengine.image.fusion import FUSION_MODES, FUSION_SIGMA
from kpengine.image.poses import (
    POSE_HYPOTHESES,
    SCREEN_STEPS,
    SWITCH_MARGIN,
    PoseHypothesis,
    ShapeCandidate,
    place_camera,
    pose_confidence,
    select_pose,
    viewpoint_hypotheses,
)
from kpengine.image.tasks import image_task
from kpengine.render.cameras import Camera, Viewpoint, rt_to_viewpoint
from kpengine.render.refine import silhouette_iou

log = logging.getLogger(__name__)

IMAGE_TASKS = ("viewpoint", "silhouette", "keypoint_heatmap")
RECONSTRUCTION_TASKS = ("sketch", "voxels")
#: where ``understand`` takes the object's shape from
SHAPE_ROUTES = ("retrieve", "reconstruct", "both")
#: where the viewpoint comes from: the RGB crop (the viewpoint run, else the sketch network's head)
#: or the predicted 2.5D sketches (the voxel network's head), the paper's Table 5
VIEWPOINT_SOURCES = ("rgb", "sketches")
#: the re-placed cone's half-turn hedge (cone weight w, half-turn share h; :func:`refit_cone`), or None: the
#: runs averaged alike. w = 3/4 with h from the sketch-encoding run's viewpoint head ("sketches", the front/back
#: cue) won on val renders by rules fixed beforehand and then on the test renders: +0.006 / +0.009 IoU at 32³ over
#: the runs averaged alike, +0.002 / +0.001 over the constant h = 1/6 (docs/reconstruction.md, eighth pass)
CONE_HEDGE: tuple[float, float | str] | None = (0.75, "sketches")
#: the half turn's share where the sketch-encoding run has no viewpoint head: the constant hedge chosen on val
HALF_TURN_SHARE = 1.0 / 6.0


# ---------------------------------------------------------------------------------------------- runs


def load_image_run(run: str | Path, task: str, category: str | None = None) -> tuple[torch.nn.Module, dict]:
    """The network of an image run (eval mode) and its checkpoint state; refuses another task or category."""
    from kpengine.learn.checkpoint import load_checkpoint

    state = load_checkpoint(Path(run) / "last.pt", task=task, category=category)
    if task not in IMAGE_TASKS:
        raise DataError(f"no image network for task {task!r}; choose one of {', '.join(IMAGE_TASKS)}")
    return image_task(task).load_model(state), state


def run_task(run: str | Path) -> tuple[str, str]:
    """(task, category) a run directory was trained for, read from its checkpoint's config."""
    from kpengine.learn.checkpoint import load_checkpoint

    run = Path(run)
    for name in ("last.pt", "best.pt"):
        if (run / name).is_file():
            cfg = load_checkpoint(run / name)["config"]
            return str(cfg["task"]), str(cfg["category"])
    raise DataError("no checkpoint here (train first, or check the run path)", path=run)


@dataclass
class Networks:
    """The trained networks the pipeline uses: a viewpoint network, or the reconstruction pair
    (``sketch`` and ``voxels``, whose heads give the viewpoint); the others optional."""

    viewpoint: torch.nn.Module | None
    silhouette: torch.nn.Module | None = None
    silhouette_size: int = 64
    embedding: Any = None  # (KeypointModel, Prototypes) of a learn embedding run
    runs: dict[str, str] = field(default_factory=dict)
    sketch: torch.nn.Module | None = None  # reconstruction: the sketch and voxels runs' networks
    voxels: torch.nn.Module | list[torch.nn.Module] | None = None  # several: averaged
    retriever: Any = None  # kpengine.image.retrieval.retrieve.Retriever of an image-embedding run
    heatmap: torch.nn.Module | None = None  # a keypoint_heatmap run's network: the 2D evidence the fusion uses
    heatmap_size: int = 64

    @classmethod
    def from_runs(cls, runs: list[str | Path], category: str, knowledge: str | Path) -> Networks:
        """Sort run directories by the task they were trained for; each must be of ``category``."""
        by_task: dict[str, Path] = {}
        more_voxels: list[Path] = []  # several voxels runs: their probabilities averaged (reconstruct_photo)
        for r in runs:
            task, cat = run_task(r)
            if task in RECONSTRUCTION_TASKS and category in [c.strip() for c in cat.split(",")]:
                cat = category  # one reconstruction network may serve several categories
            if cat != category:
                raise DataError(f"run was trained on category {cat!r}; it cannot understand {category!r}", path=r)
            if task == "voxels" and task in by_task:
                more_voxels.append(Path(r))
                continue
            if task in by_task:
                raise DataError(f"two {task} runs given ({by_task[task]} and {r}); pass one", path=r)
            by_task[task] = Path(r)
        recon = [t for t in RECONSTRUCTION_TASKS if t in by_task]
        if recon and len(recon) < 2:
            other = ({*RECONSTRUCTION_TASKS} - {*recon}).pop()
            raise DataError(f"a {recon[0]} run without a {other} run: reconstruction needs both")
        if "viewpoint" not in by_task and not recon:
            raise DataError(f"no viewpoint run among --runs ({', '.join(map(str, runs)) or 'none'}): train one first")
        used = {"viewpoint", "silhouette", "embedding", "image_embedding", "keypoint_heatmap", *RECONSTRUCTION_TASKS}
        unknown = set(by_task) - used
        if unknown:
            raise DataError(f"runs of tasks {sorted(unknown)} are not used by understand")
        vp = load_image_run(by_task["viewpoint"], "viewpoint", category)[0] if "viewpoint" in by_task else None
        net = cls(vp, runs={k: str(v) for k, v in by_task.items()})
        if recon:
            from kpengine.image.reconstruct.photo import load_network

            net.sketch = load_network(by_task["sketch"], "sketch", category=category)
            net.voxels = load_network(by_task["voxels"], "voxels", category=category)
            if more_voxels:
                net.voxels = [net.voxels, *(load_network(v, "voxels", category=category) for v in more_voxels)]
                net.runs["voxels"] = ", ".join(map(str, [by_task["voxels"], *more_voxels]))
        if "image_embedding" in by_task:
            from kpengine.image.retrieval.retrieve import Retriever

            net.retriever = Retriever.from_run(by_task["image_embedding"], category)
        if "silhouette" in by_task:
            net.silhouette, st = load_image_run(by_task["silhouette"], "silhouette", category)
            net.silhouette_size = int(st["config"]["size"])
        if "keypoint_heatmap" in by_task:
            net.heatmap, st = load_image_run(by_task["keypoint_heatmap"], "keypoint_heatmap", category)
            net.heatmap_size = int(st["config"]["size"])
        if "embedding" in by_task:
            from kpengine.learn.inference import load_run
            from kpengine.learn.transfer import Prototypes

            model, state = load_run(by_task["embedding"], task="embedding", category=category)
            net.embedding = (model, Prototypes.for_run(by_task["embedding"], model, state, knowledge))
        return net


# ---------------------------------------------------------------------------------------------- shapes


@dataclass
class KnowledgeBase:
    """Annotated shapes of one category. The pipeline renders and refines meshes: a shape's own mesh where
    it has one, else a surface reconstructed from its cloud (bathtub and bed have only the official
    2,048-point clouds): :func:`cloud_surface`. ``donors``: every annotated shape, whose keypoints a
    reconstruction may take (it needs no mesh of them)."""

    category: str
    shapes: list[Shape]
    names: dict[int, str]
    _meshes: dict[str, Any] = field(default_factory=dict)
    donors: list[Shape] = field(default_factory=list)

    @classmethod
    def load(
        cls, root: str | Path, category: str, split: str = "train", require_meshes: bool = True, clouds: bool = True
    ) -> KnowledgeBase:
        """``clouds`` False keeps only the shapes with a mesh file; ``require_meshes=False`` accepts a category
        with no such shape (only the reconstruction route works)."""
        ds = KeypointNetDataset(root, category, split)
        donors = list(ds)
        shapes = [s for s in donors if _has_mesh(s) or (clouds and s.source == "pcd" and len(s.points))]
        if not shapes and (require_meshes or not donors):
            raise DataError(
                f"category {ds.category.name!r} has no annotated shapes with meshes{' or clouds' if clouds else ''} "
                f"in split {split!r} ({len(ds)} annotated, {len(ds.problems)} unusable): nothing to retrieve",
                path=root,
            )
        from kpengine.data.sample import KEYPOINT_NAMES, _is_sample_dir

        # names are known for kpengine's own sample data only; KeypointNet ids are bare numbers
        names = KEYPOINT_NAMES.get(ds.category.name, {}) if _is_sample_dir(Path(root)) else {}
        return cls(ds.category.name, shapes, dict(names), donors=donors)

    def name(self, sid: int) -> str:
        return self.names.get(int(sid), f"semantic id {int(sid)}")

    def mesh(self, shape: Shape):
        """(mesh, renderer, bbox centre), loaded once per shape."""
        if shape.model_id not in self._meshes:
            from kpengine.io.mesh import load_mesh
            from kpengine.render.raycast import MeshRenderer

            mesh = load_mesh(shape.mesh_path) if _has_mesh(shape) else cloud_surface(shape.points)
            center = bbox_centre(mesh.vertices)
            self._meshes[shape.model_id] = (mesh, MeshRenderer(mesh, name=str(shape.mesh_path)), center)
        return self._meshes[shape.model_id]


def _has_mesh(shape: Shape) -> bool:
    return shape.mesh_path is not None and Path(shape.mesh_path).is_file()


def cloud_surface(points: np.ndarray, resolution: int = 32):
    """A closed surface (:class:`~kpengine.io.mesh.Mesh`) around a surface cloud (N, 3): its 32³ occupancy
    (one closing seals the gaps between 2,048 points, :func:`kpengine.geometry.voxelize.voxelize_cloud`),
    then marching cubes. Silhouettes and depth are what the pipeline needs of a shape; the voxel
    grid is where a 2,048-point cloud still gives a watertight surface (docs/understanding.md)."""
    from kpengine.geometry.voxelize import voxelize_cloud, voxels_to_mesh

    occ, grid = voxelize_cloud(np.asarray(points, np.float64), resolution)
    return voxels_to_mesh(occ, grid)


# ---------------------------------------------------------------------------------------------- result


@dataclass
class Understanding:
    """Everything ``understand`` found for one photo."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool, given or predicted
    mask_source: str
    viewpoint: dict[str, float]  # the network's estimate: azimuth, elevation, theta, confidence
    retrieved: list[dict[str, Any]]  # model_id, score, best first
    shape: Shape
    camera_initial: Camera
    camera: Camera
    iou_initial: float
    iou_refined: float
    refine_steps: int
    keypoints: dict[str, dict[str, Any]]  # semantic id -> uv, visible, confidence, name
    semantic_map: np.ndarray  # (H, W) int64, -1 off-object or far from every keypoint
    embedding_map: np.ndarray | None  # (H, W, D) float32 or None
    object_mask: np.ndarray  # (H, W) bool, the fitted shape's silhouette
    seconds: dict[str, float]
    hypotheses: list[PoseHypothesis] = field(default_factory=list)  # every start tried; one is chosen

    def pose_json(self) -> dict[str, Any]:
        center = np.asarray(self.shape_center, np.float64)
        v = rt_to_viewpoint(self.camera.R, self.camera.t, center)
        v0 = rt_to_viewpoint(self.camera_initial.R, self.camera_initial.t, center)
        return {
            "azimuth": v.azimuth,
            "elevation": v.elevation,
            "theta": v.theta,
            "distance": v.distance,
            "camera": self.camera.to_json(),
            "center": center.tolist(),
            "model_id": self.shape.model_id,
            "category": self.shape.category.name,
            "network_viewpoint": self.viewpoint,
            "initial": {"azimuth": v0.azimuth, "elevation": v0.elevation, "theta": v0.theta, "iou": self.iou_initial},
            "refined_iou": self.iou_refined,
            "pose_confidence": round(pose_confidence(self.hypotheses), 4),
            "refine_steps": self.refine_steps,
            "hypotheses": [h.to_json() for h in self.hypotheses],
            "mask_source": self.mask_source,
            "shape_source": self.shape_source,
            "retrieved": self.retrieved,
            "seconds": self.seconds,
        }

    shape_center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    shape_source: str = "retrieval"


# ---------------------------------------------------------------------------------------------- pipeline


def estimate_viewpoint(net: torch.nn.Module, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The viewpoint network on the object crop (box of ``mask``), averaged with its mirror image; grey
    outside the box where the run was trained so (``net.blank_outside_box``, EPFL cars' recipe)."""

    from kpengine.image.crops import crop_square, to_tensor
    from kpengine.image.datasets import CROP_MARGIN, viewpoint_inputs
    from kpengine.image.renders import mask_box
    from kpengine.image.viewpoint import decode, mirror_average, with_half

    box = mask_box(mask)
    crop = to_tensor(crop_square(image, box, CROP_MARGIN, 96)[None])
    if getattr(net, "blank_outside_box", False):
        from kpengine.image.instance_cues import blank_outside_box

        blank_outside_box(crop, [box], CROP_MARGIN)
    with torch.no_grad():
        a = net(viewpoint_inputs(crop, net.size))
        b = net(viewpoint_inputs(crop, net.size, flip=torch.ones(1, dtype=torch.bool)))
    avg = mirror_average(a, b)
    pa = torch.exp(avg["azimuth"])
    if "half" in avg:  # the front/back head of a car-style run weighs the modes before they are read
        pa = with_half(pa, avg["half"])
    d = decode(avg)
    second = pa[0].clone()
    top = int(pa[0].argmax())
    for off in (-2, -1, 0, 1, 2):  # the runner-up mode lies outside the winner's neighbourhood
        second[(top + off) % pa.shape[1]] = 0
    alt_bin = int(second.argmax())
    return {
        "azimuth": float(d["azimuth"][0]),
        "elevation": float(d["elevation"][0]),
        "theta": 0.0,
        "confidence": float(d["confidence"][0]),
        "second_azimuth": float((alt_bin + 0.5) * 360.0 / pa.shape[1]),
        "second_probability": float(second[alt_bin] + second[(alt_bin - 1) % 24] + second[(alt_bin + 1) % 24]),
        "azimuth_probabilities": [round(float(x), 6) for x in pa[0]],
    }


def _embedding_pool(
    nets: Networks, image: np.ndarray, mask: np.ndarray, knowledge: KnowledgeBase, top: int
) -> tuple[list[Shape], dict[str, float]]:
    """The ``top`` knowledge shapes nearest to the photo in the joint embedding, nearest first, and their
    distances (:mod:`kpengine.image.retrieval`)."""
    if nets.retriever is None:
        raise DataError("--retrieval embedding needs an image-embedding run among --runs")
    known = set(nets.retriever.model_ids)
    by_id = {s.model_id: s for s in knowledge.shapes if s.model_id in known}
    if not by_id:
        raise DataError(
            f"no {knowledge.category} shape of the knowledge base is in the image-embedding run's shape space"
        )
    ranked = nets.retriever.rank(image, mask, list(by_id))[: max(top, 1)]
    return [by_id[m] for m, _ in ranked], dict(ranked)


def understand(
    image: np.ndarray,
    knowledge: KnowledgeBase,
    nets: Networks,
    *,
    mask: np.ndarray | None = None,
    top: int = 3,
    steps: int = 20,
    fov: float = 30.0,
    refine_size: int = 64,
    refine: bool = True,
    viewpoint_override: Viewpoint | None = None,
    shape_override: str | Any | None = None,
    semantic_radius: float = 0.08,
    shape_route: str = "retrieve",
    viewpoint_source: str = "rgb",
    sketches_override: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    retrieval: str = "silhouette",
    pose_hypotheses: int = POSE_HYPOTHESES,
    screen_steps: int = SCREEN_STEPS,
    switch_margin: float = SWITCH_MARGIN,
    fusion: str = "prior",
    fusion_sigma: float = FUSION_SIGMA,
    heatmap_choice: bool = True,
    rechoose: bool = True,
    cone_refit: bool = True,
    cone_hedge: tuple[float, float | str] | None = CONE_HEDGE,
) -> Understanding:
    """Run the pipeline on one photo (H, W, 3) uint8. ``mask`` (H, W) bool skips the silhouette network.

    ``shape_route``: ``"retrieve"`` (the knowledge base's nearest shape), ``"reconstruct"`` (the
    photo's own shape, :func:`reconstructed_shape`) or ``"both"`` (each posed and refined, the
    better fit to the mask kept); ``viewpoint_source``: one of :data:`VIEWPOINT_SOURCES`.
    ``viewpoint_override`` / ``shape_override`` (a model id of the knowledge base, or a
    :class:`ShapeCandidate`: the true shape) / ``sketches_override`` (the crop's true sketches, for
    the reconstruction) replace the networks' estimates: the ablations with ground truth.
    ``retrieval``: ``"silhouette"`` (every shape placed at the estimated view, ranked by mask IoU) or
    ``"embedding"`` (the ``top`` nearest in the joint embedding of an image-embedding run, in its order).
    ``pose_hypotheses``: how many starting viewpoints (:func:`viewpoint_hypotheses`; 1 = the network's
    estimate only, the paper's one refinement); with more, each is refined ``screen_steps`` steps,
    the most probable kept unless another fits the mask better by more than ``switch_margin`` IoU, and
    refined to ``steps`` in all, a challenger finished beside the first before the choice stands
    (:func:`select_pose`; ``rechoose=False``: the screen decides alone). ``fusion``: with a heatmap
    network among ``nets``, ``"prior"`` places each id at the heatmap's arg-max under a Gaussian of
    ``fusion_sigma`` x the mask box's long side around its projection, and ids the shape lacks at the heatmap's arg-max
    (:func:`kpengine.image.fusion.fuse_keypoints`), and the heatmap's agreement with each pose
    hypothesis joins the silhouette in choosing among them (:func:`select_pose`; ``heatmap_choice=False``
    leaves the choice to the silhouette); ``"projection"`` uses no heatmap: the projections as they
    are (the paper). ``cone_refit``: when the reconstruction of a back-projecting (cone) run is chosen,
    its cone is placed again at the refined pose and the new shape refined from there
    (:func:`refit_cone`; not with ``viewpoint_override``, whose viewpoint is the cone's already);
    ``cone_hedge`` ``(w, h)``: when the voxels runs are a cone run and a sketch-encoding one (the measured
    route), that rebuilt reconstruction gives the cone runs the weight w, a share h of it to the cone at the
    refined pose's half turn, or ``"sketches"``: h from the sketch-encoding run's viewpoint head (None: the
    runs averaged alike, the cone at the pose only)."""
    if fusion not in FUSION_MODES:
        raise DataError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSION_MODES)}")
    if not 0.0 < float(fusion_sigma) <= 1.0:
        raise DataError(f"fusion_sigma is a fraction of the object box's long side in (0, 1], got {fusion_sigma!r}")
    if isinstance(pose_hypotheses, bool) or not isinstance(pose_hypotheses, int) or pose_hypotheses < 1:
        raise DataError(f"pose_hypotheses must be a whole number >= 1, got {pose_hypotheses!r}")
    if isinstance(screen_steps, bool) or not isinstance(screen_steps, int) or screen_steps < 1:
        raise DataError(f"screen_steps must be a whole number >= 1, got {screen_steps!r}")
    if not 0.0 <= float(switch_margin) <= 1.0:
        raise DataError(f"switch_margin is an IoU difference in [0, 1], got {switch_margin!r}")
    from kpengine.render.project import dense_point_map, embedding_map, project_points, semantic_map

    secs: dict[str, float] = {}
    t = time.perf_counter()
    h, w = image.shape[:2]
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != (h, w):
            raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]}, the photo {w}x{h}")
        source = "given"
    elif nets.silhouette is not None:
        from kpengine.image.datasets import predict_mask

        mask = predict_mask(nets.silhouette, image, nets.silhouette_size)
        source = "silhouette network"
    else:
        raise DataError("no mask given and no silhouette run among the runs: pass --mask or a silhouette run")
    if not mask.any():
        raise DataError("the object mask is empty: no object found in the photo")
    secs["mask"] = time.perf_counter() - t

    if shape_route not in SHAPE_ROUTES:
        raise DataError(f"unknown shape route {shape_route!r}; choose one of {', '.join(SHAPE_ROUTES)}")
    if viewpoint_source not in VIEWPOINT_SOURCES:
        raise DataError(f"unknown viewpoint source {viewpoint_source!r}; choose {' or '.join(VIEWPOINT_SOURCES)}")
    recon = early_vp = None
    if shape_route != "retrieve" or viewpoint_source == "sketches" or nets.viewpoint is None:
        if nets.sketch is None or nets.voxels is None:
            raise DataError("the reconstruction route needs a sketch run and a voxels run among --runs")
        from kpengine.image.reconstruct.nets import CompletionNet
        from kpengine.image.reconstruct.photo import reconstruct_photo, voxel_nets

        t = time.perf_counter()
        at = None  # a back-projecting voxels run places the sketches at the viewpoint: estimated first
        if any(isinstance(n, CompletionNet) for n in voxel_nets(nets.voxels)):
            if viewpoint_override is not None:
                at = {"azimuth": viewpoint_override.azimuth, "elevation": viewpoint_override.elevation}
            elif nets.viewpoint is not None and viewpoint_source != "sketches":
                early_vp = estimate_viewpoint(nets.viewpoint, image, mask)
                at = early_vp
        recon = reconstruct_photo(image, nets.sketch, nets.voxels, mask, category=knowledge.category,
                                  sketches=sketches_override, viewpoint=at, fov=fov)  # fmt: skip
        secs["reconstruction"] = time.perf_counter() - t
    t = time.perf_counter()
    if viewpoint_source == "sketches":
        vp = _head_viewpoint(recon.view_sketches, "the voxels run")
    elif early_vp is not None:
        vp = early_vp
    elif nets.viewpoint is not None:
        vp = estimate_viewpoint(nets.viewpoint, image, mask)
    else:
        vp = _head_viewpoint(recon.view_rgb, "the sketch run")
    secs["viewpoint"] = time.perf_counter() - t
    view = viewpoint_override or Viewpoint(vp["azimuth"], vp["elevation"], 1.0, vp["theta"])
    hyps = [(view, float("nan"), "given" if viewpoint_override else "estimate")]
    if viewpoint_override is None:
        hyps = viewpoint_hypotheses(vp, pose_hypotheses)
        view = hyps[0][0]  # retrieval places the shapes at the most probable start

    t = time.perf_counter()
    cands: list[ShapeCandidate] = []
    retrieved: list[dict[str, Any]] = []
    if isinstance(shape_override, ShapeCandidate):
        cands.append(shape_override)
    elif shape_route != "reconstruct":
        # retrieval: silhouette IoU of every knowledge shape placed at the estimated viewpoint
        pool, dist = knowledge.shapes, {}
        if retrieval == "embedding" and shape_override is None:
            pool, dist = _embedding_pool(nets, image, mask, knowledge, top)
        elif retrieval not in ("silhouette", "embedding"):
            raise DataError(f"unknown retrieval {retrieval!r}; choose silhouette or embedding")
        scored = []
        for s in pool:
            if shape_override is not None and s.model_id != shape_override:
                continue
            _, renderer, center = knowledge.mesh(s)
            cam, iou = place_camera(renderer, center, mask, view, fov)
            scored.append((iou, s, cam))
        if not scored:
            what = f"shape {shape_override!r} is not" if shape_override else "no shape with a mesh is"
            raise DataError(f"{what} in the knowledge base to retrieve ({knowledge.category})")
        if not dist:  # the embedding's order stands; silhouette retrieval ranks by IoU
            scored.sort(key=lambda x: -x[0])
        retrieved = [
            {"model_id": s.model_id, "silhouette_iou": round(iou, 4)}
            | ({"embedding_distance": round(dist[s.model_id], 6)} if dist else {})
            for iou, s, _ in scored[:top]
        ]
        mesh, renderer, center = knowledge.mesh(scored[0][1])
        cands.append(ShapeCandidate(scored[0][1], mesh, renderer, center))
    if recon is not None and shape_route != "retrieve" and not isinstance(shape_override, ShapeCandidate):
        cands.append(reconstructed_shape(recon, knowledge))
    secs["retrieval"] = time.perf_counter() - t

    # the heatmap network's evidence: it helps choose the pose and places the final keypoints
    evidence = None
    if nets.heatmap is not None and fusion == "prior":
        from kpengine.image.fusion import heatmap_evidence

        t = time.perf_counter()
        evidence = heatmap_evidence(nets.heatmap, image, nets.heatmap_size)
        secs["heatmap"] = time.perf_counter() - t

    # pose: every candidate shape from every viewpoint hypothesis, screened, the best finished
    t = time.perf_counter()
    tried = [
        PoseHypothesis(v, mass, kind, c, *place_camera(c.renderer, c.center, mask, v, fov))
        for c in cands
        for v, mass, kind in hyps
    ]
    best = select_pose(
        tried,
        mask,
        steps=steps if refine else 0,
        screen_steps=screen_steps,
        size=refine_size,
        margin=switch_margin,
        evidence=evidence if heatmap_choice else None,
        rechoose=rechoose,
    )
    cam_init, camera, iou_init, chosen = best.camera_start, best.camera, best.start_iou, best.shape
    shape, renderer, center = chosen.shape, chosen.renderer, chosen.center
    secs["refine"] = time.perf_counter() - t

    pose_conf = pose_confidence(tried)
    if (
        cone_refit
        and viewpoint_override is None
        and chosen.reconstructed
        and recon is not None
        and recon.camera is not None
    ):
        t = time.perf_counter()
        best, recon = refit_cone(best, image, mask, nets, knowledge, sketches_override, fov, steps if refine else 0,
                                 refine_size, cone_hedge)  # fmt: skip
        tried.append(best)
        camera, chosen = best.camera, best.shape
        shape, renderer, center = chosen.shape, chosen.renderer, chosen.center
        secs["cone_refit"] = time.perf_counter() - t

    # semantics on the shape
    t = time.perf_counter()
    points = shape.points.astype(np.float64)
    emb = None
    if nets.embedding is not None:
        from kpengine.learn.inference import infer

        model, protos = nets.embedding
        res = protos.transfer(model, shape.points)
        ids = np.nonzero(res.present)[0]
        kp_xyz, kp_ids, kp_conf = points[res.index[ids]], ids.astype(np.int64), res.confidence[ids]
        emb = infer(model, [shape.points])[0]
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    else:
        kp_xyz, kp_ids = shape.keypoints.astype(np.float64), shape.semantic_ids.astype(np.int64)
        kp_conf = np.ones(len(kp_ids))
    secs["semantics"] = time.perf_counter() - t

    # projection at the photo's resolution
    t = time.perf_counter()
    render = renderer.render(camera)
    iou_final = silhouette_iou(render.mask, mask)
    proj = project_points(kp_xyz, camera, render.depth)
    pmap = dense_point_map(render, points.astype(np.float32))
    sem = semantic_map(pmap, points, kp_xyz, kp_ids, radius=semantic_radius)
    emap = embedding_map(pmap, emb.astype(np.float32)) if emb is not None else None
    keypoints = {}
    for k, sid in enumerate(kp_ids.tolist()):
        uv = proj.uv[k]
        keypoints[str(sid)] = {
            "uv": _rounded(uv),
            "visible": bool(proj.visible[k]),
            "confidence": round(float(kp_conf[k]) * iou_final * pose_conf, 4),
            "name": knowledge.name(sid),
        }
    secs["projection"] = time.perf_counter() - t
    if evidence is not None:
        t = time.perf_counter()
        keypoints = _fused(keypoints, proj.uv, kp_ids, mask, evidence, fusion_sigma, knowledge)
        secs["fusion"] = time.perf_counter() - t
    out = Understanding(
        image=image,
        mask=mask,
        mask_source=source,
        viewpoint=vp,
        retrieved=retrieved,
        shape=shape,
        camera_initial=cam_init,
        camera=camera,
        iou_initial=iou_init,
        iou_refined=iou_final,
        refine_steps=steps if refine else 0,
        hypotheses=tried,
        keypoints=keypoints,
        semantic_map=sem,
        embedding_map=emap,
        object_mask=render.mask,
        seconds=secs,
    )
    out.shape_center = np.asarray(center, np.float64)
    out.shape_source = "reconstruction" if chosen.reconstructed else "retrieval"
    return out


def _rounded(uv: np.ndarray) -> list[float] | None:
    return [round(float(uv[0]), 2), round(float(uv[1]), 2)] if np.isfinite(uv).all() else None


def _fused(
    keypoints: dict[str, dict[str, Any]],
    uv: np.ndarray,
    ids: np.ndarray,
    mask: np.ndarray,
    ev: Any,
    sigma: float,
    knowledge: KnowledgeBase,
) -> dict[str, dict[str, Any]]:
    """The projected ``keypoints`` with each id moved by the heatmap evidence ``ev``
    (:func:`kpengine.image.fusion.fuse_keypoints`,
    the prior's sigma ``sigma`` x the mask box's long side), and the ids the shape lacks added from the
    heatmap alone (visible where the heatmap says so; confidence its visibility probability). Each
    entry gains ``source`` and, where there was one, ``projected_uv``."""
    from kpengine.image.fusion import fuse_keypoints
    from kpengine.image.renders import mask_box

    _, _, bw, bh = mask_box(mask)
    out: dict[str, dict[str, Any]] = {}
    for sid, f in sorted(fuse_keypoints(ev, uv, ids, sigma * max(bw, bh)).items()):
        if f.source == "heatmap":
            pv = float(ev.visible[sid])
            entry = {"uv": _rounded(f.uv), "visible": pv > 0.5, "confidence": round(pv, 4), "name": knowledge.name(sid)}
        else:
            entry = {**keypoints[str(sid)], "uv": _rounded(f.uv), "projected_uv": _rounded(f.projected)}
        out[str(sid)] = entry | {"source": f.source}
    return out


def _head_viewpoint(view: dict[str, float] | None, what: str) -> dict[str, Any]:
    if view is None:
        raise DataError(f"{what} has no viewpoint head (retrain it with view_weight > 0) and no viewpoint run is given")
    return {**view, "theta": 0.0}


def refit_cone(
    best: PoseHypothesis,
    image: np.ndarray,
    mask: np.ndarray,
    nets: Networks,
    knowledge: KnowledgeBase,
    sketches: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    fov: float,
    steps: int,
    size: int,
    hedge: tuple[float, float | str] | None = None,
) -> tuple[PoseHypothesis, Any]:
    """The reconstruction of a back-projecting voxels run rebuilt at the refined pose (docs/reconstruction.md,
    seventh pass): its silhouette cone was placed at the viewpoint network's estimate (binned, roll 0); the
    silhouette refinement of the reconstructed mesh gives a better rotation (test renders: azimuth error
    median 62° -> 16° on bathtubs, 21° -> 15° on beds), so the cone is placed again at the refined azimuth,
    elevation and roll, completed, and the new shape posed there and refined from that start alone
    (+0.006 / +0.005 IoU at 32³ on the test renders, paired). ``hedge`` ``(w, h)``: the rebuilt grid weighs
    the cone runs w against the others, and each cone ``1 - h`` at the pose, h at its half turn (azimuth +
    180°), which the silhouette cannot tell from it (eighth pass); h ``"sketches"`` reads it off the
    sketch-encoding run's viewpoint head (:data:`HALF_TURN_SHARE` when that run has none); None, or voxels
    runs that are not both kinds (where it was not measured): the runs averaged alike. -> the new
    chosen hypothesis (kind "cone re-placed") and the new
    :class:`~kpengine.image.reconstruct.photo.Reconstruction`."""
    from kpengine.image.reconstruct.nets import CompletionNet
    from kpengine.image.reconstruct.photo import reconstruct_photo, voxel_nets

    runs = voxel_nets(nets.voxels)
    hedge = hedge if {isinstance(n, CompletionNet) for n in runs} == {True, False} else None
    if hedge is not None and hedge[1] == "sketches":
        heads = [getattr(n, "view_head", None) is not None for n in runs if not isinstance(n, CompletionNet)]
        hedge = hedge if any(heads) else (hedge[0], HALF_TURN_SHARE)
    v = rt_to_viewpoint(best.camera.R, best.camera.t, best.shape.center)
    at = {"azimuth": v.azimuth, "elevation": v.elevation, "theta": v.theta}
    recon = reconstruct_photo(image, nets.sketch, nets.voxels, mask, category=knowledge.category, sketches=sketches,
                              viewpoint=at, fov=fov, cone_weight=None if hedge is None else hedge[0],
                              half_turn=0.0 if hedge is None else hedge[1])  # fmt: skip
    cand = reconstructed_shape(recon, knowledge)
    view = Viewpoint(v.azimuth, v.elevation, 1.0, v.theta)
    start = place_camera(cand.renderer, cand.center, mask, view, fov)
    h = PoseHypothesis(view, best.mass, "cone re-placed", cand, *start)
    best.chosen = False
    return select_pose([h], mask, steps=steps, size=size), recon


def reconstructed_shape(recon: Any, knowledge: KnowledgeBase, n_points: int = 2048) -> ShapeCandidate:
    """The reconstruction's mesh as a pipeline shape: ``n_points`` surface samples, and the keypoints of
    the knowledge shape nearest to it (Chamfer distance, both centred on their box centres) moved to
    their nearest surface samples (an embedding run, when given, transfers its own keypoints later).
    The mesh (centred on 0 by the voxel grid) is moved to that shape's box centre: the knowledge
    base's frame (``model_normalized``), which the embedding network was trained in."""
    from dataclasses import replace

    from scipy.spatial import cKDTree

    from kpengine.geometry.sampling import sample_surface
    from kpengine.render.raycast import MeshRenderer

    centred = recon.mesh
    pts0 = sample_surface(centred, n_points, 0).points.astype(np.float64)
    pts0 -= bbox_centre(centred.vertices)
    tree = cKDTree(pts0)
    best, best_d = None, np.inf
    for s in knowledge.donors or knowledge.shapes:
        q = s.points - bbox_centre(s.points)
        d = tree.query(q)[0].mean() + cKDTree(q).query(pts0)[0].mean()
        if d < best_d:
            best, best_d = s, d
    center = bbox_centre(best.points).astype(np.float64)
    mesh = replace(centred, vertices=centred.vertices - bbox_centre(centred.vertices) + center)
    pts = (pts0 + center).astype(np.float32)
    idx = cKDTree(pts).query(best.keypoints - bbox_centre(best.points) + center)[1]
    shape = Shape(
        model_id="reconstruction",
        category=best.category,
        points=pts,
        colors=None,
        keypoints=pts[idx].astype(np.float32),
        semantic_ids=best.semantic_ids.copy(),
        point_indices=idx.astype(np.int64),
        symmetries=best.symmetries,
        annotation=best.annotation,
        source="mesh",
    )
    return ShapeCandidate(shape, mesh, MeshRenderer(mesh, name="reconstruction"), center, reconstructed=True)


# ---------------------------------------------------------------------------------------------- output


def semantics_picture(u: Understanding) -> np.ndarray:
    """(H, W, 3) uint8: the photo dimmed, the fitted shape in grey, semantic regions in their colours."""
    from kpengine.viz.palette import semantic_rgb

    out = (u.image.astype(np.float64) * 0.35).astype(np.uint8)
    out[u.object_mask] = 150
    hit = u.semantic_map >= 0
    out[hit] = semantic_rgb(u.semantic_map[hit])
    return out


def overlay_picture(u: Understanding) -> np.ndarray:
    """(H, W, 3) uint8: the photo, the mask's outline (white), the fitted silhouette (blue), named keypoints."""
    from kpengine.render.overlay import draw_keypoints, outline

    out = u.image.copy()
    out[outline(u.mask)] = (255, 255, 255)
    out[outline(u.object_mask)] = (40, 90, 255)
    ids = np.array([int(k) for k in u.keypoints], np.int64)
    uv = np.array(
        [v["uv"] if v["uv"] is not None else [np.nan, np.nan] for v in u.keypoints.values()], np.float64
    ).reshape(-1, 2)
    vis = np.array([v["visible"] for v in u.keypoints.values()], bool)
    names = {int(k): v["name"] for k, v in u.keypoints.items()}
    radius = max(3, round(min(out.shape[:2]) / 100))
    return draw_keypoints(out, uv, ids, vis, names, radius=radius)


def write_understanding(u: Understanding, out: str | Path) -> list[Path]:
    """``keypoints.json``, ``pose.json``, ``semantics.png``, ``overlay.png`` (and ``embedding.png`` /
    ``embedding.npy`` with an embedding run, ``mask.png`` when the mask was predicted). Pictures are
    made before anything is written, and each file is written atomically."""
    from kpengine.io.atomic import atomic_open, write_json
    from kpengine.render.overlay import save_png

    out = Path(out)
    pictures = {"semantics.png": semantics_picture(u), "overlay.png": overlay_picture(u)}
    if u.mask_source != "given":
        pictures["mask.png"] = u.mask.astype(np.uint8) * 255
    if u.embedding_map is not None:
        from kpengine.render.project import pca_rgb

        hit = u.object_mask & (np.abs(u.embedding_map).sum(-1) > 0)
        col = np.zeros((*u.mask.shape, 3), np.uint8)
        if hit.any():
            col[hit] = (pca_rgb(u.embedding_map[hit]) * 255).astype(np.uint8)
        pictures["embedding.png"] = col
    written = []
    write_json(out / "keypoints.json", u.keypoints, indent=1)
    write_json(out / "pose.json", u.pose_json(), indent=1)
    written += [out / "keypoints.json", out / "pose.json"]
    for name, pic in pictures.items():
        save_png(out / name, pic)
        written.append(out / name)
    if u.embedding_map is not None:
        with atomic_open(out / "embedding.npy", "wb") as fh:
            np.save(fh, u.embedding_map.astype(np.float16))
        written.append(out / "embedding.npy")
    return written
