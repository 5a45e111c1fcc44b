"""Where the 3D route and the 2D keypoint detector meet: each semantic id's final position in the photo.

The pipeline (:mod:`kpengine.image.pipeline`) projects the retrieved shape's keypoints through the
fitted pose; the keypoint-heatmap network (:mod:`kpengine.image.heatmap`) puts, for every semantic
id, a probability distribution over the image. Each alone has a typical failure:

* the projection is only as good as the shape and the pose: a retrieved shape that lacks an id
  places nothing for it, and a shape that differs from the photographed one puts its corners a
  few pixels off;
* the heatmap is sharp where it is right but, with nothing tying the ids together, puts an id on
  the wrong one of two similar corners.

:func:`fuse_keypoints` keeps, per id, the heatmap cell that maximises the heatmap's log-probability
plus the log of an isotropic Gaussian of ``sigma`` image pixels around the projection: the 3D
route says *which* corner, the heatmap *exactly where*. ``sigma`` is a fraction
(:data:`FUSION_SIGMA`) of the object box's long side, so the same rule holds for a 128 px render
and a 480 px photo. An id the shape lacks takes the heatmap's own arg-max. This is a departure
from the paper, whose keypoints are the projections alone (docs/understanding.md, "2D-3D fusion",
has the numbers that chose it).

Coordinates as in :mod:`kpengine.image.heatmap`: image pixel centres are whole numbers, and a
heatmap of side ``S`` over a ``W x H`` image maps its cell ``j`` to ``u = (j + 0.5) W / S - 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from kpengine.errors import DataError
from kpengine.image.heatmap import heatmap_to_image, image_to_heatmap

#: the prior's standard deviation as a fraction of the object box's long side (docs/understanding.md)
FUSION_SIGMA = 0.1
#: how the final keypoints are placed: the fused rule, or the projection alone (the paper)
FUSION_MODES = ("prior", "projection")


#: blur (heatmap cells) and floor (x the uniform density) of :func:`keypoint_log_likelihood`
LIKELIHOOD_BLUR = 2.0
LIKELIHOOD_FLOOR = 0.05


@dataclass
class KeypointEvidence:
    """The heatmap network's output for one photo.

    ``log_prob`` (K, S, S): per semantic id (channel = id), the log of the spatial softmax;
    ``visible`` (K,): the visibility probability; ``width`` x ``height``: the photo's size."""

    log_prob: np.ndarray
    visible: np.ndarray
    width: int
    height: int
    _blurred: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def n_ids(self) -> int:
        return int(self.log_prob.shape[0])

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Image coordinates of the heatmap's column centres (S,) and row centres (S,)."""
        s = self.log_prob.shape[-1]
        grid = np.arange(s, dtype=np.float64)
        u = heatmap_to_image(np.stack([grid, grid], 1), s, self.width, self.height)
        return u[:, 0], u[:, 1]

    def blurred(self) -> np.ndarray:
        """(K, S, S): each id's probability blurred by a Gaussian of :data:`LIKELIHOOD_BLUR` cells (zero outside),
        computed once: a retrieved shape's keypoint sits a few pixels from the photographed one's."""
        if self._blurred is None:
            from scipy.ndimage import gaussian_filter

            p = np.exp(self.log_prob)
            self._blurred = np.stack([gaussian_filter(q, LIKELIHOOD_BLUR, mode="constant") for q in p])
        return self._blurred

    def peak(self, sid: int) -> tuple[np.ndarray, float]:
        """The arg-max cell of id ``sid`` in image coordinates (2,), and its probability."""
        lp = self.log_prob[sid]
        i, j = np.unravel_index(int(lp.argmax()), lp.shape)
        cu, cv = self.cell_centres()
        return np.array([cu[j], cv[i]]), float(np.exp(lp[i, j]))


@torch.no_grad()
def heatmap_evidence(net: torch.nn.Module, image: np.ndarray, size: int) -> KeypointEvidence:
    """Run a :class:`~kpengine.image.heatmap.HeatmapNet` on a (H, W, 3) uint8 photo squashed to ``size``."""
    from kpengine.image.crops import whole_image_input

    net.eval()
    h, w = image.shape[:2]
    out = net(whole_image_input(image, size))
    logits = out["heatmap"][0]
    k, s1, s2 = logits.shape
    logp = F.log_softmax(logits.reshape(k, -1), -1).reshape(k, s1, s2)
    return KeypointEvidence(logp.numpy().astype(np.float64), torch.sigmoid(out["visible"][0]).numpy(), w, h)


