"""Sammon mapping: points in R^d whose distances reproduce a given distance matrix, weighting the
small distances most (Sammon 1969), as Li, Su et al. embed shapes.

Sammon's stress of a configuration ``Y`` (N, d) against target distances ``D`` (N, N)::

    E(Y) = 1 / c * sum_{i<j} (D_ij - d_ij)^2 / D_ij,    c = sum_{i<j} D_ij,   d_ij = |y_i - y_j|

and its gradient (differentiate ``d_ij`` = |y_i - y_j|: d d_ij / d y_i = (y_i - y_j) / d_ij)::

    dE/dy_i = -2 / c * sum_{j != i} (D_ij - d_ij) / (D_ij d_ij) * (y_i - y_j)

scikit-learn only has SMACOF (raw stress, every pair weighted alike), which lets the large
distances dominate: retrieval lives on the small ones. Target distances of exactly 0 (duplicate
shapes, which ShapeNet has) are raised to ``floor`` times the mean distance, and coincident points
(d_ij = 0) contribute no gradient, so both stay finite.

The start is classical MDS (Torgerson): the top-d eigenvectors of the double-centred squared
distances, exact when ``D`` is Euclidean in d dimensions.
"""

from __future__ import annotations

import numpy as np
import torch

FLOOR = 1e-6  # zero target distances are raised to FLOOR x the mean distance


def _targets(distances: np.ndarray, floor: float = FLOOR) -> np.ndarray:
    d = np.asarray(distances, np.float64)
    iu = np.triu_indices(len(d), 1)
    low = floor * float(d[iu].mean()) if len(iu[0]) else 1.0
    return np.maximum(d, max(low, 1e-300))


def sammon_stress(coords: np.ndarray, distances: np.ndarray, floor: float = FLOOR) -> tuple[float, np.ndarray]:
    """Sammon's stress ``E`` of ``coords`` (N, d) against ``distances`` (N, N, symmetric) and its gradient
    (N, d), in float64 (see the module docstring for both formulas)."""
    from scipy.spatial.distance import cdist

    y = np.asarray(coords, np.float64)
    target = _targets(distances, floor)
    n = len(y)
    d = cdist(y, y)
    iu = np.triu_indices(n, 1)
    c = float(target[iu].sum())
    stress = float((((target - d) ** 2) / target)[iu].sum() / c)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(d > 0, (target - d) / (target * d), 0.0)
    np.fill_diagonal(w, 0.0)
    grad = -2.0 / c * (w.sum(1, keepdims=True) * y - w @ y)  # sum_j w_ij (y_i - y_j)
    return stress, grad


class _SammonStress(torch.autograd.Function):
    """Sammon's stress with the closed-form gradient of the module docstring in matrix form,
    ``dE/dY = -2/c (diag(W 1) - W) Y`` with ``W_ij = (D_ij - d_ij) / (D_ij d_ij)`` (0 where d_ij = 0):
    O(N^2 d) time and O(N^2) memory, where autograd through every pair kept (N^2 / 2, d) tensors
    (4.3 s a step for 492 shapes in 128-d on the loaded 2-core machine)."""

    @staticmethod
    def forward(ctx, coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        d = torch.cdist(coords, coords, compute_mode="donot_use_mm_for_euclid_dist")
        t = target.clone()
        t.fill_diagonal_(1.0)  # the diagonal (i = i) is no pair
        off = ~torch.eye(len(t), dtype=torch.bool, device=t.device)
        c = t[off].sum() / 2
        stress = ((t - d).pow(2) / t)[off].sum() / 2 / c
        w = torch.where(d > 0, (t - d) / (t * d.clamp_min(1e-300)), torch.zeros_like(d)) * off
        ctx.save_for_backward(coords, w, c)
        return stress

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: ANN001, ANN205
        coords, w, c = ctx.saved_tensors
        grad = -2.0 / c * (w.sum(1, keepdim=True) * coords - w @ coords)
        return grad_out * grad, None


def sammon_stress_torch(coords: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The same stress in torch for ``coords`` (N, d) and a floored ``target`` (N, N) (:func:`floored`);
    its backward is the closed-form gradient (tests compare it with finite differences and with
    :func:`sammon_stress`)."""
    return _SammonStress.apply(coords, target.to(coords))


def floored(distances: np.ndarray, floor: float = FLOOR) -> torch.Tensor:
    """Target distances as the stress uses them: zeros off the diagonal raised (see module docstring)."""
    return torch.from_numpy(_targets(distances, floor))


def classical_mds(distances: np.ndarray, dim: int) -> np.ndarray:
    """(N, N) distances -> (N, dim) coordinates by Torgerson's classical MDS. Negative eigenvalues
    (non-Euclidean distances) and dimensions beyond N give zero columns."""
    d2 = np.asarray(distances, np.float64) ** 2
    n = len(d2)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ d2 @ j
    vals, vecs = np.linalg.eigh((b + b.T) / 2)
    order = np.argsort(vals)[::-1][: min(dim, n)]
    lam = np.clip(vals[order], 0.0, None)
    out = np.zeros((n, dim))
    out[:, : len(order)] = vecs[:, order] * np.sqrt(lam)
    return out


def sammon(
    distances: np.ndarray,
    dim: int,
    *,
    steps: int = 2000,
    lr: float = 0.02,
    seed: int = 0,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """A Sammon map of ``distances`` into ``dim`` dimensions outside a run (tests, small sets): classical
    MDS start (plus noise of 1e-3 of its spread, so that zero columns move), Adam on the stress with a
    cosine learning rate (``start`` (N, dim): another start). Returns (coords (N, dim), final stress).
    The ``shape-embedding`` task runs the same optimisation as a resumable run."""
    if start is None:
        start = start_coords(distances, dim, seed)
    y = torch.nn.Parameter(torch.tensor(np.asarray(start), dtype=torch.float64))
    target = floored(distances)
    opt = torch.optim.Adam([y], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        loss = sammon_stress_torch(y, target)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        final = float(sammon_stress_torch(y, target))
    return y.detach().numpy(), final


def start_coords(distances: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """Classical MDS plus a little noise (1e-3 of the coordinates' spread) that lets zero columns move."""
    start = classical_mds(distances, dim)
    spread = float(np.abs(start).max()) or 1.0
    return start + np.random.default_rng(seed).normal(0.0, 1e-3 * spread, start.shape)
