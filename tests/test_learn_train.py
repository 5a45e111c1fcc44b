"""Training, prediction and transfer on the generated sample data with tiny networks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kpengine.cli.main import main
from kpengine.errors import DataError
from kpengine.learn.checkpoint import load_checkpoint
from kpengine.learn.config import TrainConfig
from kpengine.learn.pointtask import check_batch
from kpengine.learn.train import Trainer, train

torch.set_num_threads(1)  # shared 2-core machines: one thread is far faster under load

TINY = {"width": 32, "out_channels": 16}


def config(root: Path, task: str = "correspondence", epochs: int = 2, **kw) -> TrainConfig:
    return TrainConfig(task=task, data=str(root), category="chair", epochs=epochs, backbone_kwargs=TINY, **kw)


def weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / name)["model"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def corr_run(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "corr"
    train(config(sample_root, epochs=3), run, progress=False)
    return run


def test_run_directory_contents(corr_run: Path) -> None:
    for name in ("config.json", "last.pt", "best.pt", "history.json", "curve.png"):
        assert (corr_run / name).is_file(), name
    state = load_checkpoint(corr_run / "last.pt")
    assert set(state) >= {"model", "optimizer", "config", "versions", "metrics", "epoch"}
    assert state["versions"]["data"] and state["versions"]["code"]
    assert json.loads((corr_run / "config.json").read_text())["lr"] == 1e-3


def test_loss_decreases_on_tiny_overfit(sample_root: Path) -> None:
    from kpengine.data import KeypointNetDataset
    from kpengine.learn.batches import KeypointBatches, collate_keypoint_batches
    from kpengine.learn.heads import KeypointModel
    from kpengine.learn.losses import correspondence_loss

    shapes = KeypointNetDataset(sample_root, "chair", "train")
    batch = collate_keypoint_batches([KeypointBatches(shapes, shapes.n_classes)[i] for i in range(4)])
    torch.manual_seed(0)
    model = KeypointModel("correspondence", "pointnet", shapes.n_classes, **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = correspondence_loss(model(batch["points"]), batch["labellings"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_deterministic_and_resume_matches_uninterrupted(sample_root: Path, tmp_path: Path, corr_run: Path) -> None:
    train(config(sample_root, epochs=3), tmp_path / "again", progress=False)
    assert same(weights(corr_run), weights(tmp_path / "again"))
    # kill after epoch 1 (simulated: train 1 epoch), then resume to 3
    train(config(sample_root, epochs=1), tmp_path / "resumed", progress=False)
    train(config(sample_root, epochs=3), tmp_path / "resumed", resume=True, progress=False)
    assert same(weights(corr_run), weights(tmp_path / "resumed"))
    assert len(json.loads((tmp_path / "resumed" / "history.json").read_text())["epochs"]) == 3


def test_cosine_schedule_is_a_function_of_the_epoch_and_resumes_exactly(
    sample_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(sample_root, epochs=4, lr_schedule="cosine")
    assert cfg.lr_at(0) == pytest.approx(1e-3)
    assert cfg.lr_at(2) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert cfg.lr_at(3) < cfg.lr_at(2) and cfg.lr_at(4) == pytest.approx(1e-5)
    assert config(sample_root).lr_at(3) == 1e-3  # the official protocol keeps it constant
    with pytest.raises(ValueError, match="lr schedule"):
        config(sample_root, lr_schedule="step")
    train(cfg, tmp_path / "whole", progress=False)
    history = json.loads((tmp_path / "whole" / "history.json").read_text())["epochs"]
    assert [h["lr"] for h in history] == pytest.approx([cfg.lr_at(e) for e in range(4)])

    real_epoch = Trainer._train_epoch

    def killed_in_epoch_3(self: Trainer, epoch: int) -> float:
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(config(sample_root, epochs=4, lr_schedule="cosine"), tmp_path / "cut", progress=False)
    monkeypatch.setattr(Trainer, "_train_epoch", real_epoch)
    train(config(sample_root, epochs=4, lr_schedule="cosine"), tmp_path / "cut", resume=True, progress=False)
    assert same(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


def test_soft_saliency_targets(sample_root: Path) -> None:
    from kpengine.data import KeypointNetDataset
    from kpengine.geometry.geodesic import GeodesicGraph
    from kpengine.learn.batches import soft_saliency

    shape = KeypointNetDataset(sample_root, "chair", "train")[0]
    t = soft_saliency(shape, 0.03)
    assert t.dtype == np.float32 and np.all(t[shape.point_indices] == 1.0)
    d = GeodesicGraph(shape.points, protocol="strict").from_sources(np.unique(shape.point_indices)).min(axis=0)
    assert np.all(t[d > 0.09] == 0.0)  # nothing beyond 3 sigma
    mid = (d > 0.01) & (d < 0.05)
    assert mid.any() and np.allclose(t[mid], np.exp(-(d[mid] ** 2) / (2 * 0.03**2)), atol=1e-6)


def test_existing_run_needs_resume(sample_root: Path, corr_run: Path) -> None:
    with pytest.raises(DataError, match="--resume"):
        Trainer(config(sample_root), corr_run, progress=False)


def test_checkpoint_refused_across_task_and_category(sample_root: Path, corr_run: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="task 'correspondence', not 'saliency'"):
        load_checkpoint(corr_run / "best.pt", task="saliency")
    rc = main(["predict", "--run", str(corr_run), "--data", str(sample_root), "--category", "mug", "--out", "-"])
    assert rc == 1
    with pytest.raises(DataError, match="not a kpengine checkpoint|unreadable"):
        (tmp_path / "x.pt").write_bytes(b"garbage")
        load_checkpoint(tmp_path / "x.pt")


def test_nan_batch_and_small_cloud_messages(corr_run: Path) -> None:
    from kpengine.learn.inference import infer, load_run

    batch = {"points": torch.zeros(2, 5, 3), "model_id": ["a", "b"]}
    batch["points"][1, 2, 0] = float("nan")
    with pytest.raises(DataError, match=r"non-finite.*\['b'\]"):
        check_batch(batch)
    model, _ = load_run(corr_run)
    with pytest.raises(DataError, match="too small"):
        infer(model, [np.zeros((1, 3), np.float32)])


def test_category_without_geometry(sample_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "nogeo"
    shutil.copytree(sample_root / "annotations", root / "annotations")
    shutil.copytree(sample_root / "splits", root / "splits")
    with pytest.raises(DataError, match="no usable shapes"):
        Trainer(config(root), tmp_path / "r", progress=False)


def test_predictions_accepted_by_evaluate(sample_root: Path, corr_run: Path, tmp_path: Path) -> None:
    p, r = tmp_path / "P.json", tmp_path / "R.json"
    args = ["--data", str(sample_root), "--category", "chair"]
    assert main(["predict", "--run", str(corr_run), *args, "--out", str(p)]) == 0
    assert main(["evaluate", *args, "--task", "correspondence", "--predictions", str(p), "--output", str(r)]) == 0
    result = json.loads(r.read_text())
    pck = result["pck"]
    assert len(pck) == 11 and all(a <= b for a, b in zip(pck, pck[1:]))  # a curve over growing thresholds
    # the ground truth itself, as predictions ({model: {id: point index}}), is a hit at every threshold above 0
    from kpengine.data import KeypointNetDataset

    truth = {
        s.model_id: {str(int(k)): int(i) for k, i in zip(s.semantic_ids, s.point_indices)}
        for s in KeypointNetDataset(sample_root, "chair", "test")
    }
    assert set(truth) == set(json.loads(p.read_text()))
    perfect = tmp_path / "T.json"
    perfect.write_text(json.dumps(truth))
    argv = ["evaluate", *args, "--task", "correspondence", "--predictions", str(perfect), "--output", str(r)]
    assert main(argv) == 0
    assert json.loads(r.read_text())["pck"] == [0.0] + [1.0] * 10  # "strictly below": nothing is below 0
    # look at them: `kpengine show --predictions` draws a model's predictions over its ground truth
    from kpengine.cli.data import predicted_keypoints
    from kpengine.data import KeypointNetDataset

    model = next(iter(json.loads(p.read_text())))
    shape = KeypointNetDataset(sample_root, "chair", "test", model_ids=[model])[0]
    xyz, ids = predicted_keypoints(str(p), shape)
    assert sorted(ids.tolist()) == sorted(shape.semantic_ids.tolist()) and xyz.shape == (len(ids), 3)
    png = tmp_path / "show.png"
    assert main(["show", *args, "--split", "test", "--model", model, "--predictions", str(p), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"nobody": {}}))
    show = ["show", *args, "--split", "test", "--model", model, "--out", str(png)]
    assert main([*show, "--predictions", str(other)]) == 1


def test_saliency_predict_modes(sample_root: Path, tmp_path: Path) -> None:
    from kpengine.learn.inference import geodesic_nms

    run = tmp_path / "sal"
    train(config(sample_root, task="saliency"), run, progress=False)
    args = ["--data", str(sample_root), "--category", "chair"]
    for mode in ("nms", "official"):
        p = tmp_path / f"{mode}.json"
        assert main(["predict", "--run", str(run), *args, "--out", str(p), "--saliency-mode", mode]) == 0
        assert main(["evaluate", *args, "--task", "saliency", "--predictions", str(p), "--output", "-"]) == 0
    pts = np.array([[0.01 * i, 0, 0] for i in range(40)], np.float32)
    prob = np.linspace(0.0, 1.0, 40)
    kept = geodesic_nms(pts, prob, 0.5, 0.055)
    assert [i for i, _ in kept] == [39, 33, 27, 21]


def test_saliency_decision_is_chosen_on_validation_and_used_by_predict(sample_root: Path, tmp_path: Path) -> None:
    from kpengine.learn.decision import tune_saliency_decision
    from kpengine.learn.predict import predict_split

    run = tmp_path / "sal-soft"
    train(config(sample_root, task="saliency", epochs=2, saliency_sigma=0.03), run, progress=False)
    tuned = tune_saliency_decision(run, sample_root, "chair", "val")
    assert (run / "decision.json").is_file() and tuned["chosen_on"] == "val"
    assert tuned["grid"] and max(g["objective"] for g in tuned["grid"]) == next(
        g["objective"]
        for g in tuned["grid"]
        if (g["threshold"], g["radius"]) == (tuned["threshold"], tuned["nms_radius"])
    )
    _, stored = predict_split(run, sample_root, "chair", "test")
    _, explicit = predict_split(
        run, sample_root, "chair", "test", threshold=tuned["threshold"], nms_radius=tuned["nms_radius"]
    )
    assert stored == explicit


def test_transfer_outputs_official_json_and_png(sample_root: Path, tmp_path: Path) -> None:
    from kpengine.io.annotations import load_annotations

    run = tmp_path / "emb"
    train(config(sample_root, task="embedding", epochs=2), run, progress=False)
    mesh = next((sample_root / "meshes").glob("03001627/*/models/model_normalized.obj"))
    out, png = tmp_path / "K.json", tmp_path / "K.png"
    argv = ["transfer", "--run", str(run), "--knowledge", str(sample_root), "--shape", str(mesh)]
    assert main([*argv, "--out", str(out), "--png", str(png)]) == 0
    data = json.loads(out.read_text())
    assert data[0]["class_id"] == "03001627" and data[0]["model_id"] == mesh.parent.parent.name
    for kp in data[0]["keypoints"]:
        assert len(kp["xyz"]) == 3 and 0 <= kp["pcd_info"]["point_index"] < 2048 and "confidence" in kp
    models, problems = load_annotations(out)
    assert len(models) == 1
    first = out.read_text()
    assert list(run.glob("prototypes-*.pt"))  # cached; the second transfer reads the cache
    assert main([*argv, "--out", str(out)]) == 0 and out.read_text() == first
    assert png.stat().st_size > 1000
    assert main([*argv[:2], str(run.parent / "nope"), *argv[3:], "--out", str(out)]) == 1  # no such run


def test_a_correspondence_run_cannot_transfer(
    sample_root: Path, corr_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A real, complete correspondence run is refused by name, and nothing is written."""
    mesh = next((sample_root / "meshes").glob("03001627/*/models/model_normalized.obj"))
    out = tmp_path / "K.json"
    argv = ["transfer", "--run", str(corr_run), "--knowledge", str(sample_root), "--shape", str(mesh)]
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "'correspondence'" in err and "embedding" in err
    assert not out.exists()


