"""The KeypointNet benchmark metrics (saliency mIoU/mAP, correspondence PCK) and DAS.

The functions here take precomputed geodesic distances and are pure; ``evaluate`` glues
them to a dataset and a predictions file. Formulas: ``docs/metrics.md``.
"""

from kpengine.metrics.correspondence import pck
from kpengine.metrics.das import dual_alignment_score
from kpengine.metrics.saliency import mean_average_precision, mean_iou

#: Geodesic thresholds of the official benchmark: 0.00, 0.01, ..., 0.10 (raw model units).
THRESHOLDS: tuple[float, ...] = tuple(0.01 * i for i in range(11))

__all__ = ["THRESHOLDS", "dual_alignment_score", "mean_average_precision", "mean_iou", "pck"]
