"""Single-view reconstruction (issue 12): sketch targets from renders, the networks' shapes, the
sketch and voxels tasks through learn.runs (loss falls, resume), and photo -> mesh with its bad
inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from kpengine.cli.main import main
from kpengine.errors import DataError
from kpengine.image.reconstruct.data import load_sketch_set, shape_voxels
from kpengine.image.reconstruct.nets import NaturalnessNet, SketchNet, VoxelNet, gradient_penalty, sketch_errors
from kpengine.image.reconstruct.photo import load_network, reconstruct_photo
from kpengine.image.renderset import view_sample
from kpengine.io.renderset import load_render_set
from kpengine.io.voxels import load_voxels, save_voxels
from kpengine.learn.runs import train_run


@pytest.fixture(scope="module")
def render_set(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kpengine.render.gl import INSTALL_HINT, gl_available

    if not gl_available():
        if os.environ.get("CI"):
            pytest.fail(f"no OpenGL context: {INSTALL_HINT}; CI must have it")
        pytest.skip(f"no OpenGL context: {INSTALL_HINT}")
    from kpengine.image.synth import SynthConfig, build_render_set

    out = tmp_path_factory.mktemp("rs") / "set"
    build_render_set(sample_root, ["chair"], "train", out, views_per_shape=2, cfg=SynthConfig(size=64), seed=1, limit=4)
    return out


def test_sketch_targets_face_the_camera_and_sit_around_the_centre(render_set: Path) -> None:
    sk = load_sketch_set(render_set, 32)
    rs = load_render_set(render_set)
    assert len(sk) == len(rs) == 8
    on = sk.mask > 0.5
    # camera frame: z forward, so a visible surface's normal points back at the camera (n_z < 0)
    nz = sk.normals[:, 2][on]
    assert (nz < 0.05).float().mean() > 0.95
    np.testing.assert_allclose(torch.linalg.norm(sk.normals.permute(0, 2, 3, 1)[on], dim=-1), 1.0, atol=1e-4)
    # depth relative to the camera's distance to the box centre: within the shape's half-diagonal
    assert sk.depth[on].abs().max() <= 0.5 + 1e-3
    assert (sk.depth[~on] == 0).all() and (sk.normals.permute(0, 2, 3, 1)[~on] == 0).all()
    # the mask block-averages the rendered one: same area fraction
    full = np.stack([view_sample(rs, i).mask for i in range(len(rs))]).mean((1, 2))
    np.testing.assert_allclose(sk.mask.mean((1, 2)).numpy(), full, atol=1e-6)


def test_ground_truth_of_a_mesh_shape(sample_root: Path, render_set: Path) -> None:
    mid = load_render_set(render_set).views[0]["model_id"]
    occ, source = shape_voxels(sample_root, "chair", mid, 32)
    assert source in ("mesh", "pcd") and occ.shape == (32, 32, 32) and 50 < occ.sum() < 32**3 / 2


@pytest.mark.parametrize("resolution", [32, 64])
def test_network_shapes_and_gradients(resolution: int) -> None:
    torch.manual_seed(0)
    out = SketchNet((8, 16))(torch.randn(2, 3, 32, 32))
    assert (
        out["mask"].shape == (2, 32, 32)
        and out["depth"].shape == (2, 32, 32)
        and out["normals"].shape == (2, 3, 32, 32)
    )
    np.testing.assert_allclose(out["normals"].norm(dim=1).detach(), 1.0, atol=1e-4)
    v = VoxelNet(resolution, 32, (8, 16), latent=32, channels=16)(torch.randn(2, 5, 32, 32))
    assert v.shape == (2, resolution, resolution, resolution)
    critic = NaturalnessNet(resolution, 4)
    assert critic(torch.rand(2, resolution, resolution, resolution)).shape == (2,)
    gp = gradient_penalty(critic, torch.rand(2, *v.shape[1:]), torch.sigmoid(v.detach()))
    gp.backward()
    assert torch.isfinite(gp)
    # the penalty reaches every weight (the head's bias shifts scores, not their gradient)
    assert all(p.grad is not None for n, p in critic.named_parameters() if n != "head.bias")


def test_sketch_errors_by_hand() -> None:
    mask = torch.zeros(1, 4, 4)
    mask[0, :2] = 1.0
    normals = torch.zeros(1, 3, 4, 4)
    normals[:, 2] = -1.0
    pred_n = normals.clone()
    pred_n[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # 90 degrees off at one of 8 pixels
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, :3] = 5.0  # 12 predicted pixels, 8 true: IoU 8 / 12
    depth = torch.zeros(1, 4, 4)
    err = sketch_errors({"mask": logits, "depth": depth + 0.1, "normals": pred_n}, mask, depth, normals)
    assert err["mask_iou"].item() == pytest.approx(8 / 12)
    assert err["depth_mae"].item() == pytest.approx(0.1)
    assert err["normal_deg"].item() == pytest.approx(90 / 8)


def _train(
    task_name: str, out: Path | None, epochs: int, data: Path, shapes: Path, resume: bool = False, **more
) -> dict:
    from kpengine.learn.registry import TASKS

    TASKS.add_package("kpengine.image.tasks")
    cls = TASKS.get(task_name)
    extra = {"shapes": str(shapes), "resolution": 32, **more} if task_name == "voxels" else {}
    cfg = cls.config_class(
        task=task_name, data=str(data), category="chair", val_data=str(data), size=32, widths=[8, 16],
        epochs=epochs, batch_size=4, lr=3e-3, lr_schedule="constant", **extra,
    )  # fmt: skip
    return train_run(cls(cfg), out, resume=resume, progress=False)


@pytest.mark.parametrize("task_name", ["sketch", "voxels"])
def test_loss_falls_and_resume_continues(task_name: str, render_set: Path, sample_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _train(task_name, tmp_path / "run", 3, render_set, sample_root)
    summary = _train(task_name, tmp_path / "run", 6, render_set, sample_root, resume=True)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert summary["epochs"] == 6 and [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    key = "mask_iou" if task_name == "sketch" else "voxel_iou"
    assert key in hist[-1]


def test_basis_network_with_mirrors_trains_and_reloads(render_set: Path, sample_root: Path, tmp_path: Path) -> None:
    """The PCA-coefficient 3D estimator with mirrored views (shape_space): its loss falls, the saved
    basis comes back with the weights, and the reloaded network gives the same grids."""
    torch.set_num_threads(1)
    _train("voxels", tmp_path / "run", 5, render_set, sample_root, basis=3, mirror=True)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"] and "voxel_iou" in hist[-1]
    net = load_network(tmp_path / "run", "voxels")
    assert net.basis == 3 and net.basis_vectors.abs().sum() > 0
    # 4 training shapes and their mirrors: the basis rows are orthonormal
    b = net.basis_vectors[0]
    np.testing.assert_allclose((b @ b.T).numpy(), np.eye(3), atol=1e-4)
    sk = load_sketch_set(render_set, 32)
    x = sk.sketches(torch.arange(2))
    with torch.no_grad():
        again = load_network(tmp_path / "run", "voxels")
        assert torch.equal(net(x), again(x))


@pytest.fixture(scope="module")
def runs(render_set: Path, sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ("sketch", "voxels"):
        _train(name, root / name, 4, render_set, sample_root)
        out[name] = root / name
    return out


def test_cli_reconstruct_writes_mesh_voxels_and_picture(
    runs: dict[str, Path], render_set: Path, tmp_path: Path, capsys
) -> None:
    rs = load_render_set(render_set)
    v = rs.views[0]
    args = ["reconstruct", "--runs", str(runs["sketch"]), str(runs["voxels"]), "--image", str(render_set / v["image"])]
    args += ["--mask", str(render_set / v["mask"]), "--out", str(tmp_path / "m.obj")]
    args += ["--voxels", str(tmp_path / "v.npy"), "--png", str(tmp_path / "p.png"), "--threshold", "0.3"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    grid = load_voxels(tmp_path / "v.npy")
    assert grid.shape == (32, 32, 32) and summary["occupied"] == int((grid > 0.3).sum()) > 0
    assert summary["faces"] > 0 and (tmp_path / "m.obj").is_file() and (tmp_path / "p.png").is_file()


def test_bad_inputs_are_refused_and_nothing_is_written(runs: dict[str, Path], render_set: Path, tmp_path: Path) -> None:
    sketch = load_network(runs["sketch"], "sketch")
    voxels = load_network(runs["voxels"], "voxels")
    image = view_sample(load_render_set(render_set), 0).image
    with pytest.raises(DataError, match="empty"):
        reconstruct_photo(image, sketch, voxels, mask=np.zeros(image.shape[:2], bool))
    border = np.zeros(image.shape[:2], bool)
    border[:, :10] = True
    with pytest.raises(DataError, match="border"):
        reconstruct_photo(image, sketch, voxels, mask=border)
    with torch.no_grad():
        voxels.out.bias.fill_(-100.0)  # nothing above any threshold
    mask = view_sample(load_render_set(render_set), 0).mask
    with pytest.raises(DataError, match="no voxel above"):
        reconstruct_photo(image, sketch, voxels, mask=mask)
    with pytest.raises(DataError, match="32³, not 64³"):
        load_network(runs["voxels"], "voxels", resolution=64)
    with pytest.raises(DataError, match="cannot reconstruct 'bed'"):
        load_network(runs["voxels"], "voxels", category="bed")
    with pytest.raises(DataError, match="task 'sketch'"):
        load_network(runs["sketch"], "voxels")
    # through the CLI: an all-empty mask, so no mesh file appears
    from kpengine.io.image import save_image

    save_image(tmp_path / "empty.png", np.zeros(image.shape[:2], bool))
    save_image(tmp_path / "img.png", image)
    args = ["reconstruct", "--runs", str(runs["sketch"]), str(runs["voxels"]), "--image", str(tmp_path / "img.png")]
    assert main([*args, "--mask", str(tmp_path / "empty.png"), "--out", str(tmp_path / "m.obj")]) != 0
    assert not (tmp_path / "m.obj").exists()
    assert main([*args, "--runs", str(runs["sketch"]), "--out", str(tmp_path / "m.obj")]) != 0


def test_voxel_files_round_trip_and_refuse_bad_grids(tmp_path: Path) -> None:
    g = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    save_voxels(tmp_path / "v.npy", g)
    np.testing.assert_array_equal(load_voxels(tmp_path / "v.npy"), g)
    with pytest.raises(DataError, match="cubic"):
        save_voxels(tmp_path / "w.npy", np.zeros((8, 8, 4)))
    np.save(tmp_path / "nan.npy", np.full((4, 4, 4), np.nan, np.float32))
    with pytest.raises(DataError, match="NaN"):
        load_voxels(tmp_path / "nan.npy")


def test_naturalness_critic_learns_to_separate_and_feeds_the_voxels_loss(
    runs: dict[str, Path], render_set: Path, sample_root: Path, tmp_path: Path
) -> None:
    from kpengine.learn.registry import TASKS

    torch.set_num_threads(1)
    TASKS.add_package("kpengine.image.tasks")
    cls = TASKS.get("naturalness")
    cfg = cls.config_class(
        task="naturalness", data=str(render_set), category="chair", val_data=str(render_set),
        shapes=str(sample_root), voxels_run=str(runs["voxels"]), channels=4, epochs=6, batch_size=4, lr=1e-3,
    )  # fmt: skip
    train_run(cls(cfg), tmp_path / "critic", progress=False)
    hist = json.loads((tmp_path / "critic" / "history.json").read_text())["epochs"]
    # the critic scores the real grids above the voxels run's outputs after training
    assert hist[-1]["gap"] > 0 and hist[-1]["gap"] > hist[0]["gap"]
    critic = load_network(tmp_path / "critic", "naturalness", resolution=32)
    assert critic(torch.rand(2, 32, 32, 32)).shape == (2,)
    # the voxels task takes the critic's negated score as an extra loss
    vcls = TASKS.get("voxels")
    vcfg = vcls.config_class(
        task="voxels", data=str(render_set), category="chair", shapes=str(sample_root), size=32, widths=[8, 16],
        epochs=1, batch_size=4, naturalness_run=str(tmp_path / "critic"), naturalness_weight=0.1,
    )  # fmt: skip
    task = vcls(vcfg)
    assert task.critic() is not None
    summary = train_run(task, None, progress=False)
    assert summary["epochs"] == 1


def test_voxel_net_starts_at_the_category_mean_shape_and_reads_the_category() -> None:
    torch.manual_seed(0)
    net = VoxelNet(32, 32, (8, 16), latent=32, channels=16, n_categories=2).eval()
    means = torch.zeros(2, 32, 32, 32)
    means[0, 8:24, 4:12, 8:24] = 0.9  # a slab for category 0
    means[1, 12:20, 4:28, 12:20] = 0.7  # a column for category 1
    net.set_prior(means)
    x = torch.randn(3, 5, 32, 32)
    occ, view = net(x, torch.tensor([0, 1, 0]), with_view=True)
    # the last layer starts at zero: the untrained network predicts each category's mean shape
    np.testing.assert_allclose(
        torch.sigmoid(occ).detach().numpy(), means[[0, 1, 0]].clamp(0.01, 0.99).numpy(), atol=1e-5
    )
    assert view["azimuth"].shape == (3, 24) and view["elevation"].shape == (3, 12)
    # the viewpoint given from elsewhere replaces the head's: it reaches the decoder
    with torch.no_grad():
        net.out.weight.normal_()
    one = torch.zeros(1, 36)
    one[0, 0], one[0, 24] = 1.0, 1.0
    other = torch.zeros(1, 36)
    other[0, 12], other[0, 30] = 1.0, 1.0
    assert not torch.allclose(net(x[:1], view=one), net(x[:1], view=other))


def test_augmented_views_flip_the_normals_with_the_picture() -> None:
    from kpengine.image.reconstruct.data import augment_views

    s = 32
    mask = torch.zeros(8, s, s)
    mask[:, 8:24, 4:14] = 1.0  # an object on the left
    normals = torch.zeros(8, 3, s, s)
    normals[:, 0] = mask  # facing +x (right in the camera frame)
    depth = 0.1 * mask
    images = (mask[:, None].repeat(1, 3, 1, 1) * 200).to(torch.uint8)
    img, m, d, n, flip = augment_views(images, mask, depth, normals, torch.Generator().manual_seed(3))
    assert flip.any() and (~flip).any()
    for k in range(8):
        on = m[k] > 0.5
        cols = torch.nonzero(on)[:, 1].float()
        left = cols.mean() < s / 2
        assert bool(left) == bool(~flip[k])  # the object moves to the right only when flipped
        nx = n[k, 0][on]
        assert (torch.sign(nx) == (-1.0 if flip[k] else 1.0)).all()  # and its normals turn with it
        np.testing.assert_allclose(d[k][on].numpy(), 0.1, atol=1e-5)  # mask-weighted: no edge blending
        assert (n[k][:, ~on] == 0).all() and (d[k][~on] == 0).all()
    assert img.min() >= 0 and img.max() <= 1 and img.shape == (8, 3, s, s)


def test_perturbed_sketches_stay_sketches() -> None:
    from kpengine.image.reconstruct.data import perturb_sketches

    mask = torch.zeros(6, 16, 16)
    mask[:, 4:12, 4:12] = 1.0
    normals = torch.zeros(6, 3, 16, 16)
    normals[:, 2] = -mask
    x = torch.cat([mask[:, None], 0.4 * mask[:, None], normals], 1)
    y = perturb_sketches(x, torch.Generator().manual_seed(0))
    on = y[:, 0] > 0.5
    assert set(y[:, 0].unique().tolist()) <= {0.0, 1.0}  # binary, as the predicted silhouette is
    areas = on.sum((1, 2))
    assert {int(a) for a in areas} <= {36, 64, 100}  # shrunk, kept or grown by one pixel
    np.testing.assert_allclose(y[:, 2:].norm(dim=1)[on].numpy(), 1.0, atol=1e-5)
    assert (y[:, 1:].permute(1, 0, 2, 3)[:, ~on] == 0).all()
    assert (y[:, 4][on] < 0).float().mean() > 0.95  # noise does not turn the surface away from the camera


def test_training_refuses_test_split_renders(render_set: Path, tmp_path: Path) -> None:
    import shutil

    test_set = tmp_path / "test_set"
    shutil.copytree(render_set, test_set)
    index = json.loads((test_set / "index.json").read_text())
    for v in index["views"]:
        v["split"] = "test"
    (test_set / "index.json").write_text(json.dumps(index))
    assert len(load_sketch_set(test_set, 32)) == 8  # measuring on it is fine
    with pytest.raises(DataError, match="never train on them"):
        load_sketch_set(test_set, 32, training=True)


def test_voxels_fine_tune_starts_from_the_init_run(runs: dict[str, Path], render_set: Path, sample_root: Path) -> None:
    from kpengine.learn.registry import TASKS

    TASKS.add_package("kpengine.image.tasks")
    cls = TASKS.get("voxels")
    base = dict(task="voxels", data=str(render_set), category="chair", shapes=str(sample_root), size=32,
                widths=[8, 16], epochs=1, batch_size=4)  # fmt: skip
    task = cls(cls.config_class(**base, init_run=str(runs["voxels"])))
    task.sets()
    net = task.model()
    start = load_network(runs["voxels"], "voxels")
    for (k, a), b in zip(net.state_dict().items(), start.state_dict().values()):
        assert torch.equal(a, b), k
    other = cls(cls.config_class(**{**base, "size": 64}, init_run=str(runs["voxels"])))
    other.sets()
    with pytest.raises(ValueError, match="at 32 px, not chair at 64 px"):
        other.model()


def test_skip_views_and_predicted_sketches(render_set: Path) -> None:
    from kpengine.image.crops import normalise
    from kpengine.image.tasks.voxels import use_predicted_sketches

    later = load_sketch_set(render_set, 32, views_per_shape=1, skip_views=1)
    first = load_sketch_set(render_set, 32, views_per_shape=1)
    assert len(later) == len(first) == 4
    assert all(i.endswith("_1") for i in later.ids) and all(i.endswith("_0") for i in first.ids)
    torch.manual_seed(0)
    net = SketchNet((8, 16), 32).eval()
    with torch.no_grad():
        pred = net(normalise(later.images))
    use_predicted_sketches(later, net, batch=3)  # batches that do not divide the set
    on = pred["mask"] > 0
    assert torch.equal(later.mask, on.float())
    torch.testing.assert_close(later.depth, pred["depth"] * on)
    torch.testing.assert_close(later.normals, pred["normals"] * on[:, None])


def test_voxel_projections_by_hand() -> None:
    from kpengine.image.reconstruct.figures import voxel_projections

    g = np.zeros((4, 4, 4), bool)
    g[1, 2, 3] = True  # x = 1, y = 2 (up), z = 3
    img = voxel_projections(g, scale=1)[..., 0]
    assert img.shape == (4, 4 * 3 + 4)
    dark = {tuple(p) for p in np.argwhere(img < 128)}
    # front: column x = 1, row 4 - 1 - y = 1; side (offset 6): column z = 3, row 1; top (offset 12): column x, row z
    assert dark == {(1, 1), (1, 6 + 3), (3, 12 + 1)}
    from kpengine.image.reconstruct.figures import TITLE_HEIGHT, titled

    panel = voxel_projections(g, scale=6)
    out = titled(panel, "bed truth")
    assert out.shape == (panel.shape[0] + TITLE_HEIGHT, panel.shape[1], 3)
    assert np.array_equal(out[TITLE_HEIGHT:], panel)  # the panel below, untouched
    strip = out[:TITLE_HEIGHT, :, 0]
    ink = np.nonzero((strip < 128).any(0))[0]
    assert 0 < ink.min() and 40 < ink.max() < 60  # "bed truth": 9 characters of Pillow's 6 px font, from x = 2
    assert (titled(panel, "")[:TITLE_HEIGHT] == 255).all()


def test_retrieval_targets_by_hand() -> None:
    """Soft targets among training grids: softmax of IoU / tau over the *other* grids of the same
    category. Three grids of category 0 with IoUs worked out by hand, and one alone in category 1."""
    from kpengine.image.reconstruct.nets import retrieval_targets

    g = torch.zeros(4, 8, 8, 8)
    g[0, 0:2, 0:2, 0:2] = 1  # A: 8 voxels
    g[1, 0:4, 0:2, 0:2] = 1  # B: 16 voxels, holds A and C: IoU(A, B) = IoU(B, C) = 8 / 16
    g[2, 2:4, 0:2, 0:2] = 1  # C: 8 voxels, apart from A: IoU(A, C) = 0
    g[3, 5:7, 5:7, 5:7] = 1  # D: category 1, alone
    t = retrieval_targets(g, torch.tensor([0, 0, 0, 1]), tau=0.1).numpy()
    e = np.exp(5.0)  # exp(0.5 / 0.1) against exp(0)
    want = np.array(
        [[0, e / (e + 1), 1 / (e + 1), 0], [0.5, 0, 0.5, 0], [1 / (1 + e), e / (1 + e), 0, 0], [0, 0, 0, 0]]
    )
    np.testing.assert_allclose(t, want, atol=1e-6)


def test_retrieval_prior_starts_at_the_mean_and_stays_in_its_category() -> None:
    """The retrieval network's blend: at a zero head the category's mean bank grid (the mean-shape
    prior again), with any head a mix of the item's own category's grids only; a checkpoint's bank
    (another size than the fresh network's) comes back with its weights."""
    torch.manual_seed(0)
    net = VoxelNet(32, 32, (8, 16), latent=32, channels=16, n_categories=2, retrieval=True).eval()
    bank = torch.zeros(5, 32, 32, 32)
    bank[0, 4:20, 4:8, 4:20] = 1
    bank[1, 4:12, 4:16, 4:12] = 1
    bank[2, 20:28, 0:4, 20:28] = 1  # category 1 from here on
    bank[3, 20:30, 0:6, 20:24] = 1
    bank[4, 22:26, 0:10, 22:26] = 1
    cat = torch.tensor([0, 0, 1, 1, 1])
    net.set_bank(bank, cat)
    x = torch.randn(2, 5, 32, 32)
    with torch.no_grad():
        out = net(x, torch.tensor([0, 1]), parts=True)
        np.testing.assert_allclose(out["blend"][0].numpy(), bank[:2].mean(0).numpy(), atol=1e-6)
        np.testing.assert_allclose(out["blend"][1].numpy(), bank[2:].mean(0).numpy(), atol=1e-6)
        # the decoder's last layer starts at zero too: the output is the blend's occupancy
        want = bank[:2].mean(0).clamp(0.01, 0.99).numpy()
        np.testing.assert_allclose(torch.sigmoid(out["logits"][0]).numpy(), want, atol=1e-5)
        net.retrieve.weight.normal_()
        net.retrieve.bias.normal_()
        out = net(x, torch.tensor([1, 1]), parts=True)
        w = torch.softmax(out["scores"], -1)
        assert float(w[:, :2].sum()) < 1e-6 and torch.allclose(w.sum(1), torch.ones(2))
        outside = bank[2:].sum(0) == 0
        assert float(out["blend"][:, outside].abs().max()) == 0.0
        fresh = VoxelNet(32, 32, (8, 16), latent=32, channels=16, n_categories=2, retrieval=True).eval()
        fresh.load_state_dict(net.state_dict())
        c = torch.tensor([1, 0])
        assert fresh.bank.shape == (5, 32, 32, 32) and torch.equal(fresh(x, c), net(x, c))


def test_retrieval_fine_tune_starts_from_a_mean_prior_run_and_trains(
    runs: dict[str, Path], render_set: Path, sample_root: Path, tmp_path: Path
) -> None:
    """A retrieval run initialised from a mean-prior voxels run predicts what that run predicts
    (a zero head blends the bank to the training mean, the old prior); trained on, its loss falls
    and the reloaded network carries its bank."""
    from kpengine.learn.registry import TASKS

    torch.set_num_threads(1)
    TASKS.add_package("kpengine.image.tasks")
    cls = TASKS.get("voxels")
    base = dict(task="voxels", data=str(render_set), category="chair", shapes=str(sample_root), size=32,
                widths=[8, 16], epochs=1, batch_size=4)  # fmt: skip
    task = cls(cls.config_class(**base, init_run=str(runs["voxels"]), retrieval=True))
    task.sets()
    net = task.model().eval()
    start = load_network(runs["voxels"], "voxels")
    x = load_sketch_set(render_set, 32).sketches(torch.arange(3))
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), start(x).numpy(), atol=1e-4)
    assert net.bank.shape[0] == len(task.sets()[0].grids)
    with pytest.raises(ValueError, match="neither basis nor mirror"):
        cls.config_class(**base, retrieval=True, mirror=True)
    _train("voxels", tmp_path / "run", 5, render_set, sample_root, retrieval=True, retrieval_tau=0.1, iou_weight=0.5)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"] and "blend_iou" in hist[-1]
    again = load_network(tmp_path / "run", "voxels")
    assert again.retrieval and again.bank.shape[0] == net.bank.shape[0]
    # continuing a retrieval run without the head is refused by name, not by a state-dict mismatch
    plain = cls(cls.config_class(**base, init_run=str(tmp_path / "run")))
    plain.sets()
    with pytest.raises(ValueError, match="has a retrieval prior"):
        plain.model()