def test_benchmark_command_with_backbone_args(sample_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(sample_root), "--categories", "chair", "--epochs", "1", "--out", str(out)]
    assert main([*args, "--backbone-args", json.dumps({"pointnet": TINY})]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 1 and rows[0]["backbone"] == "pointnet" and len(rows[0]["pck"]) == 11
    assert "| chair | pointnet | correspondence | 1 |" in (out / "results.md").read_text()
    assert load_checkpoint(out / "chair-correspondence-pointnet" / "best.pt")["config"]["backbone_kwargs"] == TINY
    assert main([*args, "--backbone-args", '{"dgcnn": {}}']) == 1  # not benchmarked: refused
    assert main([*args, "--config", '{"learning_rate": 1}']) == 1  # not a training setting: refused


def test_benchmark_saliency_reports_official_and_tuned_decisions(sample_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench-sal"
    settings = json.dumps({"lr_schedule": "cosine", "saliency_sigma": 0.03})
    args = ["benchmark", "--data", str(sample_root), "--categories", "chair", "--tasks", "saliency"]
    tiny = json.dumps({"pointnet": TINY})
    assert main([*args, "--epochs", "1", "--out", str(out), "--config", settings, "--backbone-args", tiny]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    assert {"miou", "map", "miou_nms", "map_nms", "decision"} <= set(row)
    assert (out / "chair-saliency-pointnet" / "decision.json").is_file()
    cfg = load_checkpoint(out / "chair-saliency-pointnet" / "best.pt")["config"]
    assert cfg["lr_schedule"] == "cosine" and cfg["saliency_sigma"] == 0.03


def test_scale_augmentation_is_anisotropic_bounded_and_seeded() -> None:
    from kpengine.learn.augment import Augment

    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (500, 3)).astype(np.float32)
    aug = Augment(jitter_sigma=0.0, translate=0.0, scale=0.2)
    out = aug(pts, np.random.default_rng(1))
    factors = (out / pts).mean(axis=0)
    assert np.allclose(out / pts, factors, atol=1e-5)  # one factor per axis
    assert np.all((factors >= 0.8) & (factors <= 1.2)) and np.ptp(factors) > 0
    assert np.array_equal(out, aug(pts, np.random.default_rng(1)))
    assert np.array_equal(Augment(jitter_sigma=0.0, translate=0.0)(pts, np.random.default_rng(1)), pts)
