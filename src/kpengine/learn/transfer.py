"""Keypoint transfer through dense embeddings (the paper's section 4.4).

From annotated shapes, each semantic id gets a prototype: the normalised mean embedding of
its keypoints. On a new shape, an id's keypoint is the point whose embedding is closest to
the prototype (cosine), and that similarity is its confidence; an id is present when the
confidence clears a per-id threshold learnt on the annotated shapes (with and without the
id). Reflection-symmetric partners (left/right armrests) are decided together and never
share a point. :class:`TransferPredictor` is the same behind the predictor interface: ``fit``
on annotated shapes builds the prototypes, ``predict`` gives correspondences.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import torch

from kpengine.categories import resolve_category
from kpengine.data.dataset import KeypointNetDataset
from kpengine.data.shape import Shape
from kpengine.errors import DataError
from kpengine.geometry.sampling import sample_surface, seed_for
from kpengine.io.annotations import Keypoint, ModelAnnotation, save_annotations
from kpengine.io.mesh import load_mesh
from kpengine.io.pcd import load_pcd
from kpengine.learn.checkpoint import data_version, save_checkpoint
from kpengine.learn.config import TrainConfig
from kpengine.learn.heads import KeypointModel
from kpengine.learn.inference import infer, load_run
from kpengine.learn.predictor import Predictor
from kpengine.viz.figures import plot_shape_keypoints

log = logging.getLogger(__name__)

#: two partner keypoints closer than this (model units) count as the same place
PARTNER_MIN_DISTANCE = 0.02


@dataclass
class TransferResult:
    """Per semantic id (C,): point index, confidence, presence; points (N, 3) of the shape."""

    points: np.ndarray
    index: np.ndarray
    confidence: np.ndarray
    present: np.ndarray

    def correspondence(self) -> dict[int, int]:
        return {int(c): int(self.index[c]) for c in np.where(self.present)[0]}

    def to_annotation(self, class_id: str, model_id: str) -> ModelAnnotation:
        """The model's keypoints as an official KeypointNet annotation, with a ``confidence`` each."""
        kps = [
            Keypoint(
                xyz=tuple(float(v) for v in self.points[self.index[c]]),
                semantic_id=int(c),
                rgb=(0, 0, 0),
                point_index=int(self.index[c]),
                extra={"confidence": float(self.confidence[c])},
            )
            for c in np.where(self.present)[0]
        ]
        return ModelAnnotation(class_id, model_id, kps)


@dataclass
class Prototypes:
    """vectors (C, D) unit prototypes (NaN rows for ids never seen); thresholds (C,);
    partners: pairs of reflection-symmetric ids."""

    vectors: np.ndarray
    thresholds: np.ndarray
    partners: list[tuple[int, int]]
    #: annotated models of the knowledge that could not be used, and why (kept with the cache)
    skipped: list[dict[str, str | None]] = field(default_factory=list)

    @classmethod
    def fit(cls, model: KeypointModel, shapes: Sequence[Shape], n_classes: int) -> Prototypes:
        if len(shapes) == 0:
            raise DataError("cannot build prototypes from zero annotated shapes")
        emb = infer(model, [s.points for s in shapes])
        d = emb[0].shape[1]
        sums, counts = np.zeros((n_classes, d)), np.zeros(n_classes)
        pairs: Counter[tuple[int, int]] = Counter()
        for s, e in zip(shapes, emb):
            idx = s.index_by_semantic_id(n_classes)
            ids = np.where(idx >= 0)[0]
            sums[ids] += e[idx[ids]]
            counts[ids] += 1
            for group in s.symmetries.reflection:
                sem = sorted({int(s.semantic_ids[k]) for k in group.kp_indexes if k < len(s.semantic_ids)})
                if len(sem) == 2:
                    pairs[(sem[0], sem[1])] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            vec = sums / counts[:, None]
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        # per-id threshold between the best similarity on shapes with the id and on shapes without it
        best = np.stack([e @ np.nan_to_num(vec).T for e in emb]).max(axis=1)  # (S, C)
        has = np.stack([s.index_by_semantic_id(n_classes) >= 0 for s in shapes])
        thresholds = np.full(n_classes, np.inf)
        for c in np.where(counts > 0)[0]:
            pos, neg = best[has[:, c], c], best[~has[:, c], c]
            if len(neg) == 0:
                thresholds[c] = pos.min() - 0.05
                continue
            cands = np.unique(np.concatenate([pos, neg]))
            acc = [((pos >= t).sum() + (neg < t).sum()) for t in cands]
            thresholds[c] = cands[int(np.argmax(acc))]
        partners = [p for p, n in pairs.items() if n >= 0.5 * min(counts[p[0]], counts[p[1]])]
        return cls(vec, thresholds, partners)

    @classmethod
    def for_run(cls, run: str | Path, model: KeypointModel, state: dict, knowledge: str | Path) -> Prototypes:
        """Prototypes from the training split of the run's category under ``knowledge``, cached in the run."""
        cfg = TrainConfig.from_json(state["config"])
        if cfg.task != "embedding":
            raise DataError(f"{run}: transfer needs an embedding run, this one was trained for {cfg.task!r}")
        cache = Path(run) / f"prototypes-{data_version(knowledge, cfg.category)}.pt"
        if cache.is_file():
            saved = torch.load(cache, weights_only=False)
            skipped = saved.get("skipped", [])
            if skipped:  # the dataset's warning was given when the cache was made: repeat it
                log.warning("%d models of the knowledge were left out of the prototypes", len(skipped))
                for row in skipped:  # shown with `kpengine -v`
                    log.info("skipped: model %s (%s): %s", row["model_id"], row["path"], row["reason"])
            return cls(saved["vectors"], saved["thresholds"], [tuple(p) for p in saved["partners"]], skipped)
        shapes = KeypointNetDataset(knowledge, cfg.category, cfg.train_split, n_points=cfg.n_points)
        protos = cls.fit(model, shapes, state["n_classes"])
        protos.skipped = shapes.skipped()
        save_checkpoint(cache, protos.__dict__)
        return protos

    def transfer(self, model: KeypointModel, points: np.ndarray) -> TransferResult:
        """Keypoints for one cloud (N, 3)."""
        emb = infer(model, [points])[0]  # (N, D)
        seen = np.isfinite(self.vectors).all(axis=1)
        sim = emb @ np.nan_to_num(self.vectors).T  # (N, C)
        index = sim.argmax(axis=0)
        conf = sim.max(axis=0)
        present = seen & (conf >= self.thresholds)
        for a, b in self.partners:
            both = (conf[a] - self.thresholds[a] + conf[b] - self.thresholds[b]) >= 0
            present[a] = present[b] = both and seen[a] and seen[b]
            if np.linalg.norm(points[index[a]] - points[index[b]]) < PARTNER_MIN_DISTANCE:
                lo = a if conf[a] < conf[b] else b
                far = np.linalg.norm(points - points[index[a + b - lo]], axis=1) >= PARTNER_MIN_DISTANCE
                index[lo] = int(np.where(far, sim[:, lo], -np.inf).argmax())
                conf[lo] = sim[index[lo], lo]
        return TransferResult(points, index, conf, present)