def test_soft_iou_loss_by_hand() -> None:
    """1 − Σpt / Σ(p + t − pt) per item, averaged: two 2-voxel grids worked out by hand."""
    from kpengine.image.reconstruct.nets import soft_iou_loss

    p = torch.tensor([[0.5, 0.25], [1.0, 0.0]])  # occupancy probabilities of two items' two voxels
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    logits = torch.log(p) - torch.log1p(-p)  # ±inf at 0 and 1: sigmoid gives them back exactly
    # item 1: inter 0.5, union 0.5 + 1 − 0.5 + 0.25 = 1.25; item 2: inter 1, union 2
    want = ((1 - 0.5 / 1.25) + (1 - 1 / 2)) / 2
    assert soft_iou_loss(logits.view(2, 2, 1, 1), t.view(2, 2, 1, 1)).item() == pytest.approx(want)


def test_backproject_run_trains_reloads_and_sees_its_views(
    runs: dict[str, Path], render_set: Path, sample_root: Path, tmp_path: Path
) -> None:
    """On sample renders: the true sketches back-projected at the true viewpoint put most visible-surface
    voxels on the shape (the camera convention end to end); the backproject voxels run's loss falls,
    it reloads as a CompletionNet, and it reconstructs a render as a photo: the camera placed from the
    viewpoint and the mask's box; without any viewpoint it is refused with a message naming the reason."""
    from kpengine.image.reconstruct.backproject import observe
    from kpengine.image.reconstruct.data import category_voxels
    from kpengine.image.reconstruct.nets import CompletionNet
    from kpengine.learn.registry import TASKS

    torch.set_num_threads(1)
    sk = load_sketch_set(render_set, 32)
    truth = category_voxels(sample_root, set(zip(sk.category, sk.model_id)), 32)
    obs = observe(sk.sketches(torch.arange(len(sk))), sk.cameras, sk.azimuth, sk.elevation, sk.theta, 32)
    gt = torch.from_numpy(np.stack([truth[(c, m)] for c, m in zip(sk.category, sk.model_id)]))
    surface = obs[:, 2] > 0.5
    near = torch.nn.functional.max_pool3d(gt[:, None].float(), 3, 1, 1)[:, 0] > 0  # within one voxel
    assert surface.sum() > 0 and (surface & near).sum() / surface.sum() > 0.9
    TASKS.add_package("kpengine.image.tasks")
    cls = TASKS.get("voxels")
    cfg = cls.config_class(
        task="voxels", data=str(render_set), category="chair", val_data=str(render_set), size=32, widths=[8, 16],
        epochs=10, batch_size=4, lr=1e-2, lr_schedule="constant", shapes=str(sample_root), backproject=True,
        completion_width=4, perturb=0.0, view_noise=[0.0, 0.0, 0.0, 0.0],
    )  # fmt: skip
    train_run(cls(cfg), tmp_path / "run", progress=False)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    # it starts at the 4 chairs' mean shape (training loss about 0.05 already): a slow but steady fall
    assert hist[-1]["train_loss"] < 0.85 * hist[0]["train_loss"] and "voxel_iou" in hist[-1]
    net = load_network(tmp_path / "run", "voxels")
    assert isinstance(net, CompletionNet)
    # as a photo: the crop's camera is fitted (the chairs' mean shape filling the mask's box) at the given
    # viewpoint and the photo's field of view; with the render's own, the object's distance comes back
    # within the mean shape's misfit to this chair (measured 1.03 and 1.09 of the truth)
    rs = load_render_set(render_set)
    for i in (0, 3):
        sample = view_sample(rs, i)
        fov = float(np.degrees(2 * np.arctan(sample.camera.intrinsics.width / (2 * sample.camera.intrinsics.fx))))
        vp = {"azimuth": sample.viewpoint.azimuth, "elevation": sample.viewpoint.elevation}
        r = reconstruct_photo(sample.image, load_network(runs["sketch"], "sketch"), net, mask=sample.mask,
                              viewpoint=vp, fov=fov, level=0.3)  # fmt: skip
        want = float((sample.camera.R @ sample.center + sample.camera.t)[2])
        assert r.view_used == vp and r.voxels.shape == (32, 32, 32)
        assert 0.85 < float(r.camera[6]) / want < 1.15
    # two voxels runs (this one and the sketch-encoding one): their probabilities averaged, the camera the
    # back-projecting one's
    sketch_net, vox = load_network(runs["sketch"], "sketch"), load_network(runs["voxels"], "voxels")
    alone = [reconstruct_photo(sample.image, sketch_net, n, mask=sample.mask, viewpoint=vp, fov=fov, level=0.3)
             for n in (net, vox)]  # fmt: skip
    both = reconstruct_photo(sample.image, sketch_net, [net, vox], mask=sample.mask, viewpoint=vp, fov=fov, level=0.3)
    np.testing.assert_allclose(both.voxels, (alone[0].voxels + alone[1].voxels) / 2, atol=1e-6)
    np.testing.assert_array_equal(both.camera, alone[0].camera)
    assert both.view_sketches == alone[1].view_sketches is not None  # the sketch-encoding run's head
    other = CompletionNet(64, 1, 4)
    other.config = {"size": 32, "category": "chair"}
    with pytest.raises(DataError, match="must agree"):
        reconstruct_photo(sample.image, sketch_net, [net, other], mask=sample.mask, viewpoint=vp)
    nohead = load_network(runs["sketch"], "sketch")
    nohead.view_head = None
    with pytest.raises(DataError, match="viewpoint"):
        reconstruct_photo(sample.image, nohead, net, mask=sample.mask)
    with pytest.raises(ValueError, match="view_noise"):
        cls.config_class(task="voxels", data="x", category="chair", shapes="y", backproject=True, view_noise=[1.0])


