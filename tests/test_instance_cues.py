"""Taking instance cues away from viewpoint training: background blanking, same-view mixing, label smoothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kpengine.errors import DataError
from kpengine.image.crops import crop_square, to_tensor
from kpengine.image.datasets import CROP_MARGIN, ViewSet
from kpengine.image.instance_cues import (
    blank_outside_box,
    blend,
    box_in_crop,
    cutmix,
    instance_ids,
    same_view_partners,
)
from kpengine.image.tasks.viewpoint import ViewpointConfig, ViewpointTask
from kpengine.image.viewpoint import viewpoint_loss


def test_instance_ids_read_the_epfl_sequence_and_refuse_other_names():
    assert instance_ids(["tripod_seq_03_001.jpg", "a/b/tripod_seq_17_120.jpg"]).tolist() == [3, 17]
    with pytest.raises(DataError, match="render_0001.png"):
        instance_ids(["tripod_seq_01_001.jpg", "render_0001.png"])


def test_partners_are_other_instances_at_the_same_view_mirrors_included():
    az = np.array([10.0, 20.0, 350.0, 100.0])
    inst = np.array([1, 1, 2, 3])
    rng = np.random.default_rng(0)
    # target 15 deg of instance 1: its own frames are excluded; 350 deg mirrored is 10 deg (5 away)
    j, m = same_view_partners(np.array([15.0]), np.array([1]), az, inst, 7.5, rng)
    assert (j[0], m[0]) == (2, True)
    # nothing of another instance near 100 or its mirror 260
    j, _ = same_view_partners(np.array([100.0]), np.array([3]), az, inst, 7.5, rng)
    assert j[0] == -1
    # 345 deg: 350 as it is, 10 and 20 mirrored (350, 340), each 5 deg away; 100 never
    seen = set()
    for _ in range(200):
        j, m = same_view_partners(np.array([345.0]), np.array([3]), az, inst, 7.5, rng)
        seen.add((int(j[0]), bool(m[0])))
    assert seen == {(2, False), (0, True), (1, True)}
    # a tolerance just under 5 deg finds none of them
    j, _ = same_view_partners(np.array([345.0]), np.array([3]), az, inst, 4.9, rng)
    assert j[0] == -1


def test_cutmix_pastes_one_rectangle_of_the_partner_in_place():
    gen = torch.Generator().manual_seed(3)
    x = torch.zeros(5, 3, 20, 30)
    y = torch.arange(5 * 3 * 20 * 30, dtype=torch.float32).reshape(5, 3, 20, 30) + 1.0
    out = cutmix(x, y, torch.tensor([0.0, 0.1, 0.25, 0.5, 1.0]), gen)
    assert torch.equal(out[0], x[0]) and torch.equal(x, torch.zeros_like(x))  # nothing pasted, input untouched
    for i, f in enumerate([0.1, 0.25, 0.5, 1.0], start=1):
        changed = out[i, 0] != 0
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        assert changed.sum() == len(rows) * len(cols)  # a full rectangle
        assert (rows == np.arange(rows[0], rows[-1] + 1)).all() and (cols == np.arange(cols[0], cols[-1] + 1)).all()
        assert torch.equal(out[i][:, changed], y[i][:, changed])  # taken from the same place
        assert abs(int(changed.sum()) - f * 600) <= 0.16 * f * 600 + 30  # about f of the area
    assert torch.equal(out[4], y[4])  # the whole image


def test_blend_weights_by_hand():
    x, y = torch.full((2, 1, 2, 2), 4.0), torch.full((2, 1, 2, 2), 8.0)
    out = blend(x, y, torch.tensor([1.0, 0.25]))
    assert torch.allclose(out[0], x[0]) and torch.allclose(out[1], torch.full((1, 2, 2), 7.0))


def test_box_in_crop_by_hand():
    # a 100 x 50 box, margin 1.4: the crop covers 140 px, so at 70 px the box is 50 x 25, centred
    assert box_in_crop((7.0, 9.0, 100.0, 50.0), 70, 1.4) == (10, 22, 50, 25)


def test_blanking_keeps_the_box_of_a_real_crop_and_greys_the_rest():
    img = np.zeros((200, 300, 3), np.uint8)
    img[...] = (0, 0, 255)  # background blue
    bbox = (100.0, 70.0, 120.0, 60.0)
    img[70:130, 100:220] = (255, 0, 0)  # the object: red, exactly its box
    crops = to_tensor(crop_square(img, bbox, CROP_MARGIN, 84)[None])
    blank_outside_box(crops, [bbox], CROP_MARGIN)
    c = crops[0].numpy().transpose(1, 2, 0).astype(int)
    red = (c[..., 0] > 200) & (c[..., 2] < 50)
    grey = (c == 128).all(-1)
    # the crop covers 168 px of the photo at 0.5 px per photo px: the box is 60 x 30, rows 27..56
    assert red[28:56, 13:71].all() and grey[:27].all() and grey[57:].all() and grey[:, :12].all()
    assert not ((c[..., 2] > 200) & (c[..., 0] < 50)).any()  # no blue background left
    assert (red | grey).mean() > 0.97  # only the box's anti-aliased rim is neither


def test_label_smoothing_is_a_mixture_with_the_uniform_target():
    torch.manual_seed(0)
    logits = {"azimuth": torch.randn(6, 24), "elevation": torch.randn(6, 12)}
    az = torch.tensor([0.0, 7.5, 100.0, 181.0, 270.0, 359.0])
    plain = float(viewpoint_loss(logits, az))
    uniform = float(-F.log_softmax(logits["azimuth"], -1).mean())  # cross-entropy against 1/24 each
    assert float(viewpoint_loss(logits, az, smoothing=0.2)) == pytest.approx(0.8 * plain + 0.2 * uniform, rel=1e-5)
    flat = {"azimuth": torch.zeros(6, 24), "elevation": torch.zeros(6, 12)}
    assert float(viewpoint_loss(flat, az, smoothing=0.3)) == pytest.approx(math.log(24), rel=1e-6)


def _two_cars(n: int = 24) -> ViewSet:
    """Car 1 all black, car 2 all white, each at the same n azimuths."""
    crops = torch.cat(
        [torch.zeros(n, 3, 48, 48, dtype=torch.uint8), torch.full((n, 3, 48, 48), 255, dtype=torch.uint8)]
    )
    az = torch.arange(n, dtype=torch.float32).repeat(2) * (360.0 / n)
    names = [f"tripod_seq_{s:02d}_{f:03d}.jpg" for s in (1, 2) for f in range(1, n + 1)]
    return ViewSet(crops, az, torch.full_like(az, float("nan")), names)


@pytest.mark.parametrize("mode", ["cutmix", "blend"])
def test_the_task_mixes_each_crop_with_the_other_car_and_keeps_the_labels(mode):
    views = _two_cars()
    cfg = ViewpointConfig(
        task="viewpoint", data="unused", category="car", size=32, mix=1.0, mix_mode=mode, mix_fraction=0.5,
        blank_outside_box=False, zoom_jitter=0.0, shift_jitter=0.0,
    )  # fmt: skip
    task = ViewpointTask(cfg)
    task._sets = (views, None)
    torch.manual_seed(1)
    idx = list(range(0, 48, 3))
    x, az, _ = task.data().collate(idx)
    plain = ViewpointTask(ViewpointConfig(**{**cfg.to_json(), "mix": 0.0}))
    plain._sets = (views, None)
    torch.manual_seed(1)  # the same draws for the shared augmentation: the mix draws only after them
    x0, az0, _ = plain.data().collate(idx)
    assert torch.equal(az, az0)  # labels as without mixing
    for k, i in enumerate(idx):
        own_black = i < 24
        # the share of pixels nearer the other car's colour than the unmixed input's own value
        moved = ((x[k] - x0[k]).abs().mean(0) > 1e-3).float().mean()
        assert 0.05 < moved <= 1.0, (mode, i)
        if mode == "cutmix":
            assert 0.05 <= moved <= 0.5 + 0.1
        brighter = (x[k] - x0[k]).mean() > 0
        assert bool(brighter) == own_black  # black gets white from car 2, white gets black from car 1


def test_unset_instance_settings_follow_the_epfl_recipe_only_on_epfl_cars(tmp_path):
    from kpengine.image.tasks.viewpoint import EPFL_RECIPE

    (tmp_path / "epfl").mkdir()
    (tmp_path / "epfl" / "tripod-seq.txt").write_text("20 376 250\n")
    epfl = ViewpointTask(ViewpointConfig(task="viewpoint", data=str(tmp_path / "epfl"), category="car"))
    renders = ViewpointTask(ViewpointConfig(task="viewpoint", data=str(tmp_path), category="car"))
    assert epfl.setting("blank_outside_box") is EPFL_RECIPE["blank_outside_box"] is True
    assert epfl.setting("mix") == EPFL_RECIPE["mix"]
    assert renders.setting("blank_outside_box") is False and renders.setting("mix") == 0.0
    given = ViewpointTask(ViewpointConfig(task="viewpoint", data=str(tmp_path / "epfl"), category="car", mix=0.25))
    assert given.setting("mix") == 0.25


def test_inference_greys_outside_the_box_only_for_a_run_trained_so(tmp_path):
    """A run trained with blanking stores it resolved and its network ignores the background beside the
    box at inference (the property blanking exists for); a run trained without sees the background."""
    from kpengine.image.pipeline import estimate_viewpoint
    from kpengine.learn.runs import Task

    (tmp_path / "epfl").mkdir()
    (tmp_path / "epfl" / "tripod-seq.txt").write_text("20 376 250\n")
    cfg = ViewpointConfig(task="viewpoint", data=str(tmp_path / "epfl"), category="car", widths=[4, 8])
    epfl = ViewpointTask(cfg)
    assert cfg.blank_outside_box is True  # resolved at construction, so the checkpoint's config says it
    torch.manual_seed(0)
    blanked = epfl.model().eval()
    plain = ViewpointTask(ViewpointConfig(task="viewpoint", data=str(tmp_path), category="car", widths=[4, 8])).model()
    plain.load_state_dict(blanked.state_dict())
    plain.eval()
    assert blanked.blank_outside_box is True and plain.blank_outside_box is False
    # a checkpoint's config reloads to a blanking network even where the data folder is gone
    state = {"config": {**cfg.to_json(), "data": str(tmp_path / "gone")}, "model": blanked.state_dict()}
    assert Task.load_model.__func__(ViewpointTask, state).blank_outside_box is True

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[40:80, 50:110] = True  # a 60 x 40 box: the 1.4x crop square shows background above and below it
    other = image.copy()
    other[:36] = 255 - other[:36]  # change only background beside the box (clear of the resampled edge), in the crop
    other[84:] = 255 - other[84:]
    a, b = estimate_viewpoint(blanked, image, mask), estimate_viewpoint(blanked, other, mask)
    assert a["azimuth_probabilities"] == b["azimuth_probabilities"]
    c, d = estimate_viewpoint(plain, image, mask), estimate_viewpoint(plain, other, mask)
    assert c["azimuth_probabilities"] != d["azimuth_probabilities"]
