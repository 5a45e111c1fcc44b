"""A category's shape space for the 3D estimator: a linear (PCA) basis of its training grids, and the
left-right mirror that turns one training view into two.

* **PCA basis** (:func:`pca_basis`): the mean grid and the top-k principal directions of the training
  grids, flattened (R³). The voxel network can predict k coefficients instead of R³ free voxels
  (``VoxelNet(basis=k)``): every output is then a blend of training shapes' modes. The basis is
  not the limit (the held-out test grids projected on 32 components keep IoU 0.78 bathtub / 0.73
  bed), but a 64-coefficient network scored 0.441 / 0.391 on the test split against the free
  decoder's 0.454 / 0.397 (docs/reconstruction.md, third pass): an option, off by default.
* **Mirror** (:func:`mirror_grids`, :func:`mirror_sketches`, :func:`mirror_azimuth`): reflecting a
  scene (the shape and the camera) in the canonical plane x = 0 (the grid's centre, the shape's box
  centre) gives the horizontally flipped image, seen from azimuth −a (azimuth = atan2(x, z),
  ``render.cameras``) and in-plane angle −θ; camera-frame normals have their x negated. So a
  flipped training view paired with the x-mirrored grid is an exact new training pair (of the
  mirrored shape), whatever the shape's own symmetry. Beds and bathtubs are close to mirror
  symmetric in x (training grids: IoU with their x-mirror 0.78 bathtub, 0.82 bed; in z 0.83 /
  0.76; in y 0.31 / 0.38), so the mirrored shapes stay in the category. Measured as an option
  (``mirror``): no test gain with 8 more epochs (0.446 / 0.404 against 0.454 / 0.397).
"""

from __future__ import annotations

import torch


def pca_basis(grids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grids (N, R, R, R) in [0, 1] -> mean (R³,) and basis (k, R³) with orthonormal rows: the top-k
    principal directions (right singular vectors of the centred grids). When k exceeds the rank
    (N − 1 at most), the extra rows are zero: coefficients there change nothing."""
    x = grids.reshape(grids.shape[0], -1).double()
    mean = x.mean(0)
    _, _, vt = torch.linalg.svd(x - mean, full_matrices=False)
    basis = torch.zeros(k, x.shape[1], dtype=torch.float64)
    r = min(k, vt.shape[0], max(x.shape[0] - 1, 0))
    basis[:r] = vt[:r]
    return mean.float(), basis.float()


def project(grids: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Coefficients (N, k) of grids (N, R, R, R) in a basis: ``(g - mean) @ basis.T``."""
    return (grids.reshape(grids.shape[0], -1) - mean) @ basis.T


def mirror_grids(grids: torch.Tensor) -> torch.Tensor:
    """Grids (..., R, R, R) indexed (x, y, z) reflected in the plane x = 0 of their frame."""
    return torch.flip(grids, dims=(-3,))


def mirror_sketches(sketches: torch.Tensor) -> torch.Tensor:
    """Sketches (B, 5, S, S) (mask, depth, camera-frame normals x, y, z; ``reconstruct.data``) of the
    mirrored scene: flipped left-right, the normals' x (camera right) negated."""
    out = torch.flip(sketches, dims=(-1,))
    return torch.cat([out[:, :2], -out[:, 2:3], out[:, 3:]], 1)


def mirror_azimuth(azimuth: torch.Tensor) -> torch.Tensor:
    """Azimuth (degrees) of the camera reflected in x = 0: −a, in [0, 360)."""
    return torch.remainder(-azimuth, 360.0)
