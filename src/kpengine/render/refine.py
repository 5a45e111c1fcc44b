"""Refine a camera pose so that a mesh's soft silhouette matches an object mask (paper section 4.5, eq. 7).

Parameters, all starting at zero (the initial camera):
  ``omega`` (3,)  rotation vector applied in the camera frame (``R = exp([omega]x) R0``);
  ``shift`` (2,)  where the object centre ``c`` projects, in normalised image coordinates (x/z, y/z);
  ``log_scale``   apparent size: the centre's depth is ``z0 * exp(-log_scale)``.
For a perspective camera the object's scale and its distance are one degree of freedom, so
"scale" is this log-distance; the result is always an ordinary :class:`Camera`:
``Xc = R (X - c) + z (a, b, 1)``. The loss is the soft IoU loss of SoftRas
(``1 - sum(S M) / sum(S + M - S M)``), minimised with Adam while the blur ``sigma``
anneals from coarse (wide basin) to fine (accurate) and the step size decays (cosine). It
works on a small copy of the mask (``size`` pixels on the long side) and on a simplified mesh.
With ``fit_focal`` the focal length is a fourth parameter (``log_focal``, a log-factor on fx and fy).

Speed: the soft rasteriser is many small tensor operations; on a shared 2-core machine torch's
thread pool makes them several times slower (spinning threads fight other processes), so
refinement runs with ``threads=1`` torch thread and in float32 by default.

:func:`coarse_search` finds starting poses for masks with no prior camera (a real photo): it
renders the mesh with Embree from every 24 x 12 azimuth x elevation bin centre for each of a few
fields of view, fits scale and image position of each silhouette to the mask (area and
centroid), re-renders, and ranks by hard silhouette IoU. :func:`fit_pose_to_mask` refines the
best few of those and keeps the best.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from kpengine.errors import DataError
from kpengine.geometry.transforms import bbox_centre, so3_exp
from kpengine.io.mesh import Mesh
from kpengine.render.cameras import (
    AZIMUTH_BINS,
    ELEVATION_BINS,
    Camera,
    Intrinsics,
    Viewpoint,
    azimuth_bin_center,
    elevation_bin_center,
    fit_distance,
    make_camera,
    rt_to_viewpoint,
)
from kpengine.render.raycast import MeshRenderer
from kpengine.render.soft import project_torch, simplify, soft_silhouette


@dataclass
class Refinement:
    """The refined camera (at the mask's resolution), IoU of hard silhouettes before/after, loss per step."""

    camera: Camera
    iou_before: float
    iou_after: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def scale_intrinsics(k: Intrinsics, width: int, height: int) -> Intrinsics:
    """The same camera for an image resized to ``width`` x ``height`` (pixel centres at integers)."""
    sx, sy = width / k.width, height / k.height
    return Intrinsics(k.fx * sx, k.fy * sy, (k.cx + 0.5) * sx - 0.5, (k.cy + 0.5) * sy - 0.5, width, height)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily run torch with ``n`` intra-op threads (None: leave as is)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one size; 1 when both are empty (nothing to disagree on)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class PoseRefiner:
    """Fits camera poses of one mesh to masks; the mesh is simplified once."""

    def __init__(
        self,
        mesh: Mesh,
        *,
        center: np.ndarray | None = None,
        max_faces: int = 800,
        name: str = "mesh",
        dtype: torch.dtype = torch.float32,
    ):
        """``center`` (3,): the point rotations turn about and ``shift`` places (default: the bbox centre).
        ``max_faces``: the mesh is simplified to at most this many triangles for the soft silhouette."""
        if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
            raise DataError("cannot refine a pose against an empty mesh", path=name)
        if not np.isfinite(mesh.vertices).all():
            raise DataError("mesh has NaN or infinite vertices", path=name)
        self.mesh = simplify(mesh, max_faces)
        self.center = bbox_centre(mesh.vertices) if center is None else np.asarray(center, np.float64)
        self.dtype = dtype
        self._v = torch.from_numpy(self.mesh.vertices - self.center).to(dtype)
        self._f = torch.from_numpy(self.mesh.faces)

    def _camera_tensors(self, R0: torch.Tensor, a0: torch.Tensor, z0: float, omega, shift, log_scale):
        R = so3_exp(omega) @ R0
        a = a0 + shift
        z = z0 * torch.exp(-log_scale)
        return R, z * torch.cat([a, torch.ones(1, dtype=a.dtype)])

    def silhouette(
        self, R: torch.Tensor, t_c: torch.Tensor, k: Intrinsics, sigma: float, focal_gain: torch.Tensor | float = 1.0
    ) -> torch.Tensor:
        """Soft silhouette (H, W) for ``Xc = R (X - c) + t_c``, focal lengths ``k.fx, k.fy`` x ``focal_gain``."""
        R, t_c = R.to(self.dtype), t_c.to(self.dtype)
        uv = project_torch(self._v, R, t_c, k.fx * focal_gain, k.fy * focal_gain, k.cx, k.cy)
        return soft_silhouette(uv[self._f], k.height, k.width, sigma=sigma)

    def refine(
        self,
        mask: np.ndarray,
        camera: Camera,
        *,
        steps: int = 40,
        size: int = 64,
        lr: float = 0.05,
        sigma: tuple[float, float] = (3.0, 0.3),
        fit_focal: bool = False,
        threads: int | None = 1,
        mask_name: str = "mask",
    ) -> Refinement:
        """Refine ``camera`` so that the mesh's silhouette matches ``mask`` (H, W) bool of the camera's size.

        ``fit_focal``: also fit the focal length (the refined camera's intrinsics change); ``threads``:
        torch threads while refining (1 is fastest on a shared machine; None leaves torch's setting)."""
        with torch_threads(threads):
            return self._refine(mask, camera, steps, size, lr, sigma, fit_focal, mask_name)

    def _refine(self, mask, camera, steps, size, lr, sigma, fit_focal, mask_name) -> Refinement:
        start = time.perf_counter()
        mask = np.asarray(mask)
        if mask.shape != (camera.height, camera.width):
            raise DataError(
                f"mask is {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]} (W x H) but the camera is "
                f"{camera.width}x{camera.height}",
                path=mask_name,
            )
        if not mask.any():
            raise DataError("mask is empty: nothing to fit", path=mask_name)
        scale = size / max(camera.width, camera.height)
        w, h = max(1, round(camera.width * scale)), max(1, round(camera.height * scale))
        k = scale_intrinsics(camera.intrinsics, w, h)
        small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BOX), np.float64) / 255
        target = torch.from_numpy(small).to(self.dtype)

        R0 = torch.from_numpy(camera.R)
        c_cam = camera.R @ self.center + camera.t
        if c_cam[2] <= 0:
            raise DataError(f"the object centre is behind the camera (depth {c_cam[2]:.3g})", path=mask_name)
        a0, z0 = torch.from_numpy(c_cam[:2] / c_cam[2]), float(c_cam[2])
        omega = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        shift = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        log_scale = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        log_focal = torch.zeros(1, dtype=torch.float64, requires_grad=fit_focal)
        groups = [{"params": [omega], "lr": lr}, {"params": [shift], "lr": lr * 0.5}, {"params": [log_scale], "lr": lr}]
        if fit_focal:
            groups.append({"params": [log_focal], "lr": lr})
        opt = torch.optim.Adam(groups)
        sigmas = np.geomspace(sigma[0], sigma[1], max(steps, 1))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * i / steps)))
        losses = []
        for step in range(steps):
            opt.zero_grad()
            R, t_c = self._camera_tensors(R0, a0, z0, omega, shift, log_scale[0])
            sil = self.silhouette(R, t_c, k, float(sigmas[step]), torch.exp(log_focal[0]))
            inter = (sil * target).sum()
            loss = 1.0 - inter / (sil + target - sil * target).sum().clamp(min=1e-9)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():
            R, t_c = self._camera_tensors(R0, a0, z0, omega, shift, log_scale[0])
            R_np, t_np = R.numpy(), t_c.numpy() - R.numpy() @ self.center
            gain = float(torch.exp(log_focal[0]))
            before = self.silhouette(R0, torch.from_numpy(c_cam), k, 0.05).numpy() > 0.5
            after = self.silhouette(R, t_c, k, 0.05, gain).numpy() > 0.5
        u, s, vt = np.linalg.svd(R_np)  # re-orthonormalise against round-off
        ki = camera.intrinsics
        intr = Intrinsics(ki.fx * gain, ki.fy * gain, ki.cx, ki.cy, ki.width, ki.height) if fit_focal else ki
        refined = Camera(intr, u @ vt, t_np)
        return Refinement(
            refined,
            silhouette_iou(before, small > 0.5),
            silhouette_iou(after, small > 0.5),
            losses,
            time.perf_counter() - start,
        )


