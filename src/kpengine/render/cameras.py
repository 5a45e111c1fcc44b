"""Pinhole cameras and viewpoints. THE convention of ``kpengine.render``, stated once here.

World frame
    ShapeNetCore.v2 ``model_normalized``: **y up**, units are model units (bounding-box
    diagonal 1). Objects are looked at from a ``center`` (default: the origin, or the
    bounding-box centre when the caller passes it) that projects to the principal point:
    the paper's assumption that objects are centred in the image.

Camera frame (OpenCV style)
    x to the right of the image, y **down** the image, z forward (along the optical axis).
    A world point ``X`` (3,) goes to camera coordinates ``Xc = R @ X + t``; ``R`` (3, 3) is
    world-to-camera, ``t`` (3,). Depth is ``Xc[2]`` (> 0 in front of the camera).

Pixels (OpenCV style)
    ``u = fx * x / z + cx`` (column, to the right), ``v = fy * y / z + cy`` (row, down).
    Pixel centres sit at integer coordinates: pixel ``image[i, j]`` covers
    ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``. A centred camera has
    ``cx = (width - 1) / 2``, ``cy = (height - 1) / 2``.

Viewpoint (azimuth, elevation, distance, in-plane rotation), angles in degrees
    The camera sits at ``center + distance * (cos(el) sin(az), sin(el), cos(el) cos(az))``
    and looks at ``center`` with world +y up the image. Azimuth 0 looks from +z towards -z;
    azimuth 90 looks from +x; elevation 90 looks straight down. The in-plane rotation
    ``theta`` then turns the image content clockwise on screen by ``theta`` (camera
    coordinates are multiplied by a rotation about z: the image's +x axis turns towards +y).
    The paper bins azimuth into 24 classes of 15 degrees over [0, 360)
    and elevation into 12 classes of 15 degrees over [-90, 90).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kpengine.errors import DataError
from kpengine.geometry.transforms import rotation_about

AZIMUTH_BINS = 24
ELEVATION_BINS = 12
_UP = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``height`` x ``width``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, fov_deg: float = 30.0) -> Intrinsics:
        """Square pixels, horizontal field of view ``fov_deg``, principal point at the image centre."""
        if width <= 0 or height <= 0:
            raise DataError(f"image size must be positive, got {width}x{height}")
        if not 0.0 < fov_deg < 180.0:
            raise DataError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
        f = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
        return cls(f, f, (width - 1) / 2, (height - 1) / 2, int(width), int(height))

    @property
    def matrix(self) -> np.ndarray:
        """K (3, 3)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Camera:
    """Intrinsics plus world-to-camera rotation ``R`` (3, 3) and translation ``t`` (3,)."""

    intrinsics: Intrinsics
    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        R, t = np.asarray(self.R, np.float64), np.asarray(self.t, np.float64)
        if R.shape != (3, 3) or t.shape != (3,):
            raise DataError(f"camera needs R (3, 3) and t (3,), got {R.shape} and {t.shape}")
        if not (np.isfinite(R).all() and np.isfinite(t).all()):
            raise DataError("camera has NaN or infinite rotation/translation")
        if abs(np.linalg.det(R) - 1.0) > 1e-4 or not np.allclose(R @ R.T, np.eye(3), atol=1e-4):
            raise DataError("camera R is not a rotation matrix (R R^T != I or det != 1)")
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    @property
    def width(self) -> int:
        return self.intrinsics.width

    @property
    def height(self) -> int:
        return self.intrinsics.height

    @property
    def position(self) -> np.ndarray:
        """Camera centre (3,) in the world frame."""
        return -self.R.T @ self.t

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera coordinates (N, 3)."""
        return np.asarray(points, np.float64) @ self.R.T + self.t

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixels (N, 2) as (u, v), and depth (N,). Points behind get NaN pixels."""
        cam = self.to_camera(points)
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack(
                [
                    self.intrinsics.fx * cam[:, 0] / z + self.intrinsics.cx,
                    self.intrinsics.fy * cam[:, 1] / z + self.intrinsics.cy,
                ],
                axis=1,
            )
        uv[z <= 0] = np.nan
        return uv, z

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Ray origins (H*W, 3) and unit directions (H*W, 3) in the world frame, one per pixel centre,
        row-major (index = i * width + j)."""
        k = self.intrinsics
        jj, ii = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
        d_cam = np.stack([(jj - k.cx) / k.fx, (ii - k.cy) / k.fy, np.ones_like(jj)], axis=-1).reshape(-1, 3)
        d_world = d_cam @ self.R  # R^T @ d for each row
        d_world /= np.linalg.norm(d_world, axis=1, keepdims=True)
        return np.broadcast_to(self.position, d_world.shape).copy(), d_world

    def to_json(self) -> dict:
        k = self.intrinsics
        return {
            "fx": k.fx,
            "fy": k.fy,
            "cx": k.cx,
            "cy": k.cy,
            "width": k.width,
            "height": k.height,
            "R": self.R.tolist(),
            "t": self.t.tolist(),
        }

    @classmethod
    def from_json(cls, obj: dict) -> Camera:
        try:
            k = Intrinsics(
                float(obj["fx"]),
                float(obj["fy"]),
                float(obj["cx"]),
                float(obj["cy"]),
                int(obj["width"]),
                int(obj["height"]),
            )
            return cls(k, np.array(obj["R"], np.float64), np.array(obj["t"], np.float64))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed camera ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class Viewpoint:
    """Azimuth, elevation, in-plane rotation (degrees) and distance (model units) to ``center``."""

    azimuth: float
    elevation: float
    distance: float
    theta: float = 0.0


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = _UP) -> np.ndarray:
    """World-to-camera rotation (3, 3) of a camera at ``eye`` looking at ``target`` with ``up`` up the image."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    forward = target - eye
    norm = np.linalg.norm(forward)
    if not np.isfinite(norm) or norm == 0:
        raise DataError(f"look_at: eye {eye.tolist()} and target {target.tolist()} must differ and be finite")
    forward /= norm
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:  # looking straight along up: pick -z as the image's up direction
        right = np.cross(forward, np.array([0.0, 0.0, -1.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


def viewpoint_to_rt(view: Viewpoint, center: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Viewpoint -> world-to-camera ``R`` (3, 3), ``t`` (3,)."""
    values = np.array([view.azimuth, view.elevation, view.distance, view.theta], np.float64)
    if not np.isfinite(values).all() or view.distance <= 0:
        raise DataError(f"invalid viewpoint {view}: angles must be finite and distance > 0")
    c = np.zeros(3) if center is None else np.asarray(center, np.float64)
    az, el = math.radians(view.azimuth), math.radians(view.elevation)
    eye = c + view.distance * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    R = rotation_about("z", math.radians(view.theta)) @ look_at(eye, c)  # the in-plane roll
    return R, -R @ eye


def rt_to_viewpoint(R: np.ndarray, t: np.ndarray, center: np.ndarray | None = None) -> Viewpoint:
    """Inverse of :func:`viewpoint_to_rt`. Azimuth in [0, 360), elevation in [-90, 90], theta in (-180, 180].

    The viewing direction comes from the optical axis, the distance from the depth of ``center``.
    """
    R, t = np.asarray(R, np.float64), np.asarray(t, np.float64)
    c = np.zeros(3) if center is None else np.asarray(center, np.float64)
    back = -R[2]  # from the target towards the camera
    elevation = math.degrees(math.asin(float(np.clip(back[1], -1.0, 1.0))))
    azimuth = math.degrees(math.atan2(back[0], back[2])) % 360.0
    distance = float((R @ c + t)[2])
    eye = c + distance * back
    roll = R @ look_at(eye, c).T
    theta = math.degrees(math.atan2(roll[1, 0], roll[0, 0]))
    return Viewpoint(azimuth, elevation, distance, theta)


def make_camera(view: Viewpoint, intrinsics: Intrinsics, center: np.ndarray | None = None) -> Camera:
    R, t = viewpoint_to_rt(view, center)
    return Camera(intrinsics, R, t)


def azimuth_bin(azimuth: np.ndarray | float, n_bins: int = AZIMUTH_BINS) -> np.ndarray:
    """Class (int) of each azimuth: bin k covers [k, k + 1) * 360 / n_bins degrees."""
    return (np.floor(np.mod(azimuth, 360.0) / (360.0 / n_bins)).astype(np.int64)) % n_bins


def elevation_bin(elevation: np.ndarray | float, n_bins: int = ELEVATION_BINS) -> np.ndarray:
    """Class (int) of each elevation: bin k covers -90 + [k, k + 1) * 180 / n_bins degrees (90 joins the last)."""
    k = np.floor((np.asarray(elevation, np.float64) + 90.0) / (180.0 / n_bins)).astype(np.int64)
    return np.clip(k, 0, n_bins - 1)


def azimuth_bin_center(k: np.ndarray | int, n_bins: int = AZIMUTH_BINS) -> np.ndarray:
    return (np.asarray(k) + 0.5) * 360.0 / n_bins


def elevation_bin_center(k: np.ndarray | int, n_bins: int = ELEVATION_BINS) -> np.ndarray:
    return -90.0 + (np.asarray(k) + 0.5) * 180.0 / n_bins


def fit_distance(radius: float, intrinsics: Intrinsics, fill: float = 0.8) -> float:
    """Distance at which a sphere of ``radius`` spans ``fill`` of the shorter image side."""
    half = 0.5 * fill * min(intrinsics.width / intrinsics.fx, intrinsics.height / intrinsics.fy)
    return float(radius * math.sqrt(1.0 + 1.0 / half**2))
