"""Real-photo helpers of issue 11 (photos): unannotated meshes as training shapes, masks predicted inside a box."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import trimesh

from kpengine.image.crops import MEAN, STD
from kpengine.image.datasets import box_square, predict_mask, predict_mask_in_box
from kpengine.image.synth import unannotated_mesh_shapes
from kpengine.io.image import load_image
from kpengine.io.spair import load_spair_pairs

AIRPLANE = "02691156"


def _obj(root: Path, model_id: str) -> None:
    d = root / "meshes" / AIRPLANE / model_id / "models"
    d.mkdir(parents=True)
    trimesh.creation.box(extents=(0.3, 0.1, 0.9)).export(d / "model_normalized.obj")


def test_unannotated_meshes_leave_out_annotated_split_and_mesh_less_models(tmp_path: Path) -> None:
    ids = {k: c * 32 for k, c in zip(("annotated", "broken", "test", "free", "nofile"), "abcde")}
    kp = {"xyz": [0, 0, 0], "rgb": [0, 0, 0], "semantic_id": 0, "pcd_info": {"point_index": 0}}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "airplane.json").write_text(
        json.dumps(
            [
                {"class_id": AIRPLANE, "model_id": ids["annotated"], "keypoints": [kp]},
                {"class_id": AIRPLANE, "model_id": ids["broken"], "keypoints": "not a list"},
            ]
        )
    )
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test.txt").write_text(f"{AIRPLANE}-{ids['test']}\n")
    for k in ("annotated", "broken", "test", "free"):
        _obj(tmp_path, ids[k])
    (tmp_path / "meshes" / AIRPLANE / ids["nofile"] / "models").mkdir(parents=True)  # a folder with no OBJ

    (shape,) = unannotated_mesh_shapes(tmp_path, "airplane")
    assert shape.model_id == ids["free"] and shape.source == "mesh" and shape.mesh_path.is_file()
    assert shape.keypoints.shape == (0, 3) and shape.semantic_ids.shape == (0,)
    np.testing.assert_allclose(np.ptp(shape.points, 0), [0.3, 0.1, 0.9], atol=1e-6)  # the mesh's own vertices


def test_real_airplane_meshes_without_annotation(keypointnet: Path) -> None:
    """The OBJ files minus the annotated ids, read here with plain json: 5 of the 6 OBJ airplanes."""
    folder = keypointnet / "meshes" / AIRPLANE
    with_obj = {p.name for p in folder.iterdir() if (p / "models" / "model_normalized.obj").is_file()}
    annotated = {e["model_id"] for e in json.loads((keypointnet / "annotations" / "airplane.json").read_text())}
    split = set()
    for name in ("train", "val", "test"):
        split |= {line.strip().split("-", 1)[1] for line in (keypointnet / "splits" / f"{name}.txt").open()}
    found = {s.model_id for s in unannotated_mesh_shapes(keypointnet, "airplane")}
    assert found == with_obj - annotated - split
    assert len(with_obj) == 6 and len(found) == 5


class _Bright(torch.nn.Module):
    """A stand-in silhouette network: logit = red channel - 0.5 (in [0, 1] units), shape (1, S, S)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0] * STD + MEAN
        return red - 0.5


def test_box_square_is_centred_with_the_margin_on_the_longer_side() -> None:
    # box 40 x 20 centred at (30, 30): side ceil(40 * 1.2) = 48, corner (30 - 24, 30 - 24)
    assert box_square(np.array([10.0, 20.0, 50.0, 40.0]), 0.1) == (6, 6, 48)


def test_mask_in_box_finds_the_boxed_object_where_the_whole_photo_finds_the_larger_one() -> None:
    image = np.zeros((120, 200, 3), np.uint8)
    small = (slice(20, 50), slice(10, 40))  # rows, columns of the boxed object
    large = (slice(40, 110), slice(100, 190))  # a larger bright thing outside the box
    image[small] = 255
    image[large] = 255
    net = _Bright()
    whole = predict_mask(net, image, 64)
    assert whole[large].mean() > 0.9 and not whole[small].any()
    boxed = predict_mask_in_box(net, image, 64, np.array([5.0, 15.0, 45.0, 55.0]))
    truth = np.zeros(image.shape[:2], bool)
    truth[small] = True
    iou = (boxed & truth).sum() / (boxed | truth).sum()
    assert iou > 0.9 and not boxed[large].any()


def test_real_spair_source_box_reaches_past_the_photo(shared_data: Path) -> None:
    """SPair's frontal source photo: its box starts at x = 1, so the square crop leaves the photo. A network
    that marks every pixel gives exactly the box's pixels (inclusive bounds) inside the photo."""
    (pair,) = load_spair_pairs(shared_data / "images" / "spair" / "spair_aeroplane_pair.json")
    image = load_image(pair.source_path)
    x0, y0, side = box_square(pair.source_box)
    assert x0 < 0  # the square reaches past the left border

    class _All(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones_like(x[:, 0])

    mask = predict_mask_in_box(_All(), image, 64, pair.source_box)
    h, w = image.shape[:2]
    xmin, ymin, xmax, ymax = pair.source_box.astype(int)
    assert xmax == w  # SPair's box reaches one past the last column (333 of a 333-wide photo): clipped
    xmax, ymax = min(xmax, w - 1), min(ymax, h - 1)
    assert mask.shape == image.shape[:2]
    assert mask.sum() == (xmax - xmin + 1) * (ymax - ymin + 1)
    assert mask[ymin : ymax + 1, xmin : xmax + 1].all()
