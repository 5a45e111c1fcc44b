"""Training renders: the render set's labels checked against the shapes and cameras that made them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpengine.cli.main import main
from kpengine.data.dataset import KeypointNetDataset
from kpengine.errors import DataError
from kpengine.image.backgrounds import BackgroundBank
from kpengine.image.renderset import view_sample
from kpengine.image.synth import SynthConfig, build_render_set, facing_azimuth
from kpengine.image.types import mask_box
from kpengine.io.backgrounds import BackgroundPhoto, find_background_photos
from kpengine.io.renderset import load_render_set
from kpengine.render.cameras import Camera, rt_to_viewpoint


@pytest.fixture(scope="module", autouse=True)
def _need_gl() -> None:
    from kpengine.render.gl import INSTALL_HINT, gl_available

    if not gl_available():
        if os.environ.get("CI"):
            pytest.fail(f"no OpenGL context: {INSTALL_HINT}; CI must have it")
        pytest.skip(f"no OpenGL context: {INSTALL_HINT}")


@pytest.fixture(scope="module")
def render_set(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rs") / "set"
    build_render_set(
        sample_root, ["chair", "mug"], "train", out, views_per_shape=3, cfg=SynthConfig(size=64), seed=3, limit=2
    )
    return out


def test_labels_agree_with_shapes_and_cameras(sample_root: Path, render_set: Path) -> None:
    rs = load_render_set(render_set, check_files=True)
    assert len(rs) == 2 * 2 * 3 and {v["category"] for v in rs} == {"chair", "mug"}
    shapes = {c: KeypointNetDataset(sample_root, c, "train") for c in ("chair", "mug")}
    for i, v in enumerate(rs.views):
        s = view_sample(rs, i)
        shape = shapes[v["category"]].by_id(v["model_id"])
        assert s.image.shape == (64, 64, 3) and s.mask.shape == (64, 64)
        # keypoints = the shape's 3D keypoints through the stored camera (independent projection)
        cam = Camera.from_json(v["camera"])
        uv, _ = cam.project(shape.keypoints)
        np.testing.assert_allclose(s.keypoints.uv, uv, atol=1e-3)
        np.testing.assert_array_equal(s.keypoints.semantic_ids, shape.semantic_ids)
        # the stored angles are the camera's (inverse of the viewpoint -> camera map)
        vp = rt_to_viewpoint(cam.R, cam.t, np.array(v["center"]))
        assert abs((vp.azimuth - v["azimuth"] + 180) % 360 - 180) < 1e-3
        assert vp.elevation == pytest.approx(v["elevation"], abs=1e-3)
        assert vp.theta == pytest.approx(v["theta"], abs=1e-3)
        assert vp.distance == pytest.approx(v["distance"], rel=1e-5)
        assert -10 <= v["elevation"] <= 60 and abs(v["theta"]) <= 15
        assert v["facing_azimuth"] == pytest.approx(facing_azimuth(v["azimuth"]))
        # centred and sized as the crop promises: margin 0.06..0.14 of the longer side
        x0, y0, x1, y1 = mask_box(s.mask)
        side = max(x1 - x0, y1 - y0)
        assert 64 / 1.28 - 3 <= side <= 64 / 1.12 + 3
        assert abs((x0 + x1) / 2 - 32) <= 3 and abs((y0 + y1) / 2 - 32) <= 3
        # depth and normals live on the object only; the depth is in front of the camera near `distance`
        assert (s.depth[~s.mask] == 0).all() and (s.depth[s.mask] > 0).all()
        assert np.abs(s.depth[s.mask] - v["distance"]).max() < 1.0
        n = np.linalg.norm(s.normals[s.mask], axis=1)
        assert np.median(np.abs(n - 1)) < 0.02
        # visible keypoints sit on the object (one pixel of slack for the downsampled mask)
        vis = s.keypoints.visible
        if vis.any():
            ij = np.rint(s.keypoints.uv[vis][:, ::-1]).astype(int).clip(0, 63)
            near = np.zeros_like(s.mask)
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    near |= np.roll(np.roll(s.mask, di, 0), dj, 1)
            assert near[ij[:, 0], ij[:, 1]].all()
    stacked = rs.images([0, 5])
    assert stacked["image"].shape == (2, 64, 64, 3) and stacked["mask"].dtype == bool
    np.testing.assert_array_equal(stacked["mask"][1], view_sample(rs, 5).mask)
    # azimuths cover the circle rather than clustering (12 views, uniform sampling)
    az = rs.arrays()["azimuth"]
    assert np.ptp(az) > 120


def test_resume_skips_finished_shapes_and_rerenders_the_same(render_set: Path, sample_root: Path) -> None:
    shard = next((render_set / "shards" / "mug").glob("*.json"))
    views = json.loads(shard.read_text())["views"]
    before = (render_set / views[0]["image"]).read_bytes()
    shard.unlink()
    (render_set / views[0]["image"]).unlink()
    result = build_render_set(
        sample_root, ["chair", "mug"], "train", render_set, views_per_shape=3, cfg=SynthConfig(size=64), seed=3, limit=2
    )
    assert result["rendered_views"] == 3 and result["resumed_views"] == 9
    assert (render_set / views[0]["image"]).read_bytes() == before  # deterministic per (seed, category, model)
    assert len(load_render_set(render_set)) == 12


def test_test_split_and_bad_index_refused(render_set: Path, sample_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="test shapes stay unseen"):
        build_render_set(sample_root, ["chair"], "test", tmp_path / "x", views_per_shape=1)
    index = json.loads((render_set / "index.json").read_text())
    del index["views"][2]["camera"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"views\[2\].*lacks camera"):
        load_render_set(tmp_path / "bad")
    with pytest.raises(DataError, match="no index.json"):
        load_render_set(tmp_path)


def test_background_crops_stay_off_the_object(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 120, (120, 160, 3)).astype(np.uint8)
    photo[30:70, 50:110] = (255, 0, 0)  # the "object": pure red, nowhere else
    Image.fromarray(photo).save(tmp_path / "p.png")
    mask_photo = photo.copy()
    Image.fromarray(mask_photo).save(tmp_path / "thing_rgb.png")
    m = np.zeros((120, 160), np.uint8)
    m[30:70, 50:110] = 255
    Image.fromarray(m).save(tmp_path / "thing_mask.png")
    found = find_background_photos(tmp_path)
    assert [p.path.name for p in found.photos] == ["thing_rgb.png"]
    bank = BackgroundBank([BackgroundPhoto(tmp_path / "p.png", ((50, 30, 110, 70),)), *found.photos], min_side=20)
    for _ in range(40):
        crop, name = bank.sample(rng, 32)
        assert crop.shape == (32, 32, 3) and name != "generated"
        red = (crop[..., 0] > 200) & (crop[..., 1] < 50)
        assert not red.any(), name
    # a photo whose object fills it leaves no room: generated backgrounds instead
    full = BackgroundBank([BackgroundPhoto(tmp_path / "p.png", ((0, 0, 160, 120),))], min_side=20)
    assert full.sample(rng, 32)[1] == "generated"


@pytest.mark.realdata
def test_real_background_photos_are_found_with_their_objects(shared_data: Path) -> None:
    found = find_background_photos(shared_data / "images")
    sources = {p.source for p in found.photos}
    assert "epfl_cars" in sources and not found.problems
    assert all(p.boxes or p.mask_path for p in found.photos)
    # evaluation photos are held out: EPFL test sequences, PF-WILLOW, the chair demo photo, the SPair pair
    assert not any("tripod_seq_1" in p.path.name and int(p.path.name.split("_")[2]) >= 11 for p in found.photos)
    assert "pf_willow" not in sources and "mask" not in sources and "spair" not in sources
    assert "spair" in {p.source for p in find_background_photos(shared_data / "images", held_out=()).photos}


def test_cli_render_views(sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["render-views", "--data", str(sample_root), "--category", "table", "--limit", "1"]
    argv += ["--views-per-shape", "2", "--size", "48", "--out", str(out), "--contact-sheet", str(tmp_path / "s.png")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["views"] == 2 and summary["categories"] == {"table": 2} and summary["rendered_views"] == 2
    assert Image.open(tmp_path / "s.png").size[0] > 0
    # the test split renders only as an evaluation set, which says so in its index
    test_argv = ["render-views", "--data", str(sample_root), "--category", "table", "--split", "test"]
    assert main([*test_argv, "--out", str(tmp_path / "x")]) == 1
    assert "test shapes stay unseen" in capsys.readouterr().err and not (tmp_path / "x" / "index.json").exists()
    assert main([*test_argv, "--evaluation", "--limit", "1", "--views-per-shape", "1", "--size", "32",
                 "--out", str(tmp_path / "ev")]) == 0  # fmt: skip
    ev = load_render_set(tmp_path / "ev")
    assert ev.config["evaluation"] is True and {v["split"] for v in ev} == {"test"}
    test_ids = {s.model_id for s in KeypointNetDataset(sample_root, "table", "test")}
    assert {v["model_id"] for v in ev} <= test_ids


def test_image_tasks_read_a_render_set_per_category(render_set: Path) -> None:
    from kpengine.image.renders import load_image_set, mask_sets, view_sets

    rs = load_render_set(render_set)
    mug = [v for v in rs.views if v["category"] == "mug"]
    items = load_image_set(render_set, "mug")
    assert [it.name for it in items] == [v["id"] for v in mug]  # only the mug views, in index order
    for it, v in zip(items, mug):
        np.testing.assert_array_equal(it.image, np.asarray(Image.open(render_set / v["image"]).convert("RGB")))
        np.testing.assert_array_equal(it.mask, np.asarray(Image.open(render_set / v["mask"])) > 127)
    train, val = view_sets(render_set, render_set, size=48, category="mug")
    assert len(train) == len(mug) and val is not None and len(val) == len(mug)
    np.testing.assert_allclose(train.azimuth.numpy(), [v["azimuth"] for v in mug], atol=1e-4)
    np.testing.assert_allclose(train.elevation.numpy(), [v["elevation"] for v in mug], atol=1e-4)
    assert tuple(train.crops.shape) == (len(mug), 3, 48, 48)
    masks, none = mask_sets(render_set, None, size=32, category="03001627")  # a synset names the category too
    assert none is None and len(masks) == sum(v["category"] == "chair" for v in rs.views)
    assert set(np.unique(masks.masks.numpy())) <= set(range(256)) and masks.masks.float().mean() > 20
    with pytest.raises(DataError, match=r"no views of category 'table' \(it has chair, mug\)"):
        view_sets(render_set, None, category="table")


def test_keypoint_heatmap_task_trains_on_a_render_set(render_set: Path, tmp_path: Path) -> None:
    from kpengine.image.heatmap import predict_keypoints
    from kpengine.image.pipeline import load_image_run
    from kpengine.image.renders import load_render_views
    from kpengine.image.tasks.keypoint_heatmap import keypoint_set

    items = load_render_views(render_set, "chair")
    ks = keypoint_set(items, 96)
    k = 1 + max(max(it.annotation["keypoints"]["semantic_ids"]) for it in items)
    assert tuple(ks.uv.shape) == (len(items), k, 2)
    # image px -> stored px: the 64 px render is scaled by 1.5 about pixel edges, (u + 0.5) 1.5 - 0.5
    kp = items[0].annotation["keypoints"]
    sid, (u, v) = kp["semantic_ids"][0], kp["uv"][0]
    np.testing.assert_allclose(ks.uv[0, sid].numpy(), [(u + 0.5) * 1.5 - 0.5, (v + 0.5) * 1.5 - 0.5], atol=1e-4)
    assert bool(ks.visible[0, sid]) == bool(kp["visible"][0])
    run = tmp_path / "hm"
    cfg = json.dumps({"val_data": str(render_set), "size": 32, "store_size": 48})
    argv = ["train", "--task", "keypoint-heatmap", "--data", str(render_set), "--category", "chair",
            "--out", str(run), "--epochs", "1", "--config", cfg]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["n_ids"] == k and saved["batch_size"] == 32  # the channels from the data; the task's own batch
    row = json.loads((run / "history.json").read_text())["epochs"][0]
    assert 0 <= row["pck_img_0.1"] <= 1 and np.isfinite(row["train_loss"])
    net, _ = load_image_run(run, "keypoint_heatmap", "chair")
    pred = predict_keypoints(net, items[0].image, 32)
    assert set(pred) == {str(i) for i in range(k)}
    assert all(-0.5 <= p["uv"][0] <= 63.5 and -0.5 <= p["uv"][1] <= 63.5 for p in pred.values())
    with pytest.raises(DataError, match="category"):
        load_image_run(run, "keypoint_heatmap", "mug")
