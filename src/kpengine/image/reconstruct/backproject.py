"""The visible surface of a view, placed in the canonical voxel grid (a departure from ShapeHD, after
GenRe's use of the geometry of projection; docs/reconstruction.md, "fifth pass").

ShapeHD's 3D estimator encodes the sketches with a 2D network and decodes a canonical grid: it has
to learn the projection and the viewpoint's rotation from 446 training shapes. Here the geometry is
done by hand and the network only completes what the view does not show:

* **Camera** (``render.cameras``): a view's intrinsics at the sketch size, ``K`` = (fx, fy, cx, cy) in
  sketch pixels, the shape's box centre in camera coordinates ``c_cam`` (3,) and the camera's distance
  to it (the sketch depth is z-depth minus that distance). A camera-frame point ``Xc`` is the
  canonical-frame point ``p = R^T (Xc - c_cam)`` relative to the box centre, where ``R`` is the
  world-to-camera rotation of the viewpoint (azimuth, elevation, in-plane roll). The viewpoint may be
  the true one or an estimate: only ``R`` changes.
* **Observation grid** (:func:`observation_grid`): every voxel centre of the canonical grid (side 1
  model unit, ``geometry.voxelize``) is carried into the camera, projected, and compared with the
  silhouette and depth at its pixel (nearest pixel). Channels, each (B, R, R, R):

  0. ``silhouette``: the voxel projects onto the object;
  1. ``free``: seen empty, either off the silhouette (inside the image) or in front of the observed
     surface by more than half a voxel (ray carving);
  2. ``surface``: within half a voxel of the observed depth along the ray: the visible surface;
  3. ``hidden``: behind the observed surface (occluded, unknown);
  4. ``tsdf``: the truncated signed distance along the ray, ``clamp((z - z_obs) / (3 voxels), -1, 1)``
     on the silhouette, 0 elsewhere (KinectFusion's truncated distance: how far behind or in front).

  A voxel projecting outside the image is none of them (all zero): unknown.
* **Cone grid** (:func:`cone_grid`, the depth-free variant; voxels option ``"observation": "cone"``):
  only the silhouette and the viewpoint, so that a wrong predicted depth cannot mislead the
  completion (the predicted depth is 3-4 voxels off, the predicted silhouette within about a pixel).
  The same five slots, so that one network takes either:

  0. ``silhouette``: inside the silhouette's cone (the voxel projects onto the object);
  1. ``free``: seen empty, off the silhouette inside the image (no ray carving: no depth);
  2. ``surface`` and 3. ``hidden``: 0 (unknown without depth);
  4. ``ray``: the voxel's depth along the view relative to the box centre, ``clamp((z - z_c) /
     (side / 2), -1, 1)`` on the cone, 0 elsewhere: the viewing direction, which the cone's
     shape alone shows only over many voxels (a convolution sees 3).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: observation channels (see the module docstring)
OBS_CHANNELS = 5


def camera_rotation(azimuth: torch.Tensor, elevation: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """World-to-camera rotations (B, 3, 3) of viewpoints in degrees (B,) each: ``render.cameras``'
    ``viewpoint_to_rt`` (look at the centre from ``(cos el sin az, sin el, cos el cos az)`` with +y up
    the image, then the in-plane roll about the optical axis), batched in torch."""
    az, el, th = (torch.deg2rad(a.double()) for a in (azimuth, elevation, theta))
    fwd = -torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=fwd.dtype).expand_as(fwd)
    right = torch.linalg.cross(fwd, up)
    # straight down or up: -z is the image's up direction (look_at's fallback)
    flat = right.norm(dim=-1, keepdim=True) < 1e-9
    alt = torch.linalg.cross(fwd, torch.tensor([0.0, 0.0, -1.0], dtype=fwd.dtype).expand_as(fwd))
    right = F.normalize(torch.where(flat, alt, right), dim=-1)
    down = torch.linalg.cross(fwd, right)
    look = torch.stack([right, down, fwd], 1)
    c, s = torch.cos(th), torch.sin(th)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    roll = torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)], 1)
    return (roll @ look).float()


def view_camera(view: dict, size: int) -> np.ndarray:
    """A render-set view's record -> (8,) float32: ``fx, fy, cx, cy`` in pixels of a ``size``-pixel sketch
    (block-averaged from the render: sketch pixel j covers render pixels [j f, (j + 1) f), its centre
    at render coordinate ``j f + (f - 1) / 2``), the box centre in camera coordinates (3,), and the
    camera's distance to it."""
    cam = view["camera"]
    f = cam["width"] / size
    R, t = np.asarray(cam["R"], np.float64), np.asarray(cam["t"], np.float64)
    c_cam = R @ np.asarray(view["center"], np.float64) + t
    half = (f - 1) / 2
    return np.array(
        [cam["fx"] / f, cam["fy"] / f, (cam["cx"] - half) / f, (cam["cy"] - half) / f, *c_cam, view["distance"]],
        np.float32,
    )


