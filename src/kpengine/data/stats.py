"""Dataset statistics in the style of the KeypointNet paper's Tables 2 and 3.

Counts come from annotation and split files plus a check that geometry files exist; no
geometry is parsed, so statistics of the full dataset take about a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kpengine.categories import NAMES, SYNSETS, resolve_category
from kpengine.errors import Problem
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


def _annotation_files(root: Path) -> list[Path]:
    folder = root / "annotations"
    files = sorted(p for p in folder.glob("*.json") if p.stem != "all")
    if not files and (folder / "all.json").is_file():
        files = [folder / "all.json"]
    return files


def dataset_stats(root: str | Path, categories: list[str] | None = None) -> list[CategoryStats]:
    """Statistics for each category present under ``root`` (or only those asked for)."""
    root = Path(root)
    split_of = split_index(root)
    wanted = None if categories is None else {resolve_category(c).synset for c in categories}
    by_synset: dict[str, list] = {}
    problems: dict[str, list[Problem]] = {}
    for path in _annotation_files(root):
        models, probs = load_annotations(path)
        for m in models:
            by_synset.setdefault(m.class_id, []).append(m)
        if probs:
            key = SYNSETS.get(path.stem, path.stem)
            problems.setdefault(key, []).extend(probs)
    out = []
    for synset in sorted(by_synset, key=lambda s: NAMES.get(s, s)):
        if wanted is not None and synset not in wanted:
            continue
        models = by_synset[synset]
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
            )
        )
    return out


def stats_json(stats: list[CategoryStats]) -> dict:
    return {"categories": [asdict(s) for s in stats]}


def stats_table(stats: list[CategoryStats]) -> str:
    """A fixed-width table: one row per category and a total row."""
    head = (
        f"{'category':<11}{'synset':>9}{'models':>8}{'train':>7}{'val':>6}{'test':>6}{'kps':>8}{'ids':>5}"
        f"{'kp/model min/med/max':>22}{'pcd':>6}{'mesh':>6}{'none':>6}"
    )
    rows = [head, "-" * len(head)]
    for s in stats:
        spl = s.models_by_split
        rows.append(
            f"{s.category:<11}{s.synset:>9}{s.models:>8}{spl['train']:>7}{spl['val']:>6}{spl['test']:>6}{s.keypoints:>8}"
            f"{s.semantic_ids:>5}{f'{s.keypoints_per_model_min}/{s.keypoints_per_model_median:g}/{s.keypoints_per_model_max}':>22}"
            f"{s.with_pcd:>6}{s.with_mesh:>6}{s.without_geometry:>6}"
        )
    if len(stats) > 1:
        tot = lambda f: sum(f(s) for s in stats)  # noqa: E731
        rows.append("-" * len(head))
        rows.append(
            f"{'total':<11}{'':>9}{tot(lambda s: s.models):>8}{tot(lambda s: s.models_by_split['train']):>7}"
            f"{tot(lambda s: s.models_by_split['val']):>6}{tot(lambda s: s.models_by_split['test']):>6}"
            f"{tot(lambda s: s.keypoints):>8}{'':>5}{'':>22}{tot(lambda s: s.with_pcd):>6}"
            f"{tot(lambda s: s.with_mesh):>6}{tot(lambda s: s.without_geometry):>6}"
        )
    return "\n".join(rows)
