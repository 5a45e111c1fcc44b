"""Predictions from a trained run, in the formats ``kpengine evaluate`` reads.

* saliency: ``{model_id: [[point_index, probability], ...]}``. Default mode "nms": points above
  ``threshold`` (0.1) kept greedily by probability, each suppressing the points within ``nms_radius``
  geodesic distance; mode "official": every point above 0.1, no suppression (the original code).
* correspondence: ``{model_id: {semantic_id: point_index}}``, the argmax over points per id.
* A saliency run tuned by ``kpengine.learn.decision`` (``decision.json``) predicts with its
  validation-chosen threshold and radius unless they are given.
* embedding runs predict correspondences by transfer (nearest point to each id's prototype).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from kpengine.categories import resolve_category
from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.geometry.geodesic import GeodesicGraph
from kpengine.learn.checkpoint import load_checkpoint
from kpengine.learn.config import TrainConfig
from kpengine.learn.heads import KeypointModel

SaliencyMode = Literal["nms", "official"]


def load_run(run: str | Path, *, task: str | None = None, category: str | None = None) -> tuple[KeypointModel, dict]:
    """The best model of a run directory (eval mode) and its checkpoint state."""
    state = load_checkpoint(Path(run) / "best.pt", task=task, category=category)
    cfg = TrainConfig.from_json(state["config"])
    model = KeypointModel(cfg.task, cfg.backbone, state["n_classes"], cfg.embedding_dim, **cfg.backbone_kwargs)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


@torch.no_grad()
def infer(model: KeypointModel, clouds: Sequence[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
    """Per-point outputs (N, K) for each cloud (N, 3); clouds of different sizes run one by one."""
    outs: list[np.ndarray] = []
    for start in range(0, len(clouds), batch_size):
        chunk = clouds[start : start + batch_size]
        for c in chunk:
            if len(c) < model.min_points:
                raise DataError(f"a cloud of {len(c)} points is too small: the network needs {model.min_points}")
            if not np.isfinite(c).all():
                raise DataError("a cloud has non-finite coordinates")
        if len({len(c) for c in chunk}) == 1:
            x = torch.from_numpy(np.stack(chunk).astype(np.float32))
            outs += list(model(x).numpy())
        else:
            outs += [model(torch.from_numpy(c[None].astype(np.float32)))[0].numpy() for c in chunk]
    return outs


def softmax_over_points(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N, C) per-id distributions over the points."""
    z = logits - logits.max(axis=0, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=0, keepdims=True)


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


def predict_saliency(
    model: KeypointModel,
    shapes: Sequence[Shape],
    *,
    mode: SaliencyMode = "nms",
    threshold: float | None = None,
    nms_radius: float | None = None,
) -> dict[str, list[list[float]]]:
    thr = 0.1 if threshold is None else threshold
    radius = 0.0 if mode == "official" else (0.05 if nms_radius is None else nms_radius)
    out: dict[str, list[list[float]]] = {}
    for shape, logits in zip(shapes, infer(model, [s.points for s in shapes])):
        kept = saliency_keypoints(shape.points, saliency_probabilities(logits), thr, radius)
        out[shape.model_id] = [[i, p] for i, p in kept]
    return out


def predict_correspondence(model: KeypointModel, shapes: Sequence[Shape]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for shape, logits in zip(shapes, infer(model, [s.points for s in shapes])):
        out[shape.model_id] = {str(c): int(i) for c, i in enumerate(logits.argmax(axis=0).tolist())}
    return out


def predict_split(
    run: str | Path,
    data: str | Path,
    category: str,
    split: str = "test",
    *,
    saliency_mode: SaliencyMode = "nms",
    threshold: float | None = None,
    nms_radius: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """(evaluate task name, predictions) for a split, by the run's own task.

    Saliency in "nms" mode with neither ``threshold`` nor ``nms_radius`` given uses the run's
    ``decision.json`` (chosen on the validation split) when there is one, else 0.1 and 0.05."""
    model, state = load_run(run, category=resolve_category(category).name)
    cfg = TrainConfig.from_json(state["config"])
    shapes = KeypointNetDataset(data, category, split, n_points=cfg.n_points)
    if len(shapes) == 0:
        raise DataError(f"{category}/{split} has no usable shapes under {data}: {shapes.problem_summary()}")
    if cfg.task == "saliency":
        if saliency_mode == "nms" and threshold is None and nms_radius is None:
            from kpengine.learn.decision import stored_decision

            tuned = stored_decision(run)
            if tuned is not None:
                threshold, nms_radius = tuned["threshold"], tuned["nms_radius"]
        return "saliency", predict_saliency(
            model, shapes, mode=saliency_mode, threshold=threshold, nms_radius=nms_radius
        )
    if cfg.task == "correspondence":
        return "correspondence", predict_correspondence(model, shapes)
    from kpengine.learn.transfer import Prototypes

    protos = Prototypes.for_run(run, model, state, data)
    return "correspondence", {
        s.model_id: {str(k): v for k, v in protos.transfer(model, s.points).correspondence().items()} for s in shapes
    }