def voxel_centres(resolution: int, side: float = 1.0) -> torch.Tensor:
    """(R³, 3) centres of the canonical grid relative to its centre, in index order (i along x, j along
    y, k along z: ``occ.reshape(-1)``'s order)."""
    a = (torch.arange(resolution, dtype=torch.float32) + 0.5) * (side / resolution) - side / 2
    x, y, z = torch.meshgrid(a, a, a, indexing="ij")
    return torch.stack([x, y, z], -1).reshape(-1, 3)


#: observation kinds: the visible depth (``observation_grid``), the silhouette's cone alone (``cone_grid``), and
#: the cone without its ray channel (the ablation of that channel: docs/reconstruction.md, sixth pass)
OBSERVATIONS = ("depth", "cone", "cone_noray")


def _look_up(
    mask: torch.Tensor, depth: torch.Tensor, camera: torch.Tensor, rotation: torch.Tensor, resolution: int, side: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every voxel centre of the canonical grid carried into each camera and looked up in the sketches
    (nearest pixel): camera-frame z (B, V), projects inside the image (B, V) bool, onto the silhouette
    (B, V) bool, and the sketch depth there (B, V)."""
    s = mask.shape[-1]
    p = voxel_centres(resolution, side).to(mask.device)  # (V, 3)
    xc = torch.einsum("bij,vj->bvi", rotation.to(mask.dtype), p) + camera[:, None, 4:7]  # (B, V, 3)
    z = xc[..., 2].clamp(min=1e-6)
    u = camera[:, None, 0] * xc[..., 0] / z + camera[:, None, 2]
    v = camera[:, None, 1] * xc[..., 1] / z + camera[:, None, 3]
    inside = (u > -0.5) & (u < s - 0.5) & (v > -0.5) & (v < s - 0.5) & (xc[..., 2] > 0)
    grid = torch.stack([(2 * u + 1) / s - 1, (2 * v + 1) / s - 1], -1)[:, :, None]  # (B, V, 1, 2)
    maps = torch.stack([(mask > 0.5).to(depth.dtype), depth], 1)  # (B, 2, S, S)
    look = F.grid_sample(maps, grid, mode="nearest", padding_mode="zeros", align_corners=False)[..., 0]
    return xc[..., 2], inside, (look[:, 0] > 0.5) & inside, look[:, 1]


def observation_grid(
    mask: torch.Tensor,
    depth: torch.Tensor,
    camera: torch.Tensor,
    rotation: torch.Tensor,
    resolution: int = 32,
    side: float = 1.0,
) -> torch.Tensor:
    """Silhouettes (B, S, S) (occupied > 0.5), sketch depths (B, S, S) (z-depth minus ``camera[:, 7]``),
    cameras (B, 8) (:func:`view_camera`) and world-to-camera rotations (B, 3, 3) -> the observation grid
    (B, 5, R, R, R) of the module docstring in the canonical frame."""
    voxel = side / resolution
    z, inside, on, d_obs = _look_up(mask, depth, camera, rotation, resolution, side)
    dz = z - (d_obs + camera[:, None, 7])
    surface = on & (dz.abs() <= voxel / 2)
    free = (inside & ~on) | (on & (dz < -voxel / 2))
    hidden = on & (dz > voxel / 2)
    tsdf = torch.where(on, (dz / (3 * voxel)).clamp(-1, 1), torch.zeros_like(dz))
    out = torch.stack([on.float(), free.float(), surface.float(), hidden.float(), tsdf], 1)
    r = resolution
    return out.view(mask.shape[0], OBS_CHANNELS, r, r, r)


def cone_grid(
    mask: torch.Tensor, camera: torch.Tensor, rotation: torch.Tensor, resolution: int = 32, side: float = 1.0
) -> torch.Tensor:
    """Silhouettes (B, S, S), cameras (B, 8) and rotations (B, 3, 3) -> the depth-free observation grid
    (B, 5, R, R, R) of the module docstring ("cone grid"): the silhouette's cone, the free space
    around it, and each cone voxel's depth along the view relative to the box centre."""
    z, inside, on, _ = _look_up(mask, torch.zeros_like(mask), camera, rotation, resolution, side)
    ray = torch.where(on, ((z - camera[:, None, 6]) / (side / 2)).clamp(-1, 1), torch.zeros_like(z))
    zero = torch.zeros_like(z)
    out = torch.stack([on.float(), (inside & ~on).float(), zero, zero, ray], 1)
    r = resolution
    return out.view(mask.shape[0], OBS_CHANNELS, r, r, r)


def fit_camera(
    occupied: torch.Tensor,
    rotation: torch.Tensor,
    mask: torch.Tensor,
    intrinsics: tuple[float, float, float, float],
    side: float = 1.0,
    steps: int = 8,
) -> torch.Tensor:
    """A photo's camera (8,) (:func:`view_camera`'s layout) for the back-projection, which a photo does not
    record: a shape of the category (the mean grid ``occupied`` (R, R, R) bool, canonical frame) placed at
    the estimated rotation (3, 3) in front of a camera of known ``intrinsics`` (fx, fy, cx, cy in sketch
    pixels) so that its projected box matches the silhouette's (S, S) bool in area and centre, as
    ``pipeline.place_camera`` places a retrieved shape: the distance by the square root of the area
    ratio, the box centre's lateral offset by the centres' difference, repeated ``steps`` times (each
    step corrects the perspective of the last). The voxel centres' box is widened by one voxel's
    footprint, so that a cube's grid fits its own silhouette."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    r = occupied.shape[0]
    q = voxel_centres(r, side)[occupied.reshape(-1).bool()].double() @ rotation.double().T  # (N, 3) camera frame
    if len(q) == 0:
        raise ValueError("the grid to place has no occupied voxel")
    ii, jj = torch.nonzero(mask.bool(), as_tuple=True)
    if len(ii) == 0:
        raise ValueError("the silhouette is empty")
    mu0, mu1, mv0, mv1 = float(jj.min()) - 0.5, float(jj.max()) + 0.5, float(ii.min()) - 0.5, float(ii.max()) + 0.5
    mu, mv = (mu0 + mu1) / 2, (mv0 + mv1) / 2
    d0 = 2.5 * side
    c = torch.tensor([(mu - cx) / fx * d0, (mv - cy) / fy * d0, d0], dtype=torch.float64)
    voxel = side / r
    for _ in range(steps):
        x = q + c
        z = x[:, 2].clamp(min=1e-6)
        u, v = fx * x[:, 0] / z + cx, fy * x[:, 1] / z + cy
        pad_u, pad_v = fx * voxel / float(c[2]), fy * voxel / float(c[2])
        pw, ph = float(u.max() - u.min()) + pad_u, float(v.max() - v.min()) + pad_v
        scale = ((mu1 - mu0) * (mv1 - mv0) / (pw * ph)) ** 0.5
        c = c / scale  # along the ray: the projection grows by about ``scale``
        x = q + c
        z = x[:, 2].clamp(min=1e-6)
        u, v = fx * x[:, 0] / z + cx, fy * x[:, 1] / z + cy
        c[0] += (mu - float(u.max() + u.min()) / 2) * float(c[2]) / fx
        c[1] += (mv - float(v.max() + v.min()) / 2) * float(c[2]) / fy
    return torch.tensor([fx, fy, cx, cy, *c.tolist(), float(c.norm())], dtype=torch.float32)


def viewpoint_noise(
    azimuth: torch.Tensor,
    elevation: torch.Tensor,
    theta: torch.Tensor,
    gen: torch.Generator,
    azimuth_sd: float = 10.0,
    elevation_sd: float = 5.0,
    theta_sd: float = 3.0,
    half_turn: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training viewpoints with the errors of an estimated one (B,) degrees each: Gaussian noise on each
    angle, and the azimuth turned by 180° with probability ``half_turn`` (the viewpoint networks' flips)."""
    b = azimuth.shape[0]
    n = torch.randn(3, b, generator=gen)
    flip = (torch.rand(b, generator=gen) < half_turn).float() * 180.0
    return (
        azimuth + azimuth_sd * n[0] + flip,
        (elevation + elevation_sd * n[1]).clamp(-89.0, 89.0),
        theta + theta_sd * n[2],
    )


def observe(
    sketches: torch.Tensor,
    cameras: torch.Tensor,
    azimuth: torch.Tensor,
    elevation: torch.Tensor,
    theta: torch.Tensor,
    resolution: int = 32,
    kind: str = "depth",
) -> torch.Tensor:
    """The 3D estimator's input from the voxel network's sketch tensor (B, 5, S, S) (``data.sketch_tensor``:
    silhouette, 4 × depth, normals), cameras (B, 8) and a viewpoint (B,) degrees each (true or
    estimated) -> observation grids (B, 5, R, R, R); ``kind`` "cone" reads the silhouette only."""
    if kind not in OBSERVATIONS:
        raise ValueError(f"observation must be one of {', '.join(OBSERVATIONS)}, got {kind!r}")
    rotation = camera_rotation(azimuth, elevation, theta).to(sketches.device)
    cams = cameras.to(sketches.device)
    if kind in ("cone", "cone_noray"):
        grid = cone_grid(sketches[:, 0], cams, rotation, resolution)
        if kind == "cone_noray":
            grid[:, 4] = 0.0
        return grid
    return observation_grid(sketches[:, 0], sketches[:, 1] / 4.0, cams, rotation, resolution)