class TransferPredictor(Predictor):
    """Correspondences by transfer through an embedding network's prototypes."""

    evaluates_as = "correspondence"

    def __init__(self, model: KeypointModel, n_classes: int, prototypes: Prototypes | None = None):
        self.model = model
        self.n_classes = n_classes
        self.prototypes = prototypes

    def fit(self, shapes: Sequence[Shape]) -> Self:
        """Prototypes and presence thresholds from annotated shapes (the training split)."""
        self.prototypes = Prototypes.fit(self.model, shapes, self.n_classes)
        return self

    def predict(self, shapes: Sequence[Shape]) -> dict[str, dict[str, int]]:
        if self.prototypes is None:
            raise ValueError("fit the transfer predictor on annotated shapes first")
        return {
            s.model_id: {str(k): v for k, v in self.prototypes.transfer(self.model, s.points).correspondence().items()}
            for s in shapes
        }


def load_cloud(path: str | Path, n_points: int) -> tuple[str, np.ndarray]:
    """(model id, cloud (N, 3)) from a PCD, or from a mesh sampled deterministically to ``n_points``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("shape file not found", path=path)
    model_id = path.parent.parent.name if path.name == "model_normalized.obj" else path.stem
    if path.suffix.lower() == ".pcd":
        return model_id, load_pcd(path).points.astype(np.float32)
    mesh = load_mesh(path)  # its DataError names the file already
    try:
        return model_id, sample_surface(mesh, n_points, seed=seed_for(model_id)).points
    except ValueError as exc:
        raise DataError(str(exc), path=path) from exc


def transfer_file(
    run: str | Path, knowledge: str | Path, shape: str | Path, out: str | Path, *, png: str | Path | None = None
) -> tuple[TransferResult, list[dict[str, str | None]]]:
    """The ``kpengine transfer`` command as a function: JSON to ``out``, picture to ``png``;
    returns the result and the knowledge's models left out of the prototypes (with the reason)."""
    model, state = load_run(run, task="embedding")
    cfg = TrainConfig.from_json(state["config"])
    protos = Prototypes.for_run(run, model, state, knowledge)
    model_id, points = load_cloud(shape, cfg.n_points)
    result = protos.transfer(model, points)
    category = resolve_category(cfg.category)
    save_annotations(out, [result.to_annotation(category.synset, model_id)])
    if png:
        ids = np.where(result.present)[0]
        plot_shape_keypoints(
            png,
            points,
            points[result.index[ids]],
            ids,
            title=f"{category.name} {model_id[:12]}: {len(ids)} keypoints transferred ({cfg.backbone})",
        )
    return result, protos.skipped
