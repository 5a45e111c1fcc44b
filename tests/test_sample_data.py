"""The generated sample dataset keeps the invariants of the real KeypointNet files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import kpengine.data.sample as sample
from kpengine.categories import SYNSETS
from kpengine.data import KeypointNetDataset
from kpengine.data.sample import KEYPOINT_NAMES, README_MARKER, generate_sample_dataset
from kpengine.geometry.sampling import barycentric_points
from kpengine.geometry.transforms import rotate_about_y
from kpengine.io import layout
from kpengine.io.mesh import load_mesh
from kpengine.io.splits import SPLITS, load_split
from kpengine.metrics.relabel import official_turn, rotational_relabellings

CATEGORIES = ("chair", "table", "mug")
N = 24


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "data"
    summary = generate_sample_dataset(out, shapes_per_category=N, seed=0)
    assert summary.root == out.absolute()
    assert summary.models == {c: N for c in CATEGORIES}
    assert sum(summary.splits.values()) == 3 * N
    return out


@pytest.fixture(scope="module")
def datasets(root: Path) -> dict[str, KeypointNetDataset]:
    return {c: KeypointNetDataset(root, c, "all") for c in CATEGORIES}


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_layout_counts_and_no_problems(root: Path, datasets: dict[str, KeypointNetDataset]) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "annotations", "meshes", "pcds", "splits"]
    assert README_MARKER in (root / "README.md").read_text() and "seed 0" in (root / "README.md").read_text()
    for cat, ds in datasets.items():
        assert len(ds) == N and ds.problems == []
        synset = SYNSETS[cat]
        for shape in ds:
            assert shape.category.synset == synset and shape.source == "pcd" and shape.n_points == 2048
            assert layout.mesh_path(root, synset, shape.model_id) == (
                root / "meshes" / synset / shape.model_id / "models" / "model_normalized.obj"
            )
            assert shape.colors is not None and len(np.unique(shape.colors, axis=0)) >= 2  # coloured by part


def test_point_index_names_a_point_equal_to_xyz(datasets: dict[str, KeypointNetDataset]) -> None:
    for ds in datasets.values():
        for shape in ds:
            xyz = np.array([kp.xyz for kp in shape.annotation.keypoints])
            idx = np.array([kp.point_index for kp in shape.annotation.keypoints])
            assert len(set(idx.tolist())) == len(idx)
            np.testing.assert_allclose(shape.points[idx], xyz, atol=1e-6, rtol=0)


def test_mesh_barycentrics_rebuild_xyz_and_bbox_diagonal_is_one(
    root: Path, datasets: dict[str, KeypointNetDataset]
) -> None:
    for cat, ds in datasets.items():
        for shape in ds:
            mesh = load_mesh(layout.mesh_path(root, SYNSETS[cat], shape.model_id))
            kps = shape.annotation.keypoints
            uv = np.array([kp.face_uv for kp in kps])
            assert (uv >= 0).all() and np.allclose(uv.sum(axis=1), 1.0, atol=1e-12)
            rebuilt = barycentric_points(mesh, np.array([kp.face_index for kp in kps]), uv)
            np.testing.assert_allclose(rebuilt, np.array([kp.xyz for kp in kps]), atol=1e-9, rtol=0)
            lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
            assert abs(np.linalg.norm(hi - lo) - 1.0) < 1e-8
            np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-8)


def test_semantic_ids_sit_where_their_names_say(root: Path, datasets: dict[str, KeypointNetDataset]) -> None:
    for cat, ds in datasets.items():
        for shape in ds:
            ids = shape.semantic_ids.tolist()
            assert ids == sorted(set(ids)) and set(ids) <= set(KEYPOINT_NAMES[cat])
            at = dict(zip(ids, shape.keypoints.astype(np.float64), strict=True))
            mesh = load_mesh(layout.mesh_path(root, SYNSETS[cat], shape.model_id))
            bottom, top = mesh.vertices[:, 1].min(), mesh.vertices[:, 1].max()
            if cat == "chair":
                assert set(range(10)) <= set(ids)
                assert all(abs(at[i][1] - bottom) < 1e-6 for i in (6, 7, 8, 9))  # legs stand on the floor
                assert all(abs(at[i][1] - top) < 1e-6 for i in (0, 1))  # the back is the highest part
                assert at[2][2] < at[4][2] and at[0][0] < at[1][0]  # front is -z, left is -x
            elif cat == "table":
                legs, round_ = set(range(8)) <= set(ids), set(range(8, 14)) <= set(ids)
                assert legs != round_ and len(ids) == (8 if legs else 6)
                feet, tops = ((4, 5, 6, 7), (0, 1, 2, 3)) if legs else ((9,), (8, 10, 11, 12, 13))
                assert all(abs(at[i][1] - bottom) < 1e-6 for i in feet)
                assert all(abs(at[i][1] - top) < 1e-6 for i in tops)
            else:
                assert ids == list(range(7))
                assert abs(at[4][1] - bottom) < 1e-6 and all(abs(at[i][1] - top) < 1e-6 for i in range(4))
                assert at[2][2] < at[3][2] and bottom < at[6][1] < at[5][1] < top
    arms = [10 in s.semantic_ids for s in datasets["chair"]]
    assert 0 < sum(arms) < N  # some chairs lack ids other chairs have
    assert 0 < sum(8 in s.semantic_ids for s in datasets["table"]) < N


def test_symmetries_are_valid_and_geometric(root: Path, datasets: dict[str, KeypointNetDataset]) -> None:
    mirror_x, mirror_z = np.array([-1.0, 1.0, 1.0]), np.array([1.0, 1.0, -1.0])
    for cat, ds in datasets.items():
        raw = {m["model_id"]: m for m in json.loads((root / "annotations" / f"{cat}.json").read_text())}
        for shape in ds:
            xyz = np.array([kp.xyz for kp in shape.annotation.keypoints])
            sym = shape.symmetries
            assert sym.reflection, "every sample model has left/right pairs"
            for g in sym.reflection:
                a, b = xyz[g.kp_indexes]  # indexes into the keypoint list (IndexError if not)
                across_x = np.allclose(a, b * mirror_x, atol=1e-6)
                assert across_x or (cat == "table" and np.allclose(a, b * mirror_z, atol=1e-6)), (cat, g)
            for k, g in enumerate(sym.rotation):
                pts = xyz[g.kp_indexes]
                raw_group = raw[shape.model_id]["symmetries"]["rotation"][k]
                if g.is_circle:
                    c = g.circle
                    assert c is not None and np.allclose(c.normal, (0, 1, 0))
                    np.testing.assert_allclose(np.linalg.norm(pts - c.center, axis=1), c.radius, atol=1e-6)
                    np.testing.assert_allclose(pts[:, 1], c.center[1], atol=1e-6)
                    assert set(raw_group["circle"]) == {"center", "radius", "normal"}
                else:
                    assert g.circle is None and raw_group["circle"] == {}
                    centre = pts.mean(axis=0)
                    turned = rotate_about_y(pts, official_turn(1, len(pts)), centre)
                    np.testing.assert_allclose(turned, np.roll(pts, -1, axis=0), atol=1e-6)
    kinds = {tuple(len(g.kp_indexes) for g in s.symmetries.rotation) for s in datasets["table"]}
    assert {(4, 4), (2, 2, 2, 2), (4,)} <= kinds  # square, rectangular, round tables
    assert all(s.symmetries.rotation[0].is_circle for s in datasets["mug"])


def test_official_rotational_relabellings_map_keypoints_onto_keypoints(
    datasets: dict[str, KeypointNetDataset],
) -> None:
    ds = datasets["table"]
    four_legged = [s for s in ds if s.symmetries.rotation and not s.symmetries.rotation[0].is_circle]
    assert four_legged
    for shape in four_legged:
        labels = rotational_relabellings(shape, ds.n_classes)
        assert len(labels) == len(shape.symmetries.rotation[0].kp_indexes)
        for label in labels[1:]:
            assert sorted(label[label >= 0].tolist()) == sorted(shape.point_indices.tolist())


def test_splits_are_disjoint_complete_and_about_70_10_20(root: Path, datasets: dict[str, KeypointNetDataset]) -> None:
    entries = {s: load_split(root / "splits" / f"{s}.txt") for s in SPLITS}
    seen = [e for split in entries.values() for e in split]
    assert len(seen) == len(set(seen))
    everything = {(SYNSETS[c], mid) for c, ds in datasets.items() for mid in ds.model_ids}
    assert set(seen) == everything
    for cat in CATEGORIES:
        counts = {s: sum(syn == SYNSETS[cat] for syn, _ in entries[s]) for s in SPLITS}
        assert counts == {"train": 17, "val": 2, "test": 5}
        assert sum(len(KeypointNetDataset(root, cat, s)) for s in SPLITS) == N


def test_same_seed_same_bytes_other_seed_other_shapes(tmp_path: Path) -> None:
    kwargs = {"shapes_per_category": 4, "n_points": 256}
    generate_sample_dataset(tmp_path / "a", seed=7, **kwargs)
    generate_sample_dataset(tmp_path / "b", seed=7, **kwargs)
    generate_sample_dataset(tmp_path / "c", seed=8, **kwargs)
    a, b, c = (_tree(tmp_path / name) for name in "abc")
    assert len(a) == 1 + 3 + 3 + 2 * 12 and a == b
    assert a["annotations/chair.json"] != c["annotations/chair.json"]


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    kwargs = {"shapes_per_category": 1, "n_points": 64, "categories": ("mug",)}
    out = tmp_path / "out"
    out.mkdir()  # an empty directory may be filled
    generate_sample_dataset(out, **kwargs)
    before = _tree(out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_sample_dataset(out, seed=1, **kwargs)
    assert _tree(out) == before
    generate_sample_dataset(out, seed=1, overwrite=True, **kwargs)
    assert _tree(out) != before and "seed 1" in (out / "README.md").read_text()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not deleting"):
        generate_sample_dataset(foreign, overwrite=True, **kwargs)
    assert _tree(foreign) == {"thesis.tex": b"precious"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "out"]  # no temporary leftovers


def test_a_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken_save_pcd(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(sample, "save_pcd", broken_save_pcd)
    with pytest.raises(OSError, match="disk full"):
        generate_sample_dataset(tmp_path / "out", shapes_per_category=2, n_points=64)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs", [{"categories": ("car",)}, {"shapes_per_category": 0}, {"seed": -1}, {"n_points": 3}]
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_sample_dataset(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_keypoints_sharing_a_nearest_point_get_distinct_points() -> None:
    points = np.array([[0.0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]])
    queries = np.array([[0.1, 0, 0], [0.2, 0, 0], [4.0, 0, 0]])
    assert sample._unique_nearest(points, queries).tolist() == [0, 1, 2]


def test_summary_reads_well(root: Path) -> None:
    text = str(sample.SampleSummary(root, 0, {"chair": 2, "mug": 1}, {"train": 1, "val": 1, "test": 1}))
    assert text == f"3 sample models (chair 2, mug 1; train 1, val 1, test 1) in {root}, seed 0"
