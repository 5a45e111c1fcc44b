"""The dataset API: one object per (root, category, split) yielding :class:`Shape`.

Geometry for a model comes from its official PCD when there is one, otherwise from a
deterministic 2,048-point sample of its mesh with each keypoint snapped to the nearest
sampled point. Models that cannot be used (no geometry, unreadable file, keypoint index
out of range, NaNs, ...) are listed in ``dataset.problems`` with the reason; they never
stop the other models from loading.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kpengine.categories import Category, resolve_category
from kpengine.data.shape import Shape
from kpengine.errors import DataError, Problem
from kpengine.geometry.sampling import DEFAULT_POINTS, barycentric_points, sample_surface, seed_for, snap_to_points
from kpengine.io import layout
from kpengine.io.annotations import ModelAnnotation, load_annotations
from kpengine.io.mesh import load_mesh
from kpengine.io.pcd import load_pcd
from kpengine.io.splits import SPLITS, load_split

log = logging.getLogger(__name__)
ALL = "all"


def _reason_kind(reason: str) -> str:
    """The stable head of a problem's reason ("no geometry", "unreadable PCD data", ...)."""
    return re.split(r"[:(]", reason.removeprefix("element "), maxsplit=1)[0].strip() if reason else "unknown"


def load_shape_cloud(
    root: Path, category: Category, annotation: ModelAnnotation, n_points: int = DEFAULT_POINTS
) -> Shape:
    """Build a :class:`Shape` from a model's annotation and its geometry under ``root``.

    Raises ``DataError`` naming the model and file when the geometry is missing or unusable.
    """
    mid = annotation.model_id
    pcd_file = layout.pcd_path(root, category.synset, mid)
    mesh_file = layout.mesh_path(root, category.synset, mid)
    kps = annotation.keypoints
    sem = np.array([kp.semantic_id for kp in kps], dtype=np.int64)
    snap = np.zeros(len(kps))
    mesh = None
    if pcd_file.is_file():
        cloud = load_pcd(pcd_file)
        points, colors, source = cloud.points, cloud.colors, "pcd"
        idx = np.array([-1 if kp.point_index is None else kp.point_index for kp in kps], dtype=np.int64)
        bad = idx >= len(points)
        if bad.any():
            raise DataError(
                f"keypoint point_index {idx[bad].tolist()} out of range for a cloud of {len(points)} points",
                path=pcd_file,
                model_id=mid,
            )
        missing = idx < 0
        if missing.any():  # keypoints without pcd_info: snap their xyz to the cloud
            xyz = _positions(kps, points, None, root, category, mid)
            idx[missing], snap[missing] = snap_to_points(points, xyz[missing])
    elif mesh_file is not None:
        mesh = load_mesh(mesh_file)
        try:
            sample = sample_surface(mesh, n_points, seed=seed_for(mid))
        except ValueError as exc:
            raise DataError(str(exc), path=mesh_file, model_id=mid) from exc
        points, colors, source = sample.points, None, "mesh"
        xyz = _positions(kps, None, mesh, root, category, mid)
        idx, snap = snap_to_points(points, xyz)
    else:
        raise DataError(
            f"no geometry: neither {pcd_file} nor a mesh under {root / 'meshes' / category.synset / mid}",
            model_id=mid,
        )
    xyz = _positions(kps, points, mesh, root, category, mid, allow_pcd=True, idx=idx)
    return Shape(
        model_id=mid,
        category=category,
        points=points,
        colors=colors,
        keypoints=xyz.astype(np.float32),
        semantic_ids=sem,
        point_indices=idx,
        symmetries=annotation.symmetries,
        annotation=annotation,
        source=source,  # type: ignore[arg-type]
        snap_distance=snap,
        mesh_path=mesh_file,
    )


def _positions(kps, points, mesh, root, category, mid, allow_pcd=False, idx=None) -> np.ndarray:
    """Each keypoint's position: its ``xyz``, else its mesh barycentrics, else its cloud point."""
    out = np.full((len(kps), 3), np.nan)
    for k, kp in enumerate(kps):
        if kp.xyz is not None:
            out[k] = kp.xyz
        elif kp.face_index is not None:
            mesh_file = layout.mesh_path(root, category.synset, mid)
            if mesh is None:
                if mesh_file is None:
                    continue
                mesh = load_mesh(mesh_file)
            if mesh_file is not None and mesh_file.suffix.lower() != ".obj":
                raise DataError(
                    f"keypoint {k} has no xyz, and its mesh_info.face_index counts the triangles of "
                    f"model_normalized.obj in file order; this model's mesh is {mesh_file.name}, whose triangles "
                    "come in another order, so the keypoint cannot be placed (add xyz, or provide the OBJ)",
                    path=mesh_file,
                    model_id=mid,
                )
            if kp.face_index >= len(mesh.faces):
                raise DataError(f"keypoint {k}: face_index {kp.face_index} >= {len(mesh.faces)} faces", model_id=mid)
            out[k] = barycentric_points(mesh, np.array([kp.face_index]), np.array([kp.face_uv]))[0]
        elif allow_pcd and idx is not None and idx[k] >= 0:
            out[k] = points[idx[k]]
    if np.isnan(out).any():
        missing = np.where(np.isnan(out).any(axis=1))[0].tolist()
        raise DataError(f"cannot place keypoints {missing}: no xyz, no usable mesh_info or pcd_info", model_id=mid)
    return out