def test_cone_run_trains_reloads_and_its_cone_holds_the_shape(
    runs: dict[str, Path], render_set: Path, sample_root: Path, tmp_path: Path, capsys
) -> None:
    """The depth-free variant (``"observation": "cone"``) end to end on sample renders: the true
    silhouette's cone at the true viewpoint holds nearly all of each shape's voxels (a shape lies inside
    the cone of its own silhouette; the misses are thin legs under half a pixel: 0.90 at 64 px, 0.82 at 32 px,
    0.98 on the bathtub and bed val renders), its loss falls,
    it reloads as a CompletionNet that knows what it reads, and `kpengine reconstruct` runs it on a
    render as a photo. A cone without the back-projection is refused."""
    from kpengine.image.reconstruct.backproject import observe
    from kpengine.image.reconstruct.data import category_voxels
    from kpengine.image.reconstruct.nets import CompletionNet
    from kpengine.learn.registry import TASKS

    torch.set_num_threads(1)
    sk = load_sketch_set(render_set, 64)
    truth = category_voxels(sample_root, set(zip(sk.category, sk.model_id)), 32)
    x = sk.sketches(torch.arange(len(sk)))
    cone = observe(x, sk.cameras, sk.azimuth, sk.elevation, sk.theta, 32, "cone")[:, 0] > 0.5
    gt = torch.from_numpy(np.stack([truth[(c, m)] for c, m in zip(sk.category, sk.model_id)]))
    assert (gt & cone).sum() / gt.sum() > 0.85
    turned = observe(x, sk.cameras, sk.azimuth + 90.0, sk.elevation, sk.theta, 32, "cone")[:, 0] > 0.5
    assert (gt & cone).sum() / gt.sum() > (gt & turned).sum() / gt.sum() + 0.05  # 0.90 against 0.80 turned by 90°
    assert cone.sum() > 1.5 * gt.sum()  # and the cone is more than the shape: depth is what it lacks
    TASKS.add_package("kpengine.image.tasks")
    cls = TASKS.get("voxels")
    cfg = cls.config_class(
        task="voxels", data=str(render_set), category="chair", size=32, widths=[8, 16], epochs=6, batch_size=4,
        lr=1e-2, lr_schedule="constant", shapes=str(sample_root), backproject=True, observation="cone",
        completion_width=4, perturb=0.0, view_noise=[0.0, 0.0, 0.0, 0.0],
    )  # fmt: skip
    train_run(cls(cfg), tmp_path / "run", progress=False)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert hist[-1]["train_loss"] < 0.9 * hist[0]["train_loss"]
    net = load_network(tmp_path / "run", "voxels")
    assert isinstance(net, CompletionNet) and net.observation == "cone"
    # kpengine reconstruct runs it on a photo (the sketch run's viewpoint head) and says where it put it
    v = load_render_set(render_set).views[1]
    args = ["reconstruct", "--runs", str(runs["sketch"]), str(tmp_path / "run"), "--threshold", "0.3"]
    args += ["--image", str(render_set / v["image"]), "--mask", str(render_set / v["mask"])]
    args += ["--out", str(tmp_path / "m.obj")]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["faces"] > 0 and len(summary["camera"]) == 8 and summary["voxels_runs"] == 1
    assert set(summary["viewpoint"]) == {"azimuth", "elevation"}
    args.insert(4, str(runs["voxels"]))  # and averaged with a sketch-encoding run
    assert main(args) == 0
    two = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert two["voxels_runs"] == 2 and two["camera"] == summary["camera"]
    with pytest.raises(ValueError, match="backproject"):
        cls.config_class(task="voxels", data="x", category="chair", shapes="y", observation="cone")
    with pytest.raises(ValueError, match="observation"):
        cls.config_class(task="voxels", data="x", category="chair", shapes="y", backproject=True, observation="x")


