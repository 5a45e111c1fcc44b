"""Low-level inference of point networks: a run's best model, per-point outputs, saliency decisions.

Everything here works on arrays and models, not on splits or files of predictions; the
modules above (``decision``, ``transfer``, ``predict``, the tasks' predictors) build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kpengine.errors import DataError
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.learn.checkpoint import load_checkpoint
from kpengine.learn.heads import KeypointModel
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import module_device


def load_run(run: str | Path, *, task: str | None = None, category: str | None = None) -> tuple[KeypointModel, dict]:
    """The best model of a run directory (eval mode) and its checkpoint state."""
    state = load_checkpoint(Path(run) / "best.pt", task=task, category=category)
    return TASKS.get(state["config"]["task"]).load_model(state), state


@torch.no_grad()
def infer(model: KeypointModel, clouds: Sequence[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
    """Per-point outputs (N, K) for each cloud (N, 3); clouds of different sizes run one by one,
    on the model's device (outputs back on the CPU)."""
    device = module_device(model)
    outs: list[np.ndarray] = []
    for start in range(0, len(clouds), batch_size):
        chunk = clouds[start : start + batch_size]
        for c in chunk:
            if len(c) < model.min_points:
                raise DataError(f"a cloud of {len(c)} points is too small: the network needs {model.min_points}")
            if not np.isfinite(c).all():
                raise DataError("a cloud has non-finite coordinates")
        if len({len(c) for c in chunk}) == 1:
            x = torch.from_numpy(np.stack(chunk).astype(np.float32)).to(device)
            outs += list(model(x).cpu().numpy())
        else:
            outs += [model(torch.from_numpy(c[None].astype(np.float32)).to(device))[0].cpu().numpy() for c in chunk]
    return outs


def saliency_probabilities(logits: np.ndarray) -> np.ndarray:
    """(N, 2) logits -> (N,) keypoint probability."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def geodesic_nms(
    points: np.ndarray, prob: np.ndarray, threshold: float, radius: float, graph: GeodesicGraph | None = None
) -> list[tuple[int, float]]:
    """Greedy suppression over geodesic neighbours: points (N, 3), prob (N,) -> [(index, prob)], best first.

    ``graph``: the cloud's strict-protocol :class:`GeodesicGraph`, when the caller already has it."""
    cand = np.where(prob > threshold)[0]
    cand = cand[np.argsort(-prob[cand], kind="stable")]
    if len(cand) == 0:
        return []
    if graph is None:
        graph = GeodesicGraph(points, protocol="strict")  # another component is not a neighbour
    d = graph.from_sources(cand, limit=radius)  # (S, N)
    near = d[:, cand] <= radius  # (S, S)
    suppressed = np.zeros(len(cand), bool)
    keep = []
    for i in range(len(cand)):
        if suppressed[i]:
            continue
        keep.append((int(cand[i]), float(prob[cand[i]])))
        suppressed |= near[i]
    return keep


def saliency_keypoints(
    points: np.ndarray, prob: np.ndarray, threshold: float, radius: float, graph: GeodesicGraph | None = None
) -> list[tuple[int, float]]:
    """[(index, probability)] best first: points above ``threshold``, suppressed within geodesic
    ``radius`` (radius 0: no suppression, the official decision)."""
    if radius > 0:
        return geodesic_nms(points, prob, threshold, radius, graph)
    idx = np.where(prob > threshold)[0]
    return [(int(i), float(prob[i])) for i in idx[np.argsort(-prob[idx], kind="stable")]]
