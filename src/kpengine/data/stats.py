"""Dataset statistics in the style of the KeypointNet paper's Tables 2 and 3.

Counts come from annotation and split files plus a check that geometry files exist; no
geometry is parsed, so statistics of the full dataset take about a second. With
``check=True`` (``kpengine stats --problems``) every model is also loaded the way every
other command loads it, and every file that cannot be used is listed by model and reason:
clouds, meshes (also those a cloud makes unnecessary for point tasks: they still cannot be
rendered or served) and annotations alike. One unreadable annotation file is a problem of
its category, not the end of the statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kpengine.categories import NAMES, SYNSETS, resolve_category
from kpengine.errors import DataError, Problem
from kpengine.io import layout
from kpengine.io.annotations import load_annotations
from kpengine.io.splits import SPLITS, split_index


@dataclass
class CategoryStats:
    category: str
    synset: str
    models: int
    keypoints: int
    semantic_ids: int
    keypoints_per_model_min: int
    keypoints_per_model_median: float
    keypoints_per_model_max: int
    models_by_split: dict[str, int]
    keypoints_by_split: dict[str, int]
    with_pcd: int
    with_mesh: int
    without_geometry: int
    problems: list[str] = field(default_factory=list)
    #: models that no command can use (None: geometry was not read; see ``check``)
    unusable: int | None = None
    #: the category's annotation file could not be read at all
    error: str | None = None


def _annotation_files(root: Path) -> list[Path]:
    folder = root / "annotations"
    files = sorted(p for p in folder.glob("*.json") if p.stem != "all")
    if not files and (folder / "all.json").is_file():
        files = [folder / "all.json"]
    return files


def _check_models(root: Path, synset: str, models: list) -> tuple[list[Problem], int]:  # noqa: ANN001
    """Load every model as the dataset does; (problems, models that cannot be used)."""
    from kpengine.data.dataset import load_shape_cloud
    from kpengine.io.mesh import load_mesh

    category = resolve_category(synset)
    problems: list[Problem] = []
    unusable = 0
    for m in models:
        try:
            shape = load_shape_cloud(root, category, m)
        except DataError as exc:
            problems.append(Problem(m.model_id, exc.reason, exc.path))
            unusable += 1
            continue
        except Exception as exc:  # noqa: BLE001 - listed like any other reason
            problems.append(Problem(m.model_id, f"{type(exc).__name__}: {exc}"))
            unusable += 1
            continue
        mesh = layout.mesh_path(root, synset, m.model_id)
        if shape.source == "pcd" and mesh is not None:  # the cloud served; is the mesh usable too?
            try:
                load_mesh(mesh)
            except (DataError, OSError) as exc:
                reason = exc.reason if isinstance(exc, DataError) else str(exc)
                problems.append(Problem(m.model_id, f"{reason} (the cloud is usable)", str(mesh), fatal=False))
    return problems, unusable


def dataset_stats(root: str | Path, categories: list[str] | None = None, *, check: bool = False) -> list[CategoryStats]:
    """Statistics for each category present under ``root`` (or only those asked for).

    ``check`` reads every geometry file (see the module docstring). Raises ``DataError``
    when ``root`` is not a dataset (no ``annotations/`` folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("no such dataset folder", path=root)
    if not (root / "annotations").is_dir():
        raise DataError("not a KeypointNet-layout dataset: no annotations/ folder", path=root)
    split_of = split_index(root)
    wanted = None if categories is None else {resolve_category(c).synset for c in categories}
    by_synset: dict[str, list] = {}
    problems: dict[str, list[Problem]] = {}
    broken: dict[str, str] = {}
    for path in _annotation_files(root):
        key = SYNSETS.get(path.stem, path.stem)
        if wanted is not None and path.stem != "all" and key not in wanted:
            continue  # a broken file of another category must not stop this one
        try:
            models, probs = load_annotations(path)
        except DataError as exc:
            broken[key] = str(exc)
            continue
        for m in models:
            by_synset.setdefault(m.class_id, []).append(m)
        if probs:
            problems.setdefault(key, []).extend(probs)
    out = []
    for synset in sorted({*by_synset, *broken}, key=lambda s: NAMES.get(s, s)):
        if wanted is not None and synset not in wanted:
            continue
        if synset in broken:
            out.append(_unreadable(synset, broken[synset]))
            continue
        models = by_synset[synset]
        unusable = None
        if check:
            found, unusable = _check_models(root, synset, models)
            problems.setdefault(synset, []).extend(found)
        counts = np.array([len(m.keypoints) for m in models])
        models_by_split = {s: 0 for s in (*SPLITS, "none")}
        kps_by_split = {s: 0 for s in (*SPLITS, "none")}
        with_pcd = with_mesh = without = 0
        for m, n in zip(models, counts):
            split = split_of.get((synset, m.model_id), "none")
            models_by_split[split] += 1
            kps_by_split[split] += int(n)
            has_pcd = layout.pcd_path(root, synset, m.model_id).is_file()
            has_mesh = layout.mesh_path(root, synset, m.model_id) is not None
            with_pcd += has_pcd
            with_mesh += has_mesh
            without += not (has_pcd or has_mesh)
        out.append(
            CategoryStats(
                category=NAMES.get(synset, synset),
                synset=synset,
                models=len(models),
                keypoints=int(counts.sum()),
                semantic_ids=len({kp.semantic_id for m in models for kp in m.keypoints}),
                keypoints_per_model_min=int(counts.min()),
                keypoints_per_model_median=float(np.median(counts)),
                keypoints_per_model_max=int(counts.max()),
                models_by_split=models_by_split,
                keypoints_by_split=kps_by_split,
                with_pcd=with_pcd,
                with_mesh=with_mesh,
                without_geometry=without,
                problems=[str(p) for p in problems.get(synset, [])],
                unusable=unusable,
            )
        )
    return out


def _unreadable(synset: str, error: str) -> CategoryStats:
    splits = {s: 0 for s in (*SPLITS, "none")}
    return CategoryStats(
        NAMES.get(synset, synset), synset, 0, 0, 0, 0, 0.0, 0, splits, dict(splits), 0, 0, 0, [error], error=error
    )


def stats_json(stats: list[CategoryStats]) -> dict:
    return {"categories": [asdict(s) for s in stats]}


def stats_table(stats: list[CategoryStats]) -> str:
    """A fixed-width table: one row per category and a total row."""
    head = (
        f"{'category':<11}{'synset':>9}{'models':>8}{'train':>7}{'val':>6}{'test':>6}{'kps':>8}{'ids':>5}"
        f"{'kp/model min/med/max':>22}{'pcd':>6}{'mesh':>6}{'none':>6}"
    )
    checked = any(s.unusable is not None for s in stats)
    if checked:
        head += f"{'unusable':>10}"
    rows = [head, "-" * len(head)]
    for s in stats:
        spl = s.models_by_split
        if s.error is not None:
            rows.append(f"{s.category:<11}{s.synset:>9}  unreadable annotation file (see problems)")
            continue
        rows.append(
            f"{s.category:<11}{s.synset:>9}{s.models:>8}{spl['train']:>7}{spl['val']:>6}{spl['test']:>6}{s.keypoints:>8}"
            f"{s.semantic_ids:>5}{f'{s.keypoints_per_model_min}/{s.keypoints_per_model_median:g}/{s.keypoints_per_model_max}':>22}"
            f"{s.with_pcd:>6}{s.with_mesh:>6}{s.without_geometry:>6}" + (f"{s.unusable:>10}" if checked else "")
        )
    if len(stats) > 1:
        tot = lambda f: sum(f(s) for s in stats)  # noqa: E731
        rows.append("-" * len(head))
        rows.append(
            f"{'total':<11}{'':>9}{tot(lambda s: s.models):>8}{tot(lambda s: s.models_by_split['train']):>7}"
            f"{tot(lambda s: s.models_by_split['val']):>6}{tot(lambda s: s.models_by_split['test']):>6}"
            f"{tot(lambda s: s.keypoints):>8}{'':>5}{'':>22}{tot(lambda s: s.with_pcd):>6}"
            f"{tot(lambda s: s.with_mesh):>6}{tot(lambda s: s.without_geometry):>6}"
            + (f"{tot(lambda s: s.unusable or 0):>10}" if checked else "")
        )
    if not checked:
        rows.append("(pcd and mesh count files present; `--problems` reads them all and lists what cannot be used)")
    return "\n".join(rows)
