"""The photo -> pixel-semantics pipeline on generated sample shapes, its CLI, and its refusals of bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kpengine.cli.main import main
from kpengine.errors import DataError
from kpengine.image.pipeline import KnowledgeBase, Networks, understand, write_understanding
from kpengine.image.silhouette import SilhouetteNet, largest_component, mask_iou
from kpengine.image.viewpoint import ViewpointNet
from kpengine.learn.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def knowledge(sample_chair_knowledge):
    return sample_chair_knowledge


@pytest.fixture(scope="module")
def photo(sample_chair_render):
    """A render of a knowledge shape at a known camera: image, mask, true camera, viewpoint, the shape."""
    return sample_chair_render


def _save_run(path, task, category, model, size=64):
    cfg = {"task": task, "category": category, "size": size, "widths": [16, 32, 64, 128]}
    save_checkpoint(path / "last.pt", {"config": cfg, "model": model.state_dict()})
    return path


def test_understand_with_true_view_and_shape_projects_the_annotated_keypoints(knowledge, photo, tmp_path):
    image, mask, cam, view, shape = photo
    nets = Networks(ViewpointNet(64, (16, 32, 64, 128)))  # untrained: the view is given
    u = understand(image, knowledge, nets, mask=mask, viewpoint_override=view, shape_override=shape.model_id, steps=20)
    assert u.iou_refined > 0.9
    truth, _ = cam.project(shape.keypoints.astype(np.float64))
    errs = [
        np.hypot(*(np.array(v["uv"]) - truth[list(shape.semantic_ids).index(int(sid))]))
        for sid, v in u.keypoints.items()
        if v["visible"]
    ]
    assert len(errs) >= 3 and np.median(errs) < 0.03 * 160  # within 3 % of the image
    assert set(u.keypoints) == {str(int(s)) for s in shape.semantic_ids}
    assert all(0 <= v["confidence"] <= 1 and v["name"] for v in u.keypoints.values())
    labelled = u.semantic_map >= 0
    assert labelled.any() and not (labelled & ~u.object_mask).any()  # semantics only on the fitted shape
    files = write_understanding(u, tmp_path / "out")
    assert {p.name for p in files} == {"keypoints.json", "pose.json", "semantics.png", "overlay.png"}
    pose = json.loads((tmp_path / "out" / "pose.json").read_text())
    assert pose["model_id"] == shape.model_id and abs(((pose["azimuth"] - 210 + 180) % 360) - 180) < 10


def test_shapes_without_meshes_use_a_surface_around_their_cloud(sample_root, photo, tmp_path):
    """bathtub and bed have only clouds: the knowledge base closes a surface around each (32³ voxels)."""
    import shutil

    from scipy.spatial import cKDTree

    image, mask, cam, view, shape = photo
    bare = tmp_path / "clouds"
    shutil.copytree(sample_root, bare, ignore=shutil.ignore_patterns("meshes"))
    kb = KnowledgeBase.load(bare, "chair", "all")
    cloud_shape = next(s for s in kb.shapes if s.model_id == shape.model_id)
    assert cloud_shape.mesh_path is None or not cloud_shape.mesh_path.is_file()
    mesh, _, _ = kb.mesh(cloud_shape)
    # the surface hugs the cloud: every vertex within two voxels (2/32) of a point, and back
    d_v, _ = cKDTree(cloud_shape.points).query(mesh.vertices)
    d_p, _ = cKDTree(mesh.vertices).query(cloud_shape.points)
    assert d_v.max() < 2 / 32 and np.median(d_p) < 1 / 32
    # with the true view and shape, the keypoints land near their true projections in the mesh render
    nets = Networks(ViewpointNet(64, (16, 32, 64, 128)))
    u = understand(image, kb, nets, mask=mask, viewpoint_override=view, shape_override=shape.model_id)
    assert u.iou_refined > 0.8
    truth, _ = cam.project(shape.keypoints.astype(np.float64))
    errs = [
        np.hypot(*(np.array(v["uv"]) - truth[list(shape.semantic_ids).index(int(k))])) for k, v in u.keypoints.items()
    ]
    assert np.median(errs) < 0.05 * 160


def test_retrieval_by_silhouette_prefers_the_photographed_shape(knowledge, photo):
    image, mask, _, view, shape = photo
    u = understand(image, knowledge, Networks(ViewpointNet(64)), mask=mask, viewpoint_override=view, steps=0, top=3)
    assert shape.model_id in [r["model_id"] for r in u.retrieved]


def test_a_category_without_shapes_and_foreign_runs_are_refused(sample_root, tmp_path, photo):
    import shutil

    with pytest.raises(DataError, match="no annotations for airplane"):
        KnowledgeBase.load(sample_root, "airplane", "all")
    bare = tmp_path / "bare"
    shutil.copytree(sample_root, bare, ignore=shutil.ignore_patterns("meshes"))
    with pytest.raises(DataError, match="'chair' has no annotated shapes with meshes in split"):
        KnowledgeBase.load(bare, "chair", "all", clouds=False)
    shutil.rmtree(bare / "pcds")
    with pytest.raises(DataError, match="'chair' has no annotated shapes with meshes or clouds"):
        KnowledgeBase.load(bare, "chair", "all")
    sil = _save_run(tmp_path / "sil", "silhouette", "chair", SilhouetteNet())
    with pytest.raises(DataError, match="no viewpoint run"):
        Networks.from_runs([sil], "chair", sample_root)
    vp = _save_run(tmp_path / "vp", "viewpoint", "mug", ViewpointNet(64))
    with pytest.raises(DataError, match="trained on category 'mug'"):
        Networks.from_runs([vp], "chair", sample_root)


def test_cli_understand_and_viewpoint(sample_root, tmp_path, photo, capsys):
    from kpengine.render.overlay import save_png

    image, mask, *_ = photo
    save_png(tmp_path / "photo.png", image)
    save_png(tmp_path / "mask.png", mask.astype(np.uint8) * 255)
    torch.manual_seed(0)
    vp = _save_run(tmp_path / "vp", "viewpoint", "chair", ViewpointNet(64))
    sil = _save_run(tmp_path / "sil", "silhouette", "chair", SilhouetteNet())
    out = tmp_path / "u"
    base = ["understand", "--image", str(tmp_path / "photo.png"), "--category", "chair", "--knowledge",
            str(sample_root), "--split", "all", "--steps", "5"]  # fmt: skip
    assert main([*base, "--mask", str(tmp_path / "mask.png"), "--runs", str(vp), "--out", str(out)]) == 0
    kps = json.loads((out / "keypoints.json").read_text())
    assert kps and all(set(v) == {"uv", "visible", "confidence", "name"} for v in kps.values())
    # a run of another task where the viewpoint run belongs: refused, nothing written
    bad = tmp_path / "bad"
    assert main([*base, "--runs", str(sil), "--out", str(bad)]) == 1
    assert not bad.exists()
    assert "no viewpoint run" in capsys.readouterr().err
    assert main(["viewpoint", "--run", str(sil), "--images", str(tmp_path / "photo.png"), "--out", "-"]) == 1
    assert "trained for task 'silhouette'" in capsys.readouterr().err


def test_silhouette_net_shapes_and_iou():
    net = SilhouetteNet((8, 16))
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 32, 32)
    a = np.zeros((1, 4, 4), bool)
    a[0, :2] = True
    b = np.zeros((1, 4, 4), bool)
    b[0, 1:3] = True
    assert mask_iou(a, b)[0] == pytest.approx(4 / 12)
    m = np.zeros((6, 6), bool)
    m[0, 0] = True
    m[2:5, 2:5] = True
    assert largest_component(m).sum() == 9


def test_image_tasks_train_through_the_run_mechanism_and_feed_understand(sample_root, tmp_path, capsys):
    renders = tmp_path / "r"
    assert main(["render-benchmark", "--data", str(sample_root), "--category", "chair", "--split", "train",
                 "--views", "2", "--size", "64", "--out", str(renders)]) == 0  # fmt: skip
    runs = []
    for task in ("viewpoint", "silhouette"):
        run = tmp_path / task
        cfg = json.dumps({"val_data": str(renders), "size": 32})
        args = ["train", "--task", task, "--data", str(renders), "--category", "chair", "--out", str(run),
                "--epochs", "1", "--batch-size", "8", "--config", cfg]  # fmt: skip
        assert main(args) == 0
        hist = json.loads((run / "history.json").read_text())["epochs"]
        assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"])
        assert ("acc_30" if task == "viewpoint" else "mean_iou") in hist[0]
        assert main([*args[:-4], "--epochs", "2", "--resume", *args[-2:]]) == 0  # resume extends the run
        assert len(json.loads((run / "history.json").read_text())["epochs"]) == 2
        runs.append(str(run))
    assert main(["train", "--task", "viewpoint", "--data", str(sample_root), "--category", "chair",
                 "--out", str(tmp_path / "x")]) == 1  # fmt: skip
    assert "not a rendered image set" in capsys.readouterr().err
    nets = Networks.from_runs(runs, "chair", sample_root)
    assert nets.silhouette is not None and nets.silhouette_size == 32


def _oracle_reconstruction(sample_root, shape, categories="chair", view_head=True):
    """A sketch network and a voxels network whose output is ``shape``'s own ground-truth grid, whatever
    the photo: the decoder's last layer is zero (as built), the prior is the shape's grid."""
    from kpengine.image.reconstruct.data import shape_voxels
    from kpengine.image.reconstruct.nets import SketchNet, VoxelNet

    grid, _ = shape_voxels(sample_root, "chair", shape.model_id, 32)
    cats = categories.split(",")
    voxels = VoxelNet(32, 64, (16, 32, 64, 128), n_categories=len(cats), viewpoint_head=view_head).eval()
    means = torch.zeros(len(cats), 32, 32, 32)
    means[cats.index("chair")] = torch.from_numpy(grid).float()
    voxels.set_prior(means)
    voxels.config = {"size": 64, "resolution": 32, "category": categories}
    sketch = SketchNet((16, 32, 64, 128), 64, viewpoint_head=True).eval()
    sketch.config = {"size": 64, "category": categories}
    return sketch, voxels


def _oracle_cone(sample_root, shape):
    """A sketch network (the oracle's) and a cone CompletionNet whose prior is ``shape``'s own grid: its last
    layer is zero as built, so it returns that grid whatever the cone."""
    from kpengine.image.reconstruct.data import shape_voxels
    from kpengine.image.reconstruct.nets import CompletionNet

    sketch, _ = _oracle_reconstruction(sample_root, shape)
    grid, _ = shape_voxels(sample_root, "chair", shape.model_id, 32)
    net = CompletionNet(32, 1, 4, "cone").eval()
    net.set_prior(torch.from_numpy(grid).float()[None])
    net.config = {"size": 64, "resolution": 32, "category": "chair"}
    return sketch, net


def test_reconstruct_route_takes_a_back_projecting_run(sample_root, knowledge, photo, monkeypatch):
    """A back-projecting voxels run (CompletionNet, either observation) gets the viewpoint before the
    reconstruction (here the given one) and the photo's field of view; an oracle one (its prior the
    photographed shape's grid, its last layer zero as built) gives that shape's keypoints, as above."""
    from kpengine.image.reconstruct import photo as photo_mod

    image, mask, cam, view, shape = photo
    sketch, net = _oracle_cone(sample_root, shape)
    seen = {}
    real = photo_mod.reconstruct_photo

    def spy(*args, **kw):
        r = real(*args, **kw)
        seen.update(view=r.view_used, camera=r.camera, fov=kw["fov"])
        return r

    monkeypatch.setattr(photo_mod, "reconstruct_photo", spy)
    u = understand(image, knowledge, Networks(None, sketch=sketch, voxels=net), mask=mask, viewpoint_override=view,
                   shape_route="reconstruct", steps=10, fov=33.0)  # fmt: skip
    assert seen["view"] == {"azimuth": view.azimuth, "elevation": view.elevation} and seen["fov"] == 33.0
    assert u.shape_source == "reconstruction"
    assert np.abs(u.shape.keypoints - shape.keypoints).max() < 2.5 / 32
    # averaged with a sketch-encoding oracle of the same shape: the same grid, the same keypoints
    _, oracle = _oracle_reconstruction(sample_root, shape)
    both = understand(image, knowledge, Networks(None, sketch=sketch, voxels=[oracle, net]), mask=mask,
                      viewpoint_override=view, shape_route="reconstruct", steps=10, fov=33.0)  # fmt: skip
    assert seen["view"] is not None and np.array_equal(both.shape.keypoints, u.shape.keypoints)


def test_cone_is_placed_again_at_the_refined_pose(sample_root, knowledge, photo, monkeypatch):
    """Without a given viewpoint, a chosen cone reconstruction is rebuilt at the refined pose (seventh pass):
    ``reconstruct_photo`` runs twice, first at the viewpoint network's estimate (roll 0), then at the
    azimuth, elevation and roll of the refined camera of the pose chosen first, read back from that camera
    here (``rt_to_viewpoint``); the rebuilt shape is posed from there and chosen (kind "cone re-placed").
    ``cone_refit=False`` builds it once."""
    from kpengine.image.reconstruct import photo as photo_mod
    from kpengine.render.cameras import rt_to_viewpoint

    image, mask, cam, view, shape = photo
    sketch, net = _oracle_cone(sample_root, shape)
    calls = []
    real = photo_mod.reconstruct_photo

    def spy(*args, **kw):
        calls.append(dict(kw["viewpoint"]))
        return real(*args, **kw)

    monkeypatch.setattr(photo_mod, "reconstruct_photo", spy)
    nets = nets_with_vp(Networks(None, sketch=sketch, voxels=net))
    u = understand(image, knowledge, nets, mask=mask, shape_route="reconstruct", steps=6)
    assert len(calls) == 2 and calls[0]["azimuth"] == u.viewpoint["azimuth"] and calls[0]["theta"] == 0.0
    assert set(calls[1]) == {"azimuth", "elevation", "theta"}
    last = u.hypotheses[-1]
    assert last.kind == "cone re-placed" and last.chosen and u.shape_source == "reconstruction"
    assert [h.chosen for h in u.hypotheses].count(True) == 1
    assert (last.view.azimuth, last.view.elevation, last.view.theta) == tuple(
        calls[1][k] for k in ("azimuth", "elevation", "theta")
    )
    refined = [rt_to_viewpoint(h.camera.R, h.camera.t, h.shape.center) for h in u.hypotheses[:-1] if h.finished]
    assert any(np.allclose([v.azimuth, v.elevation, v.theta], [calls[1][k] for k in ("azimuth", "elevation", "theta")])
               for v in refined)  # fmt: skip
    assert "cone_refit" in u.seconds
    calls.clear()
    once = understand(image, knowledge, nets, mask=mask, shape_route="reconstruct", steps=6, cone_refit=False)
    assert len(calls) == 1 and "cone_refit" not in once.seconds
    assert all(h.kind != "cone re-placed" for h in once.hypotheses)
    # the half-turn hedge (eighth pass) weighs only the rebuilt reconstruction, and only where it was measured: a
    # cone run beside a sketch-encoding one (the default CONE_HEDGE); a cone run alone is averaged as before
    hedges = []

    def weighed(*args, **kw):
        hedges.append((kw.get("cone_weight"), kw.get("half_turn", 0.0)))
        return real(*args, **kw)

    monkeypatch.setattr(photo_mod, "reconstruct_photo", weighed)
    understand(image, knowledge, nets, mask=mask, shape_route="reconstruct", steps=6, cone_hedge=(0.75, 0.25))
    assert hedges == [(None, 0.0), (None, 0.0)]
    hedges.clear()
    _, oracle = _oracle_reconstruction(sample_root, shape)
    pair = nets_with_vp(Networks(None, sketch=sketch, voxels=[oracle, net]))
    u = understand(image, knowledge, pair, mask=mask, shape_route="reconstruct", steps=6)
    assert u.hypotheses[-1].kind == "cone re-placed" and hedges == [(None, 0.0), (0.75, "sketches")]
    hedges.clear()  # a sketch-encoding run without a viewpoint head: the constant share chosen on val
    _, headless = _oracle_reconstruction(sample_root, shape, view_head=False)
    understand(image, knowledge, nets_with_vp(Networks(None, sketch=sketch, voxels=[headless, net])), mask=mask,
               shape_route="reconstruct", steps=6)  # fmt: skip
    assert hedges == [(None, 0.0), (0.75, 1 / 6)]


def test_reconstruct_route_projects_the_keypoints_of_the_reconstructed_surface(sample_root, knowledge, photo, tmp_path):
    image, mask, cam, view, shape = photo
    sketch, voxels = _oracle_reconstruction(sample_root, shape, "table,chair")
    nets = Networks(None, sketch=sketch, voxels=voxels)
    u = understand(image, knowledge, nets, mask=mask, viewpoint_override=view, shape_route="reconstruct", steps=10)
    assert u.shape_source == "reconstruction" and u.shape.model_id == "reconstruction"
    # the nearest knowledge shape to the reconstruction (Chamfer) is the photographed one: its keypoints
    # come over, snapped onto the reconstructed surface, in the knowledge base's frame
    assert set(u.keypoints) == {str(int(s)) for s in shape.semantic_ids}
    assert np.abs(u.shape.keypoints - shape.keypoints).max() < 2.5 / 32  # within 2.5 voxels of the truth
    assert u.iou_refined > 0.75  # a 32³ surface posed against the true mask
    truth, _ = cam.project(shape.keypoints.astype(np.float64))
    errs = [np.hypot(*(np.array(v["uv"]) - truth[list(shape.semantic_ids).index(int(sid))]))
            for sid, v in u.keypoints.items() if v["visible"]]  # fmt: skip
    assert len(errs) >= 3 and np.median(errs) < 0.05 * 160
    # "both": the retrieved photographed shape (its own mesh) fits the mask better than its 32³ reconstruction
    both = understand(image, knowledge, nets_with_vp(nets), mask=mask, viewpoint_override=view, shape_route="both",
                      steps=10)  # fmt: skip
    assert both.shape_source == "retrieval" and both.iou_refined >= u.iou_refined
    # a knowledge base with no shape to render (clouds not taken): the reconstruction route needs none,
    # retrieval refuses
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(sample_root, bare, ignore=shutil.ignore_patterns("meshes"))
    clouds = KnowledgeBase.load(bare, "chair", "all", require_meshes=False, clouds=False)
    assert not clouds.shapes and len(clouds.donors) == len(knowledge.shapes)
    c = understand(image, clouds, nets, mask=mask, viewpoint_override=view, shape_route="reconstruct", steps=0)
    assert set(c.keypoints) == set(u.keypoints)
    with pytest.raises(DataError, match="no shape with a mesh"):
        understand(image, clouds, nets_with_vp(nets), mask=mask, viewpoint_override=view, steps=0)
    # the viewpoint read off the sketches needs the voxels network's head; without it a clear refusal
    headless = Networks(None, sketch=sketch, voxels=_oracle_reconstruction(sample_root, shape, view_head=False)[1])
    with pytest.raises(DataError, match="no viewpoint head"):
        understand(image, knowledge, headless, mask=mask, shape_route="reconstruct", viewpoint_source="sketches")
    with pytest.raises(DataError, match="unknown shape route"):
        understand(image, knowledge, nets, mask=mask, shape_route="guess")
    with pytest.raises(DataError, match="needs a sketch run and a voxels run"):
        understand(image, knowledge, nets_with_vp(Networks(None)), mask=mask, shape_route="reconstruct")


def nets_with_vp(nets):
    from dataclasses import replace

    return replace(nets, viewpoint=ViewpointNet(64))


def test_cli_understand_shape_reconstruct_with_runs(sample_root, knowledge, photo, tmp_path, capsys):
    from kpengine.render.overlay import save_png

    image, mask, cam, view, shape = photo
    sketch, voxels = _oracle_reconstruction(sample_root, shape)
    save_png(tmp_path / "photo.png", image)
    save_png(tmp_path / "mask.png", mask.astype(np.uint8) * 255)
    runs = {}
    for task, net in (("sketch", sketch), ("voxels", voxels)):
        cfg = {"task": task, "data": "", "category": "chair", "size": 64, "widths": [16, 32, 64, 128],
               "shapes": str(sample_root), "resolution": 32}  # fmt: skip
        runs[task] = tmp_path / task
        save_checkpoint(runs[task] / "last.pt", {"config": cfg, "model": net.state_dict()})
    base = ["understand", "--image", str(tmp_path / "photo.png"), "--mask", str(tmp_path / "mask.png"),
            "--category", "chair", "--knowledge", str(sample_root), "--split", "all", "--steps", "5"]  # fmt: skip
    out = tmp_path / "u"
    assert main([*base, "--runs", str(runs["sketch"]), str(runs["voxels"]), "--shape", "reconstruct",
                 "--viewpoint-from", "sketches", "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["shape_source"] == "reconstruction" and summary["model_id"] == "reconstruction"
    pose = json.loads((out / "pose.json").read_text())
    assert pose["shape_source"] == "reconstruction" and "reconstruction" in pose["seconds"]
    # a voxels run without its sketch run: refused before anything is written
    bad = tmp_path / "bad"
    assert main([*base, "--runs", str(runs["voxels"]), "--shape", "reconstruct", "--out", str(bad)]) == 1
    assert not bad.exists() and "without a sketch run" in capsys.readouterr().err
