"""Light-field HoG descriptors of shapes and the shape-to-shape distance (Li, Su et al. §4.1).

Each shape is drawn from a fixed ring of viewpoints around it (``LightFieldSpec``: ``azimuths``
equally spaced, at each of ``elevations``; the camera looks at the bounding-box centre and the
object is centred and fills the square view, as the photo crops are), shaded grey by a headlight on
black, and a HoG descriptor (scikit-image; Dalal-Triggs blocks, L2-Hys) is computed per view. All
shapes are drawn from their point cloud as oriented splats (surfels), including those that also have
a mesh: a collection drawn one way keeps mesh-versus-splat rendering out of the distances.

Distance between shapes ``a`` and ``b`` with per-view descriptors ``h_a, h_b`` (V, H)::

    sum     D(a, b) = sum_v |h_a[v] - h_b[v]|                     (corresponding views)
    rotation D(a, b) = min_s sum_v |h_a[v] - h_b[shift_s(v)]|     (light-field style: min over turns about
                                                                  the up axis by multiples of the azimuth step)

KeypointNet's shapes are ShapeNet's, aligned to one canonical frame per category, so views with the
same index show the same side of both shapes; the sum compares like with like, and ``rotation`` (the
LFD's rotation search, made for unaligned collections) would call a bed and the same bed turned by
180 degrees identical, which the image network must tell apart to regress a photo into the space.
The default is ``sum``; docs/understanding.md gives the measured comparison.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from kpengine.errors import DataError

log = logging.getLogger(__name__)

DISTANCES = ("sum", "rotation")


@dataclass(frozen=True)
class LightFieldSpec:
    """Viewpoints (degrees, :mod:`kpengine.render.cameras` convention), view side (px), HoG settings."""

    azimuths: int = 12
    elevations: tuple[float, ...] = (10.0, 35.0)
    size: int = 64
    fov: float = 30.0
    margin: float = 0.05
    orientations: int = 9
    pixels_per_cell: int = 8
    cells_per_block: int = 2

    def viewpoints(self) -> np.ndarray:
        """(V, 2) azimuth, elevation: elevation-major, azimuth ``k * 360 / azimuths`` within each ring."""
        az = np.arange(self.azimuths) * 360.0 / self.azimuths
        return np.array([(a, e) for e in self.elevations for a in az], np.float64)

    def to_json(self) -> dict:
        d = asdict(self)
        d["elevations"] = list(self.elevations)
        return d

    @classmethod
    def from_json(cls, d: dict) -> LightFieldSpec:
        d = dict(d)
        d["elevations"] = tuple(float(e) for e in d.get("elevations", cls.elevations))
        return cls(**d)


def hog_descriptor(grey: np.ndarray, spec: LightFieldSpec = LightFieldSpec()) -> np.ndarray:
    """(S, S) float image in [0, 1] (S = spec.size) -> HoG vector (H,) float32."""
    from skimage.feature import hog

    g = np.asarray(grey, np.float64)
    if g.shape != (spec.size, spec.size):
        raise DataError(f"HoG input is {g.shape}; expected ({spec.size}, {spec.size})")
    h = hog(
        g,
        orientations=spec.orientations,
        pixels_per_cell=(spec.pixels_per_cell, spec.pixels_per_cell),
        cells_per_block=(spec.cells_per_block, spec.cells_per_block),
        block_norm="L2-Hys",
        feature_vector=True,
    )
    return h.astype(np.float32)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float in [0, 1] (ITU-R 601 luma)."""
    return (np.asarray(rgb, np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0


def shape_views(points: np.ndarray, spec: LightFieldSpec = LightFieldSpec(), name: str = "shape") -> np.ndarray:
    """A cloud (N, 3) drawn from every viewpoint of ``spec``: (V, S, S) grey images in [0, 1]."""
    from kpengine.image.synth import SURFEL_SCALE, centred_camera
    from kpengine.render.cameras import Viewpoint
    from kpengine.render.gl import GLSplatRenderer
    from kpengine.render.splat import default_radius

    pts = np.asarray(points, np.float64)
    radius = SURFEL_SCALE * default_radius(pts)
    renderer = GLSplatRenderer(pts, radius=radius, oriented=True, max_radius_px=24, name=name)
    try:
        centre = 0.5 * (pts.min(0) + pts.max(0))
        extent = float(np.linalg.norm(pts - centre, axis=1).max())
        out = np.empty((len(spec.viewpoints()), spec.size, spec.size))
        for k, (az, el) in enumerate(spec.viewpoints()):
            view = Viewpoint(float(az), float(el), 3.0 * max(extent, 1e-6), 0.0)
            cam = centred_camera(view, spec.fov, centre, pts, radius, spec.size, spec.margin)
            r = renderer.render(cam, background=(0.0, 0.0, 0.0), with_location=False)
            out[k] = to_grey(r.color)
    finally:
        renderer.release()
    return out


def shape_descriptor(points: np.ndarray, spec: LightFieldSpec = LightFieldSpec(), name: str = "shape") -> np.ndarray:
    """(V, H) HoG descriptors of a cloud's views."""
    return np.stack([hog_descriptor(v, spec) for v in shape_views(points, spec, name)])


@dataclass
class LightField:
    """Descriptors of a shape collection: ``model_ids`` (N,), ``hog`` (N, V, H) float32, ``spec``."""

    model_ids: list[str]
    hog: np.ndarray
    spec: LightFieldSpec = field(default_factory=LightFieldSpec)


def light_field(
    shapes: Sequence, spec: LightFieldSpec = LightFieldSpec(), progress: Callable[[int, int], None] | None = None
) -> LightField:
    """Descriptors of ``shapes`` (anything with ``model_id`` and ``points`` (N, 3))."""
    hogs = []
    for k, s in enumerate(shapes):
        hogs.append(shape_descriptor(s.points, spec, s.model_id))
        if progress is not None:
            progress(k + 1, len(shapes))
    h = np.stack(hogs).astype(np.float32) if hogs else np.zeros((0, len(spec.viewpoints()), 0), np.float32)
    return LightField([s.model_id for s in shapes], h, spec)


def _view_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Na, H), (Nb, H) -> (Na, Nb) Euclidean distances, float64, from the differences themselves (an
    identical pair gives exactly 0, which the expansion |a|^2 + |b|^2 - 2ab does not)."""
    from scipy.spatial.distance import cdist

    return cdist(a.astype(np.float64), b.astype(np.float64))


def lfd_distances(
    hog_a: np.ndarray, hog_b: np.ndarray | None = None, *, mode: str = "sum", azimuths: int | None = None
) -> np.ndarray:
    """Shape distances between descriptor sets (Na, V, H) and (Nb, V, H) (default: ``hog_a`` itself) ->
    (Na, Nb) float64. ``mode`` ``sum`` or ``rotation`` (see the module docstring; ``rotation`` needs
    ``azimuths``, the views per elevation ring, elevation-major as :meth:`LightFieldSpec.viewpoints`)."""
    if mode not in DISTANCES:
        raise DataError(f"unknown light-field distance {mode!r}; choose one of {', '.join(DISTANCES)}")
    same = hog_b is None
    b = hog_a if same else hog_b
    if hog_a.shape[1:] != b.shape[1:]:
        raise DataError(f"descriptors of different layouts: {hog_a.shape[1:]} and {b.shape[1:]}")
    v = hog_a.shape[1]
    if mode == "sum":
        out = sum(_view_distance(hog_a[:, k], b[:, k]) for k in range(v))
    else:
        if not azimuths or v % azimuths:
            raise DataError(f"rotation distance needs the views per ring; {v} views, azimuths={azimuths}")
        rings = v // azimuths
        totals = np.zeros((azimuths, len(hog_a), len(b)))
        for r in range(rings):
            for p in range(azimuths):
                for q in range(azimuths):  # view p of a against view q of b: turn s = q - p
                    totals[(q - p) % azimuths] += _view_distance(hog_a[:, r * azimuths + p], b[:, r * azimuths + q])
        out = totals.min(0)
    out = np.asarray(out, np.float64)
    if same:
        out = 0.5 * (out + out.T)
        np.fill_diagonal(out, 0.0)
    return out