def test_silhouette_runs_replace_the_input_silhouettes(render_set: Path, sample_root: Path, tmp_path: Path) -> None:
    """``silhouette_runs`` (seventh pass): the silhouette networks' masks on the whole render become the
    input silhouettes. A stand-in network whose logits are +5 on the left half of its input and -5 on the
    right gives, at any render size, the left half of the frame: at the 32 px sketch size columns 0-15, with
    depth and normals kept there and zeroed on the right. Then a cone run trains through ``learn.runs``
    with a real (tiny) silhouette run, and a category without a silhouette run is refused."""
    from torch import nn

    from kpengine.image.tasks.voxels import use_silhouette_masks

    class LeftHalf(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.full(x.shape[:1] + x.shape[2:], -5.0)
            out[..., : x.shape[-1] // 2] = 5.0
            return out

    sk = load_sketch_set(render_set, 32)
    depth, normals = sk.depth.clone(), sk.normals.clone()
    use_silhouette_masks(sk, str(render_set), {"chair": (LeftHalf(), 24)})
    want = torch.zeros(32, 32)
    want[:, :16] = 1.0
    assert all(torch.equal(m, want) for m in sk.mask)
    torch.testing.assert_close(sk.depth, depth * want)
    torch.testing.assert_close(sk.normals, normals * want)

    torch.set_num_threads(1)
    _train("silhouette", tmp_path / "sil", 1, render_set, sample_root)
    cone = {"backproject": True, "observation": "cone", "completion_width": 4, "perturb": 0.0}
    _train("voxels", tmp_path / "cone", 2, render_set, sample_root, silhouette_runs={"chair": str(tmp_path / "sil")},
           **cone)  # fmt: skip
    hist = json.loads((tmp_path / "cone" / "history.json").read_text())["epochs"]
    assert len(hist) == 2 and np.isfinite(hist[-1]["train_loss"])
    with pytest.raises(ValueError, match="no run for chair"):
        _train("voxels", tmp_path / "x", 1, render_set, sample_root, silhouette_runs={"bed": "y"}, **cone)