@dataclass
class Candidate:
    """A starting pose from :func:`coarse_search`: the camera, its hard silhouette IoU, the bin and the fov."""

    camera: Camera
    iou: float
    azimuth: float
    elevation: float
    fov: float


def downsample_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """``mask`` (H, W) bool box-filtered to ``size`` pixels on its long side (H', W') bool: poses are
    searched and compared on a small copy, since a full-resolution render per candidate costs more than
    the choice is worth."""
    h, w = mask.shape
    s = size / max(h, w)
    ws, hs = max(1, round(w * s)), max(1, round(h * s))
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((ws, hs), Image.BOX)) > 127


def coarse_search(
    mesh: Mesh | MeshRenderer,
    mask: np.ndarray,
    *,
    center: np.ndarray | None = None,
    fovs: Sequence[float] = (15.0, 30.0, 45.0, 60.0),
    size: int = 64,
    keep: int = 5,
    elevation_range: tuple[float, float] = (-90.0, 90.0),
) -> list[Candidate]:
    """Score every azimuth x elevation bin centre (24 x 12) for each field of view by hard silhouette IoU.

    ``mask`` (H, W) bool. For each view the silhouette rendered at a nominal distance is fitted to the mask
    by scale (square root of the area ratio: a distance) and centroid (an image position); the fitted
    camera is rendered again and scored. ``elevation_range`` (degrees) keeps the bin centres inside it
    (e.g. an upright photo of furniture: (-20, 70)). Returns the ``keep`` best candidates (cameras at the mask's
    size), best first, at most one per (azimuth, elevation) bin pair (the best fov of each)."""
    renderer = mesh if isinstance(mesh, MeshRenderer) else MeshRenderer(mesh)
    verts = renderer.mesh.vertices
    c = bbox_centre(verts) if center is None else np.asarray(center, np.float64)
    radius = float(np.linalg.norm(verts - c, axis=1).max())
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise DataError("mask is empty: nothing to fit")
    small = downsample_mask(mask, size)
    hs, ws = small.shape
    ii, jj = np.nonzero(small)
    target_area, target_c = len(ii), np.array([jj.mean(), ii.mean()])
    views = [
        (float(azimuth_bin_center(a)), float(elevation_bin_center(e)))
        for a in range(AZIMUTH_BINS)
        for e in range(ELEVATION_BINS)
        if elevation_range[0] <= elevation_bin_center(e) <= elevation_range[1]
    ]
    found: dict[tuple[float, float], Candidate] = {}
    for fov in fovs:
        full = Intrinsics.from_fov(mask.shape[1], mask.shape[0], fov)
        k = scale_intrinsics(full, ws, hs)
        d0 = fit_distance(radius, k, 0.8)
        cams = [make_camera(Viewpoint(az, el, d0), k, c) for az, el in views]
        fitted = []
        for cam, r in zip(cams, renderer.render_batch(cams)):
            ri, rj = np.nonzero(r.mask)
            if len(ri) == 0:
                fitted.append(cam)
                continue
            s = np.sqrt(target_area / len(ri))
            pp = np.array([k.cx, k.cy])
            shift = target_c - (pp + s * (np.array([rj.mean(), ri.mean()]) - pp))
            z = d0 / s
            t_c = z * np.array([shift[0] / k.fx, shift[1] / k.fy, 1.0])
            fitted.append(Camera(k, cam.R, t_c - cam.R @ c))
        for (az, el), cam, r in zip(views, fitted, renderer.render_batch(fitted)):
            iou = silhouette_iou(r.mask, small)
            if (az, el) not in found or iou > found[(az, el)].iou:
                found[(az, el)] = Candidate(Camera(full, cam.R, cam.t), iou, az, el, fov)
    return sorted(found.values(), key=lambda x: -x.iou)[:keep]