@dataclass
class FusedKeypoint:
    """One id's final position ``uv`` (2,), where it came from (``"fused"``: the heatmap under the
    projection's prior; ``"heatmap"``: an id the shape lacks; ``"projection"``: an id the heatmap
    has no channel for, or no finite projection), and ``projected`` (2,) (NaN when none)."""

    uv: np.ndarray
    source: str
    projected: np.ndarray


def fuse_keypoints(
    evidence: KeypointEvidence, uv: np.ndarray, ids: np.ndarray, sigma: float
) -> dict[int, FusedKeypoint]:
    """Per semantic id: the heatmap's arg-max under a Gaussian prior of ``sigma`` image px around the projection.

    ``uv`` (N, 2): the shape's keypoints projected into the photo (NaN where they do not project);
    ``ids`` (N,) int: their semantic ids, each at most once. For an id with a heatmap channel and a
    finite projection ``p``, the cell ``c`` maximising ``log_prob[id, c] - |x(c) - p|^2 / (2 sigma^2)``
    (``x(c)``: the cell's centre in image px); the ids of the heatmap that ``ids`` lacks: the
    heatmap's arg-max. Returns ``{id: FusedKeypoint}`` for the union of both."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    ids = np.asarray(ids, np.int64).reshape(-1)
    if len(uv) != len(ids):
        raise DataError(f"{len(uv)} projected keypoints but {len(ids)} semantic ids")
    if len(set(ids.tolist())) != len(ids):
        raise DataError("a semantic id appears twice among the keypoints to fuse")
    if not np.isfinite(sigma) or sigma <= 0:
        raise DataError(f"the fusion prior's sigma is a positive number of pixels, got {sigma!r}")
    cu, cv = evidence.cell_centres()
    out: dict[int, FusedKeypoint] = {}
    for p, sid in zip(uv, ids.tolist()):
        if not 0 <= sid < evidence.n_ids or not np.isfinite(p).all():
            out[sid] = FusedKeypoint(p.copy(), "projection", p.copy())
            continue
        score = evidence.log_prob[sid] - ((cv[:, None] - p[1]) ** 2 + (cu[None, :] - p[0]) ** 2) / (2 * sigma**2)
        i, j = np.unravel_index(int(score.argmax()), score.shape)
        out[sid] = FusedKeypoint(np.array([cu[j], cv[i]]), "fused", p.copy())
    for sid in range(evidence.n_ids):
        if sid not in out:
            out[sid] = FusedKeypoint(evidence.peak(sid)[0], "heatmap", np.full(2, np.nan))
    return out


def keypoint_log_likelihood(evidence: KeypointEvidence, uv: np.ndarray, visible: np.ndarray, ids: np.ndarray) -> float:
    """How well a pose's projected keypoints agree with the heatmap network: a robust log-likelihood.

    ``uv`` (N, 2) image px, ``visible`` (N,) bool (depth-tested), ``ids`` (N,): the shape's keypoints
    under the pose. Per id with a heatmap channel: visible -> ``log p_vis + log(S² b(uv) + floor) -
    log 50``, with ``b`` the blurred heatmap probability of the cell under ``uv`` (``S² b`` is 1 for
    a uniform map, so ``floor`` = :data:`LIKELIHOOD_FLOOR` bounds what one id the heatmap puts
    elsewhere can cost) and ``p_vis`` the heatmap's visibility probability; not visible ->
    ``log(1 - p_vis)``; ``p_vis`` clipped to [0.001, 0.999]. The constants are those of the cue study
    that chose the rule (docs/understanding.md, "Choosing the half turn"), not tuned further."""
    uv = np.asarray(uv, np.float64).reshape(-1, 2)
    b = evidence.blurred()
    s = b.shape[-1]
    cells = np.rint(image_to_heatmap(np.nan_to_num(uv, nan=-1e6), s, evidence.width, evidence.height))
    cells = np.clip(cells, 0, s - 1).astype(np.int64)
    total = 0.0
    for k, sid in enumerate(np.asarray(ids, np.int64).tolist()):
        if not 0 <= sid < evidence.n_ids:
            continue
        pv = float(np.clip(evidence.visible[sid], 1e-3, 1 - 1e-3))
        if visible[k] and np.isfinite(uv[k]).all():
            j, i = cells[k]
            total += np.log(pv) + np.log(s * s * b[sid, i, j] + LIKELIHOOD_FLOOR) - np.log(50.0)
        else:
            total += np.log(1 - pv)
    return float(total)
