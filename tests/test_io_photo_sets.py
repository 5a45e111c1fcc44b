"""PF-WILLOW and SPair readers: the real sets read as documented; bad files name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from kpengine.errors import DataError
from kpengine.io.pf_willow import load_group, load_pf_willow, willow_pairs
from kpengine.io.spair import load_spair_pairs
from kpengine.metrics.pck2d import keypoint_box_size, transfer_pck


def _willow_group(folder: Path, n: int = 3, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(0, size[0], 10), rng.uniform(0, size[1], 10)])  # (2, 10): x row, y row
    for i in range(n):
        Image.new("RGB", size).save(folder / f"p{i}.png")
        savemat(folder / f"p{i}.mat", {"pts_coord": pts + i})
    return pts


def test_willow_group_reads_points_as_x_y_rows_and_makes_ordered_pairs(tmp_path: Path) -> None:
    pts = _willow_group(tmp_path / "duck_S")
    photos = load_group(tmp_path / "duck_S")
    assert [p.name for p in photos] == ["p0", "p1", "p2"]
    np.testing.assert_allclose(photos[2].points, pts.T + 2)  # row k = keypoint k = (x, y)
    pairs = willow_pairs(photos)
    assert len(pairs) == 6 and all(s.name != t.name for s, t in pairs)
    assert len({(s.name, t.name) for s, t in pairs}) == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"other": np.zeros((2, 10))}, "no 'pts_coord' field"),
        ({"pts_coord": np.zeros((10, 2))}, "expected (2, 10)"),
        ({"pts_coord": np.full((2, 10), np.nan)}, "non-finite"),
        ({"pts_coord": np.full((2, 10), 500.0)}, "outside the 40x30 photo"),
    ],
)
def test_willow_bad_mat_names_the_file_and_what_was_expected(tmp_path: Path, content: dict, message: str) -> None:
    _willow_group(tmp_path / "g")
    savemat(tmp_path / "g" / "p1.mat", content)
    with pytest.raises(DataError, match="p1.mat") as err:
        load_group(tmp_path / "g")
    assert message in str(err.value)


def test_willow_missing_or_unreadable_files(tmp_path: Path) -> None:
    _willow_group(tmp_path / "g")
    (tmp_path / "g" / "p0.mat").unlink()
    with pytest.raises(DataError, match=r"p0.mat.*keypoint file missing"):
        load_group(tmp_path / "g")
    (tmp_path / "g" / "p0.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match=r"p0.mat.*MAT file"):
        load_group(tmp_path / "g")
    with pytest.raises(DataError, match="group folder missing"):
        load_pf_willow(tmp_path, ("nope",))


def _spair(tmp_path: Path, **change) -> Path:
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (20, 10)).save(tmp_path / name)
    entry = {
        "source_path": "a.jpg", "target_path": "b.jpg", "category": "aeroplane",
        "source_points": [[1, 2], [3, 4]], "target_points": [[5, 6], [7, 8]],
        "source_bounding_box": [0, 0, 10, 5], "target_bounding_box": [1, 1, 19, 9], "mirror": 0,
    }  # fmt: skip
    entry.update(change)
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([entry]))
    return path


def test_spair_pair_reads_points_boxes_and_keeps_extra_fields(tmp_path: Path) -> None:
    (pair,) = load_spair_pairs(_spair(tmp_path))
    np.testing.assert_array_equal(pair.target_points, [[5, 6], [7, 8]])
    np.testing.assert_array_equal(pair.target_box, [1, 1, 19, 9])
    assert pair.source_path == tmp_path / "a.jpg" and pair.extra == {"mirror": 0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target_points": [[5, 6]]}, "2 source points and 1 target points"),
        ({"source_points": [[1, 2, 3]]}, "source_points has shape (1, 3), expected K x 2"),
        ({"target_bounding_box": [5, 5, 2, 9]}, "target_bounding_box [5.0, 5.0, 2.0, 9.0] is empty"),
        ({"source_bounding_box": None}, "source_bounding_box"),
        ({"target_path": "missing.jpg"}, "photo 'missing.jpg' not found"),
        ({"category": 3}, "'category' missing"),
    ],
)
def test_spair_bad_entry_names_pair_and_field(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(DataError, match="pair 0") as err:
        load_spair_pairs(_spair(tmp_path, **change))
    assert message in str(err.value)


def test_pck_scale_is_the_keypoint_box_longer_side() -> None:
    target = np.array([[0.0, 0.0], [40.0, 10.0], [20.0, 30.0]])
    assert keypoint_box_size(target) == 40.0  # w 40 > h 30
    pred = target + np.array([[3.9, 0.0], [0.0, 4.1], [np.nan, 0.0]])
    np.testing.assert_array_equal(transfer_pck(pred, target, 40.0, 0.1), [True, False, False])


def test_real_pf_willow_and_spair(shared_data: Path) -> None:
    groups = load_pf_willow(shared_data / "images" / "pf_willow")
    assert len(groups) == 10 and all(len(g) == 10 for g in groups.values())
    assert sum(len(willow_pairs(g)) for g in groups.values()) == 900
    (pair,) = load_spair_pairs(shared_data / "images" / "spair" / "spair_aeroplane_pair.json")
    assert pair.category == "aeroplane" and pair.source_points.shape == pair.target_points.shape == (7, 2)
    inside = (pair.target_points >= pair.target_box[:2] - 1) & (pair.target_points <= pair.target_box[2:] + 1)
    assert inside.all()  # the annotated points lie in the annotated box
