"""Keypoint transfer between two photos through 3D: the 2D-3D-2D route applied to a photo pair.

Each photo has been *fitted* (by :func:`kpengine.image.pipeline.understand` or any other way): a
knowledge-base shape and a camera that puts it on the photo's object. A source keypoint then
travels in three steps (docs/understanding.md, "Keypoint transfer between photos"):

1. **Lift** (:func:`lift`): the pixel's 3D surface point on the source's fitted shape, read from
   the rendered location buffer at that pixel; a pixel off the rendered silhouette (annotators put
   contour keypoints on the object's edge, the fit is never exact) takes the surface point seen at
   the nearest silhouette pixel.
2. **Map** (:func:`map_between_shapes`): that point on the source shape to the target's shape.
   The same shape: the identity. Two shapes of the category: their ShapeNet frames are aligned
   (y up, front -z), so the point is first mapped by the axis-wise affine map between the two
   bounding boxes, then (``semantic=True``) moved by the Gaussian-weighted displacements of the
   nearby keypoints that share a semantic id, and finally snapped to the nearest surface point of
   the target shape.
3. **Project** (:func:`transfer_points`): the mapped point through the target camera; the
   target's depth buffer says whether it is visible (self-occlusion).

Pixels are (u, v) = (column, row) with integer pixel centres, as in :mod:`kpengine.render.cameras`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from kpengine.data.shape import Shape
from kpengine.render.cameras import Camera
from kpengine.render.project import project_points


@dataclass
class FittedPhoto:
    """What transfer needs of one fitted photo.

    ``shape``: the knowledge-base shape; ``camera``: the fitted camera at the photo's resolution;
    ``mask`` (H, W) bool and ``location`` (H, W, 3) float: the shape's silhouette and the world
    point seen at each pixel, rendered with ``camera``; ``depth`` (H, W) float (0 = background)."""

    shape: Shape
    camera: Camera
    mask: np.ndarray
    location: np.ndarray
    depth: np.ndarray

    @classmethod
    def from_render(cls, shape: Shape, render) -> FittedPhoto:  # noqa: ANN001 - a raycast.Render
        return cls(shape, render.camera, render.mask, render.location, render.depth)


def lift(uv: np.ndarray, fit: FittedPhoto) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (K, 2) -> surface points (K, 3) of the fitted shape, and (K,) bool: the pixel itself was on it.

    Off-silhouette pixels take the point seen at the nearest silhouette pixel (Euclidean in pixels)."""
    uv = np.asarray(uv, np.float64)
    h, w = fit.mask.shape
    if not fit.mask.any():
        raise ValueError("the fitted shape's silhouette is empty: nothing to lift onto")
    j = np.clip(np.rint(uv[:, 0]).astype(np.int64), 0, w - 1)
    i = np.clip(np.rint(uv[:, 1]).astype(np.int64), 0, h - 1)
    inside = (np.rint(uv[:, 0]) == j) & (np.rint(uv[:, 1]) == i)
    on = inside & fit.mask[i, j]
    ii, jj = np.nonzero(fit.mask)
    if (~on).any():
        _, k = cKDTree(np.stack([jj, ii], 1).astype(np.float64)).query(uv[~on])
        i, j = i.copy(), j.copy()
        i[~on], j[~on] = ii[k], jj[k]
    return fit.location[i, j].astype(np.float64), on


def _box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = points.min(0), points.max(0)
    return lo, np.maximum(hi - lo, 1e-9)


def map_between_shapes(
    xyz: np.ndarray, source: Shape, target: Shape, *, semantic: bool = True, sigma: float = 0.1
) -> np.ndarray:
    """Points (K, 3) on ``source`` -> corresponding points (K, 3) on ``target`` (both in their ShapeNet frames).

    Identity for the same model. Otherwise: the bounding-box affine map (per axis), plus with
    ``semantic`` the keypoint residuals ``target_kp - boxmap(source_kp)`` of the shared semantic
    ids, weighted by ``exp(-d^2 / 2 sigma^2)`` (d: distance to the box-mapped source keypoint,
    model units) and divided by ``max(sum of weights, 1)`` so that far from every keypoint the box
    map stands; then snapped to the nearest of ``target.points``."""
    xyz = np.asarray(xyz, np.float64)
    if source.model_id == target.model_id:
        return xyz.copy()
    lo_s, ext_s = _box(source.points.astype(np.float64))
    lo_t, ext_t = _box(target.points.astype(np.float64))

    def boxmap(p: np.ndarray) -> np.ndarray:
        return lo_t + (p - lo_s) * (ext_t / ext_s)

    out = boxmap(xyz)
    if semantic:
        shared = np.intersect1d(source.semantic_ids, target.semantic_ids)
        if len(shared):
            # the first keypoint of each shared id on either side
            ks = source.keypoints[[int(np.nonzero(source.semantic_ids == s)[0][0]) for s in shared]].astype(np.float64)
            kt = target.keypoints[[int(np.nonzero(target.semantic_ids == s)[0][0]) for s in shared]].astype(np.float64)
            anchors = boxmap(ks)
            resid = kt - anchors  # (S, 3)
            d2 = ((out[:, None, :] - anchors[None]) ** 2).sum(-1)  # (K, S)
            wgt = np.exp(-d2 / (2 * sigma**2))
            out = out + (wgt @ resid) / np.maximum(wgt.sum(1, keepdims=True), 1.0)
    _, k = cKDTree(target.points.astype(np.float64)).query(out)
    return target.points[k].astype(np.float64)


def transfer_points(
    uv: np.ndarray, source: FittedPhoto, target: FittedPhoto, *, semantic: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Source pixels (K, 2) -> target pixels (K, 2) and visibility (K,) bool, through the two fitted shapes."""
    xyz, _ = lift(uv, source)
    mapped = map_between_shapes(xyz, source.shape, target.shape, semantic=semantic)
    proj = project_points(mapped, target.camera, target.depth)
    return proj.uv, proj.visible
