"""Retrieval of knowledge-base shapes for a photo: by the joint embedding (an ``image-embedding`` run),
and the HoG nearest-neighbour baseline (the photo's HoG against the shapes' light-field HoGs).

``retrieve(run, image, knowledge, top)`` is what ``kpengine retrieve`` prints: the ``top`` annotated
shapes of ``knowledge`` (a KeypointNet-layout root) nearest to the photo's point in the run's shape
space. Only shapes that are both annotated there and in the shape space can be returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpengine.errors import DataError
from kpengine.image.retrieval.embedding import distances_to, embed, photo_input

TASK = "image_embedding"


@dataclass
class Retriever:
    """A trained image-embedding network and the shape space it regresses into."""

    model: torch.nn.Module
    category: str
    model_ids: list[str]
    splits: list[str]
    coords: np.ndarray
    size: int
    run: str

    @classmethod
    def from_run(cls, run: str | Path, category: str | None = None) -> Retriever:
        """Load an image-embedding run (its best checkpoint, else the last); refuses another task or
        category with a DataError naming the checkpoint."""
        from kpengine.image.tasks import image_task
        from kpengine.learn.checkpoint import best_checkpoint, load_checkpoint

        path = best_checkpoint(run)
        state = load_checkpoint(path, task=TASK, category=category)
        if "shape_space" not in state:
            raise DataError("checkpoint holds no shape space (not an image-embedding run?)", path=path)
        s = state["shape_space"]
        model = image_task(TASK).load_model(state)
        return cls(
            model,
            str(s["category"]),
            list(s["model_ids"]),
            list(s["splits"]),
            np.asarray(s["coords"], np.float64),
            int(state["config"]["size"]),
            str(run),
        )

    def embed_photos(self, images: list[np.ndarray], masks: list[np.ndarray | None] | None = None) -> np.ndarray:
        """Photos (H, W, 3) uint8 (optional masks) -> their points in the shape space (Q, dim)."""
        masks = masks or [None] * len(images)
        x = torch.cat([photo_input(im, self.size, m) for im, m in zip(images, masks)])
        return embed(self.model, x)

    def rank(
        self, image: np.ndarray, mask: np.ndarray | None = None, allowed: list[str] | None = None
    ) -> list[tuple[str, float]]:
        """(model id, distance) of the shapes (``allowed`` ones only, if given), nearest first."""
        point = self.embed_photos([image], [mask])
        d = distances_to(point, self.coords)[0]
        rows = range(len(self.model_ids)) if allowed is None else [self.index()[m] for m in allowed]
        return sorted(((self.model_ids[r], float(d[r])) for r in rows), key=lambda x: x[1])

    def index(self) -> dict[str, int]:
        return {m: i for i, m in enumerate(self.model_ids)}


def annotated_ids(root: str | Path, category: str) -> list[str]:
    """Model ids annotated for ``category`` under a KeypointNet-layout root."""
    from kpengine.categories import resolve_category
    from kpengine.io.annotations import load_annotations
    from kpengine.io.layout import annotation_path

    cat = resolve_category(category)
    path = annotation_path(Path(root), cat.name)
    if path is None:
        raise DataError(f"no annotations of category {cat.name!r} here: nothing to retrieve", path=root)
    models, _ = load_annotations(path)
    return [m.model_id for m in models]


def retrieve(
    run: str | Path,
    image: str | Path,
    knowledge: str | Path,
    top: int = 5,
    *,
    mask: str | Path | None = None,
    category: str | None = None,
) -> dict[str, Any]:
    """The ``top`` knowledge-base shapes nearest to the photo in the run's shape space, as JSON-ready
    ``{"run", "image", "category", "candidates", "shapes": [{"rank", "model_id", "distance", "split"}]}``."""
    from kpengine.io.image import load_image, load_mask

    if top < 1:
        raise DataError(f"--top must be at least 1, got {top}")
    retriever = Retriever.from_run(run, category)
    photo = load_image(image)
    m = load_mask(mask, expected_shape=photo.shape[:2]) if mask is not None else None
    known = set(annotated_ids(knowledge, retriever.category))
    allowed = [mid for mid in retriever.model_ids if mid in known]
    if not allowed:
        raise DataError(
            f"none of the {len(known)} annotated {retriever.category} shapes here is in the run's shape space "
            f"({len(retriever.model_ids)} shapes): train the shape embedding on this knowledge base",
            path=knowledge,
        )
    ranked = retriever.rank(photo, m, allowed)[:top]
    split = dict(zip(retriever.model_ids, retriever.splits))
    return {
        "run": str(run),
        "image": str(image),
        "category": retriever.category,
        "candidates": len(allowed),
        "shapes": [
            {"rank": k + 1, "model_id": mid, "distance": round(d, 6), "split": split[mid]}
            for k, (mid, d) in enumerate(ranked)
        ],
    }


def hog_distances(images: list[np.ndarray], hog: np.ndarray, spec) -> np.ndarray:  # noqa: ANN001 - LightFieldSpec
    """The HoG nearest-neighbour baseline: photo crops (H, W, 3) uint8 (centred, as :func:`photo_input`
    assumes) against shapes' light fields ``hog`` (N, V, H) -> (Q, N): the distance from the photo's
    HoG to its nearest view of each shape."""
    from kpengine.image.crops import crop_square
    from kpengine.image.retrieval.lightfield import hog_descriptor, to_grey

    out = np.empty((len(images), hog.shape[0]))
    flat = hog.reshape(-1, hog.shape[-1]).astype(np.float64)
    for q, im in enumerate(images):
        h, w = im.shape[:2]
        crop = crop_square(im, (0.0, 0.0, float(w), float(h)), 1.0, spec.size)
        f = hog_descriptor(to_grey(crop), spec).astype(np.float64)
        d = np.sqrt(np.clip((flat * flat).sum(1) - 2 * flat @ f + f @ f, 0, None)).reshape(hog.shape[:2])
        out[q] = d.min(1)
    return out