class KeypointNetDataset(Sequence[Shape]):
    """Shapes of one category and split under a KeypointNet-layout root.

    ``split`` is ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every annotated model).
    ``category`` is a name (``"chair"``) or a synset (``"03001627"``); ``model_ids``
    restricts loading to those models. Loading happens here, in a few threads; afterwards
    indexing is free.
    """

    def __init__(
        self,
        root: str | Path,
        category: str | Category,
        split: str = ALL,
        *,
        n_points: int = DEFAULT_POINTS,
        workers: int = 4,
        model_ids: Collection[str] | None = None,
    ):
        self.root = Path(root)
        self.category = category if isinstance(category, Category) else resolve_category(category)
        if split != ALL and split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join((*SPLITS, ALL))}")
        self.split = split
        self.problems: list[Problem] = []
        annotations = self._annotations()
        wanted = self._split_ids(annotations)
        if model_ids is not None:
            unknown = sorted(set(model_ids) - set(wanted))
            if unknown:
                raise DataError(f"models not in {self.category.name}/{split}: {', '.join(unknown[:5])}")
            wanted = [m for m in wanted if m in set(model_ids)]
        jobs = [annotations[m] for m in wanted]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results = list(pool.map(lambda a: self._try_load(a, n_points), jobs))
        self.shapes: list[Shape] = [s for s in results if s is not None]
        self._by_id = {s.model_id: s for s in self.shapes}
        #: annotated models of the split whose geometry could not be used (they have ground
        #: truth, so a benchmark counts them as predicting nothing)
        self.unloaded: dict[str, ModelAnnotation] = {a.model_id: a for a, s in zip(jobs, results) if s is None}
        if self.problems:
            log.warning("%s", self.problem_summary())
            for problem in self.problems:  # shown with `kpengine -v`
                log.info("%s/%s: %s", self.category.name, self.split, problem)

    # ------------------------------------------------------------------ loading

    def _annotations(self) -> dict[str, ModelAnnotation]:
        path = layout.annotation_path(self.root, self.category.name)
        if path is None:
            expected = self.root / "annotations" / f"{self.category.name}.json"
            raise DataError(f"no annotations for {self.category.name}: expected {expected} or annotations/all.json")
        models, problems = load_annotations(path)
        self.problems += problems
        out: dict[str, ModelAnnotation] = {}
        for m in models:
            if m.class_id != self.category.synset:
                continue  # all.json holds every category
            if m.model_id in out:
                self.problems.append(Problem(m.model_id, "annotated twice; keeping the first", str(path), fatal=False))
                continue
            out[m.model_id] = m
        self._category_n_classes = 1 + max((kp.semantic_id for m in out.values() for kp in m.keypoints), default=-1)
        return out

    def _split_ids(self, annotations: dict[str, ModelAnnotation]) -> list[str]:
        if self.split == ALL:
            return list(annotations)
        path = layout.split_path(self.root, self.split)
        entries = [mid for syn, mid in load_split(path) if syn == self.category.synset]
        for mid in entries:
            if mid not in annotations:
                self.problems.append(Problem(mid, f"listed in {self.split} split but has no annotation", str(path)))
        return [mid for mid in entries if mid in annotations]

    def _try_load(self, annotation: ModelAnnotation, n_points: int) -> Shape | None:
        try:
            return load_shape_cloud(self.root, self.category, annotation, n_points)
        except DataError as exc:
            self.problems.append(Problem(annotation.model_id, exc.reason, exc.path))
        except Exception as exc:  # noqa: BLE001 - one broken model must not stop the rest
            self.problems.append(Problem(annotation.model_id, f"{type(exc).__name__}: {exc}"))
        return None

    def skipped(self) -> list[dict[str, str | None]]:
        """The models left out, one row each (``model_id``, ``reason``, ``path``): what every
        command's JSON output names (``evaluate``, ``train``, ``predict``, ``baseline``,
        ``transfer``), so that a user sees which models a number is missing, not just how many."""
        return [{"model_id": p.model_id, "reason": p.reason, "path": p.path} for p in self.problems if p.fatal]

    def problem_summary(self) -> str:
        """One line: how many models were skipped, grouped by the kind of reason."""
        kinds = Counter(_reason_kind(p.reason) for p in self.problems if p.fatal)
        warnings = sum(not p.fatal for p in self.problems)
        parts = [f"{n} {kind}" for kind, n in kinds.most_common()]
        text = f"{self.category.name}/{self.split}: {sum(kinds.values())} models skipped ({', '.join(parts) or 'none'})"
        if warnings:
            text += f", {warnings} warnings"
        return text + "; `kpengine -v` names them, `kpengine stats --problems` lists every unusable file"

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> Shape:  # type: ignore[override]
        return self.shapes[index]

    def __iter__(self) -> Iterator[Shape]:
        return iter(self.shapes)

    def by_id(self, model_id: str) -> Shape:
        try:
            return self._by_id[model_id]
        except KeyError:
            raise KeyError(f"model {model_id} is not in {self.category.name}/{self.split}") from None

    @property
    def model_ids(self) -> list[str]:
        return [s.model_id for s in self.shapes]

    @property
    def n_classes(self) -> int:
        """Number of semantic ids: one more than the largest id of the category (all splits),
        as the official benchmark counts them."""
        return self._category_n_classes

    def __repr__(self) -> str:
        return (
            f"KeypointNetDataset({str(self.root)!r}, {self.category.name!r}, {self.split!r}: "
            f"{len(self)} shapes, {len(self.problems)} problems)"
        )
