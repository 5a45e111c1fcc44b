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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from kpengine.errors import DataError
from kpengine.io.mesh import Mesh
from kpengine.render.cameras import Camera, Intrinsics
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


def _skew(w: torch.Tensor) -> torch.Tensor:
    z = torch.zeros((), dtype=w.dtype)
    return torch.stack([torch.stack([z, -w[2], w[1]]), torch.stack([w[2], z, -w[0]]), torch.stack([-w[1], w[0], z])])


def _silhouette_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


class PoseRefiner:
    """Fits camera poses of one mesh to masks; the mesh is simplified once."""

    def __init__(self, mesh: Mesh, *, center: np.ndarray | None = None, max_faces: int = 800, name: str = "mesh"):
        """``center`` (3,): the point rotations turn about and ``shift`` places (default: the bbox centre)."""
        if len(mesh.faces) == 0 or len(mesh.vertices) == 0:
            raise DataError("cannot refine a pose against an empty mesh", path=name)
        if not np.isfinite(mesh.vertices).all():
            raise DataError("mesh has NaN or infinite vertices", path=name)
        self.mesh = simplify(mesh, max_faces)
        bbox_center = (mesh.vertices.min(axis=0) + mesh.vertices.max(axis=0)) / 2
        self.center = bbox_center if center is None else np.asarray(center, np.float64)
        self._v = torch.from_numpy(self.mesh.vertices - self.center)
        self._f = torch.from_numpy(self.mesh.faces)

    def _camera_tensors(self, R0: torch.Tensor, a0: torch.Tensor, z0: float, omega, shift, log_scale):
        R = torch.linalg.matrix_exp(_skew(omega)) @ R0
        a = a0 + shift
        z = z0 * torch.exp(-log_scale)
        return R, z * torch.cat([a, torch.ones(1, dtype=a.dtype)])

    def silhouette(self, R: torch.Tensor, t_c: torch.Tensor, k: Intrinsics, sigma: float) -> torch.Tensor:
        """Soft silhouette (H, W) for ``Xc = R (X - c) + t_c``."""
        uv = project_torch(self._v, R, t_c, k.fx, k.fy, k.cx, k.cy)
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
        mask_name: str = "mask",
    ) -> Refinement:
        """Refine ``camera`` so that the mesh's silhouette matches ``mask`` (H, W) bool of the camera's size."""
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
        target = torch.from_numpy(small)

        R0 = torch.from_numpy(camera.R)
        c_cam = camera.R @ self.center + camera.t
        if c_cam[2] <= 0:
            raise DataError(f"the object centre is behind the camera (depth {c_cam[2]:.3g})", path=mask_name)
        a0, z0 = torch.from_numpy(c_cam[:2] / c_cam[2]), float(c_cam[2])
        omega = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        shift = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        log_scale = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam(
            [{"params": [omega], "lr": lr}, {"params": [shift], "lr": lr * 0.5}, {"params": [log_scale], "lr": lr}]
        )
        sigmas = np.geomspace(sigma[0], sigma[1], max(steps, 1))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * i / steps)))
        losses = []
        for step in range(steps):
            opt.zero_grad()
            R, t_c = self._camera_tensors(R0, a0, z0, omega, shift, log_scale[0])
            sil = self.silhouette(R, t_c, k, float(sigmas[step]))
            inter = (sil * target).sum()
            loss = 1.0 - inter / (sil + target - sil * target).sum().clamp(min=1e-9)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():
            R, t_c = self._camera_tensors(R0, a0, z0, omega, shift, log_scale[0])
            R_np, t_np = R.numpy(), t_c.numpy() - R.numpy() @ self.center
            before = self.silhouette(R0, torch.from_numpy(c_cam), k, 0.05).numpy() > 0.5
            after = self.silhouette(R, t_c, k, 0.05).numpy() > 0.5
        u, s, vt = np.linalg.svd(R_np)  # re-orthonormalise against round-off
        refined = Camera(camera.intrinsics, u @ vt, t_np)
        return Refinement(
            refined,
            _silhouette_iou(before, small > 0.5),
            _silhouette_iou(after, small > 0.5),
            losses,
            time.perf_counter() - start,
        )