def fit_pose_to_mask(
    mesh: Mesh,
    mask: np.ndarray,
    *,
    center: np.ndarray | None = None,
    fovs: Sequence[float] = (15.0, 30.0, 45.0, 60.0),
    keep: int = 4,
    steps: int = 40,
    size: int = 64,
    fit_focal: bool = True,
    max_faces: int = 800,
    elevation_range: tuple[float, float] = (-90.0, 90.0),
    max_roll: float | None = None,
) -> tuple[Refinement, list[Candidate], list[Refinement]]:
    """A pose (and focal length) for a mask with no prior camera: :func:`coarse_search`, then refine the best
    ``keep`` candidates and keep the refinement with the best hard IoU at the mask's full resolution (Embree).

    ``max_roll`` (degrees): prefer refinements whose in-plane rotation is at most this (an upright photo);
    ``elevation_range``: as in :func:`coarse_search`.
    Returns the best refinement, the candidates and every refinement (in the candidates' order)."""
    renderer = MeshRenderer(mesh)
    cands = coarse_search(renderer, mask, center=center, fovs=fovs, keep=keep, elevation_range=elevation_range)
    refiner = PoseRefiner(mesh, center=center, max_faces=max_faces)
    results = []
    for cand in cands:
        r = refiner.refine(mask, cand.camera, steps=steps, size=size, fit_focal=fit_focal)
        r.iou_after = silhouette_iou(renderer.render(r.camera).mask, mask)  # full resolution, exact mesh
        results.append(r)
    c = bbox_centre(mesh.vertices) if center is None else center
    pool = [r for r in results if max_roll is None or abs(rt_to_viewpoint(r.camera.R, r.camera.t, c).theta) <= max_roll]
    best = max(pool or results, key=lambda r: r.iou_after)
    return best, cands, results
