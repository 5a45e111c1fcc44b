"""From one photo to pixel-level semantics (You et al. §4): the 2D-3D-2D pipeline.

photo (+ optional mask)
  -> mask (the silhouette network, when no mask is given)
  -> viewpoint (the viewpoint network on the object crop: azimuth, elevation, confidence)
  -> shape (the nearest annotated shapes of the knowledge base: by the joint image-shape
     embedding when a run is given, else by silhouette IoU at the estimated viewpoint)
  -> semantics on the shape (keypoints transferred by the dense contrastive embedding and the
     per-point embedding, when an embedding run is given; the shape's own annotation otherwise)
  -> pose refinement (soft silhouette against the mask, :mod:`kpengine.render.refine`; the
     paper's ~20 steps)
  -> projection with depth-buffer visibility -> 2D keypoints with names and confidences, a
     per-pixel semantic-id map, an embedding map, an overlay picture.

A keypoint's ``confidence`` is its transfer confidence (cosine similarity to the semantic id's
prototype, 1 for annotated keypoints) times the final silhouette IoU of the fitted shape: a
keypoint is only as trustworthy as the shape and pose it was projected with.
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
from kpengine.image.tasks import image_task
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, fit_distance, make_camera, rt_to_viewpoint

log = logging.getLogger(__name__)

IMAGE_TASKS = ("viewpoint", "silhouette")


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
    """The trained networks the pipeline uses; ``viewpoint`` is required, the others optional."""

    viewpoint: torch.nn.Module
    silhouette: torch.nn.Module | None = None
    silhouette_size: int = 64
    embedding: Any = None  # (KeypointModel, Prototypes) of a learn embedding run
    runs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_runs(cls, runs: list[str | Path], category: str, knowledge: str | Path) -> Networks:
        """Sort run directories by the task they were trained for; each must be of ``category``."""
        by_task: dict[str, Path] = {}
        for r in runs:
            task, cat = run_task(r)
            if cat != category:
                raise DataError(f"run was trained on category {cat!r}; it cannot understand {category!r}", path=r)
            if task in by_task:
                raise DataError(f"two {task} runs given ({by_task[task]} and {r}); pass one", path=r)
            by_task[task] = Path(r)
        if "viewpoint" not in by_task:
            raise DataError(f"no viewpoint run among --runs ({', '.join(map(str, runs)) or 'none'}): train one first")
        unknown = set(by_task) - {"viewpoint", "silhouette", "embedding"}
        if unknown:
            raise DataError(f"runs of tasks {sorted(unknown)} are not used by understand")
        vp, _ = load_image_run(by_task["viewpoint"], "viewpoint", category)
        net = cls(vp, runs={k: str(v) for k, v in by_task.items()})
        if "silhouette" in by_task:
            net.silhouette, st = load_image_run(by_task["silhouette"], "silhouette", category)
            net.silhouette_size = int(st["config"]["size"])
        if "embedding" in by_task:
            from kpengine.learn.inference import load_run
            from kpengine.learn.transfer import Prototypes

            model, state = load_run(by_task["embedding"], task="embedding", category=category)
            net.embedding = (model, Prototypes.for_run(by_task["embedding"], model, state, knowledge))
        return net


# ---------------------------------------------------------------------------------------------- shapes


@dataclass
class KnowledgeBase:
    """Annotated shapes of one category that have meshes (the pipeline renders and refines meshes)."""

    category: str
    shapes: list[Shape]
    names: dict[int, str]
    _meshes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | Path, category: str, split: str = "train") -> KnowledgeBase:
        ds = KeypointNetDataset(root, category, split)
        shapes = [s for s in ds if s.mesh_path is not None and Path(s.mesh_path).is_file()]
        if not shapes:
            raise DataError(
                f"category {ds.category.name!r} has no annotated shapes with meshes in split {split!r} "
                f"({len(ds)} annotated, {len(ds.problems)} unusable): nothing to retrieve",
                path=root,
            )
        from kpengine.data.sample import KEYPOINT_NAMES, _is_sample_dir

        # names are known for kpengine's own sample data only; KeypointNet ids are bare numbers
        names = KEYPOINT_NAMES.get(ds.category.name, {}) if _is_sample_dir(Path(root)) else {}
        return cls(ds.category.name, shapes, dict(names))

    def name(self, sid: int) -> str:
        return self.names.get(int(sid), f"semantic id {int(sid)}")

    def mesh(self, shape: Shape):
        """(mesh, renderer, bbox centre), loaded once per shape."""
        if shape.model_id not in self._meshes:
            from kpengine.io.mesh import load_mesh
            from kpengine.render.raycast import MeshRenderer

            mesh = load_mesh(shape.mesh_path)
            center = bbox_centre(mesh.vertices)
            self._meshes[shape.model_id] = (mesh, MeshRenderer(mesh, name=str(shape.mesh_path)), center)
        return self._meshes[shape.model_id]


def _small_mask(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = mask.shape
    s = size / max(h, w)
    ws, hs = max(1, round(w * s)), max(1, round(h * s))
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((ws, hs), Image.BOX)) > 127


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def place_camera(
    renderer, center: np.ndarray, mask: np.ndarray, view: Viewpoint, fov: float, size: int = 64
) -> tuple[Camera, float]:
    """A camera at ``view``'s angles whose silhouette matches the mask's area and centroid; and its IoU.

    Renders once at a nominal distance on a ``size``-pixel copy of the mask, scales the distance by the
    square root of the area ratio and moves the principal ray to the centroid (as
    :func:`kpengine.render.refine.coarse_search` does per bin), renders again to score."""
    from kpengine.render.refine import scale_intrinsics

    small = _small_mask(mask, size)
    hs, ws = small.shape
    full = Intrinsics.from_fov(mask.shape[1], mask.shape[0], fov)
    k = scale_intrinsics(full, ws, hs)
    radius = float(np.linalg.norm(renderer.mesh.vertices - center, axis=1).max())
    d0 = fit_distance(radius, k, 0.8)
    cam = make_camera(Viewpoint(view.azimuth, view.elevation, d0, view.theta), k, center)
    r = renderer.render(cam)
    ii, jj = np.nonzero(small)
    ri, rj = np.nonzero(r.mask)
    if len(ri) and len(ii):
        s = np.sqrt(len(ii) / len(ri))
        pp = np.array([k.cx, k.cy])
        shift = np.array([jj.mean(), ii.mean()]) - (pp + s * (np.array([rj.mean(), ri.mean()]) - pp))
        z = d0 / s
        t_c = z * np.array([shift[0] / k.fx, shift[1] / k.fy, 1.0])
        cam = Camera(k, cam.R, t_c - cam.R @ center)
    iou = _iou(renderer.render(cam).mask, small)
    return Camera(full, cam.R, cam.t), iou


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
            "refine_steps": self.refine_steps,
            "mask_source": self.mask_source,
            "retrieved": self.retrieved,
            "seconds": self.seconds,
        }

    shape_center: np.ndarray = field(default_factory=lambda: np.zeros(3))


# ---------------------------------------------------------------------------------------------- pipeline


def estimate_viewpoint(net: torch.nn.Module, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The viewpoint network on the object crop (box of ``mask``), averaged with its mirror image."""
    import torch.nn.functional as F

    from kpengine.image.crops import crop_square, to_tensor
    from kpengine.image.datasets import CROP_MARGIN, viewpoint_inputs
    from kpengine.image.renders import mask_box
    from kpengine.image.viewpoint import decode

    crop = to_tensor(crop_square(image, mask_box(mask), CROP_MARGIN, 96)[None])
    with torch.no_grad():
        a = net(viewpoint_inputs(crop, net.size))
        b = net(viewpoint_inputs(crop, net.size, flip=torch.ones(1, dtype=torch.bool)))
    pa = 0.5 * (F.softmax(a["azimuth"], -1) + F.softmax(b["azimuth"], -1).flip(-1))
    pe = 0.5 * (F.softmax(a["elevation"], -1) + F.softmax(b["elevation"], -1))
    d = decode({"azimuth": torch.log(pa.clamp_min(1e-12)), "elevation": torch.log(pe.clamp_min(1e-12))})
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
    }


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
    shape_override: str | None = None,
    semantic_radius: float = 0.08,
) -> Understanding:
    """Run the pipeline on one photo (H, W, 3) uint8. ``mask`` (H, W) bool skips the silhouette network.

    ``viewpoint_override`` / ``shape_override`` (a model id of the knowledge base) replace the
    network's estimate and the retrieval: the ablations with ground truth."""
    from kpengine.render.project import dense_point_map, embedding_map, project_points, semantic_map
    from kpengine.render.refine import PoseRefiner

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

    t = time.perf_counter()
    vp = estimate_viewpoint(nets.viewpoint, image, mask)
    secs["viewpoint"] = time.perf_counter() - t
    view = viewpoint_override or Viewpoint(vp["azimuth"], vp["elevation"], 1.0, vp["theta"])

    # retrieval: silhouette IoU of every knowledge shape placed at the estimated viewpoint
    t = time.perf_counter()
    scored = []
    for s in knowledge.shapes:
        if shape_override is not None and s.model_id != shape_override:
            continue
        _, renderer, center = knowledge.mesh(s)
        cam, iou = place_camera(renderer, center, mask, view, fov)
        scored.append((iou, s, cam))
    if not scored:
        raise DataError(f"shape {shape_override!r} is not in the knowledge base")
    scored.sort(key=lambda x: -x[0])
    retrieved = [{"model_id": s.model_id, "silhouette_iou": round(iou, 4)} for iou, s, _ in scored[:top]]
    secs["retrieval"] = time.perf_counter() - t

    # pose: the best shape from the estimated view, and from the runner-up azimuth mode when the network is unsure
    t = time.perf_counter()
    iou0, shape, cam0 = scored[0]
    mesh, renderer, center = knowledge.mesh(shape)
    starts = [(iou0, cam0)]
    if viewpoint_override is None and vp["confidence"] < 0.5:
        alt = Viewpoint(vp["second_azimuth"], view.elevation, 1.0, view.theta)
        cam_alt, iou_alt = place_camera(renderer, center, mask, alt, fov)
        starts.append((iou_alt, cam_alt))
    best = None
    for iou_s, cam_s in starts:
        cand = (iou_s, cam_s, cam_s, iou_s)
        if refine and steps > 0:
            # the coarse-to-fine blur can walk away from an already good start in a few steps:
            # keep whichever of start and refinement fits the mask better at full resolution
            r = PoseRefiner(mesh, center=center).refine(mask, cam_s, steps=steps, size=refine_size, fit_focal=True)
            full_start = _iou(renderer.render(cam_s).mask, mask)
            full_refined = _iou(renderer.render(r.camera).mask, mask)
            cand = (
                (full_refined, cam_s, r.camera, iou_s)
                if full_refined > full_start
                else (full_start, cam_s, cam_s, iou_s)
            )
        if best is None or cand[0] > best[0]:
            best = cand
    _, cam_init, camera, iou_init = best
    secs["refine"] = time.perf_counter() - t

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
    iou_final = _iou(render.mask, mask)
    proj = project_points(kp_xyz, camera, render.depth)
    pmap = dense_point_map(render, points.astype(np.float32))
    sem = semantic_map(pmap, points, kp_xyz, kp_ids, radius=semantic_radius)
    emap = embedding_map(pmap, emb.astype(np.float32)) if emb is not None else None
    keypoints = {}
    for k, sid in enumerate(kp_ids.tolist()):
        uv = proj.uv[k]
        keypoints[str(sid)] = {
            "uv": [round(float(uv[0]), 2), round(float(uv[1]), 2)] if np.isfinite(uv).all() else None,
            "visible": bool(proj.visible[k]),
            "confidence": round(float(kp_conf[k]) * iou_final, 4),
            "name": knowledge.name(sid),
        }
    secs["projection"] = time.perf_counter() - t
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
        keypoints=keypoints,
        semantic_map=sem,
        embedding_map=emap,
        object_mask=render.mask,
        seconds=secs,
    )
    out.shape_center = np.asarray(center, np.float64)
    return out


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
