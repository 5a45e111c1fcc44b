"""The PointContrast pretraining task: PointInfoNCE, the augmented pairs, training, fine-tuning init."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kpengine.cli.main import main
from kpengine.data import KeypointNetDataset
from kpengine.errors import DataError
from kpengine.learn.augment import Augment
from kpengine.learn.config import TrainConfig
from kpengine.learn.losses import info_nce, point_info_nce
from kpengine.learn.registry import TASKS
from kpengine.learn.runs import train_run
from kpengine.learn.tasks.point_contrast import ContrastPairs, ContrastView, PointContrastConfig, draw_pairs

torch.set_num_threads(1)

TINY = {"width": 32, "out_channels": 16}


def test_point_info_nce_hand_computed() -> None:
    # shape 0: anchors a0 = (1, 0), a1 = (0, 1); their matches are b2 = (3, 0) and b0 = (0, 2)
    # (normalised: (1, 0) and (0, 1)); b1 is matched to nothing and must not be a negative.
    # Logits / 0.5: anchor 0 [2, 0], anchor 1 [0, 2] -> each -log(e^2 / (e^2 + 1)) = log(1 + e^-2).
    # shape 1: a0 = (1, 0), a1 = (0.6, 0.8), matches (0.6, 0.8) and (1, 0): dot products 0.6 with
    # the positive and 1 with the negative for both -> log(1 + e^((1 - 0.6) / 0.5)) = log(1 + e^0.8).
    fa = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]], [[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]]])
    fb = torch.tensor([[[0.0, 2.0], [7.0, 7.0], [3.0, 0.0]], [[6.0, 8.0], [2.0, 0.0], [-1.0, 0.0]]])
    pairs = torch.tensor([[[0, 2], [1, 0]], [[0, 0], [1, 1]]])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(0.8))) / 2
    assert point_info_nce(fa, fb, pairs, 0.5).item() == pytest.approx(expected, rel=1e-6)
    # negatives stay within a shape: the batch is the mean of per-shape InfoNCE, not one pool
    per_shape = [info_nce(fa[i, pairs[i, :, 0]], fb[i, pairs[i, :, 1]], 0.5).item() for i in range(2)]
    assert point_info_nce(fa, fb, pairs, 0.5).item() == pytest.approx(np.mean(per_shape), rel=1e-6)
    pooled = info_nce(fa[[0, 0, 1, 1], pairs[..., 0].flatten()], fb[[0, 0, 1, 1], pairs[..., 1].flatten()], 0.5)
    assert pooled.item() > expected + 0.1
    # swapping the matches of shape 0 makes its positives the far rows
    wrong = pairs.clone()
    wrong[0, :, 1] = torch.tensor([0, 2])
    assert point_info_nce(fa, fb, wrong, 0.5).item() > expected + 0.5


def test_draw_pairs_index_the_same_source_point() -> None:
    rng = np.random.default_rng(3)
    keep_a, keep_b, pairs = draw_pairs(100, 80, 30, rng)
    assert len(set(keep_a.tolist())) == 80 and len(set(keep_b.tolist())) == 80
    assert pairs.shape == (30, 2) and len(set(pairs[:, 0].tolist())) == 30 and len(set(pairs[:, 1].tolist())) == 30
    np.testing.assert_array_equal(keep_a[pairs[:, 0]], keep_b[pairs[:, 1]])


def _cloud(n: int = 400, seed: int = 0) -> np.ndarray:
    """A box-like cloud, not centred (as ShapeNet's model_normalized), every point distinct."""
    return (np.random.default_rng(seed).uniform(-1, 1, (n, 3)) * (0.4, 0.2, 0.3) + (0.1, 0.25, -0.05)).astype(
        np.float32
    )


class _Shape:
    def __init__(self, points: np.ndarray):
        self.points, self.model_id = points, "m0"


def test_correspondences_survive_a_rigid_augmentation() -> None:
    cloud = _cloud()
    view = ContrastView(180.0, 0.0, Augment(0.0, 0.0, 0.0))  # any turn about the up axis, nothing else
    item = ContrastPairs([_Shape(cloud)], view, 300, 120, seed=1, train=True)[0]
    a, b, pairs = item["a"].double().numpy(), item["b"].double().numpy(), item["pairs"].numpy()
    pa, pb, src = a[pairs[:, 0]], b[pairs[:, 1]], cloud[item["source"].numpy()].astype(np.float64)
    # a turn about the vertical line through the box centre keeps each point's height and its
    # distance from that line: the matched rows are the same source points in both copies
    centre = (cloud.min(0) + cloud.max(0)) / 2
    for p in (pa, pb):
        np.testing.assert_allclose(p[:, 1], src[:, 1], atol=1e-5)
        radial = np.hypot(*(p - centre)[:, [0, 2]].T)
        np.testing.assert_allclose(radial, np.hypot(*(src - centre)[:, [0, 2]].T), atol=1e-5)
    # and all their mutual distances
    dist = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(pa), dist(src), atol=1e-5)
    np.testing.assert_allclose(dist(pb), dist(src), atol=1e-5)
    # the two copies really differ (otherwise the task is trivial)
    assert np.abs(pa - pb).max() > 0.05


def test_correspondences_survive_the_full_augmentation() -> None:
    """Scale, tilt, turn and translation are affine: the matched rows of b are an affine map of
    those of a up to the jitter (clipped at 0.01); a shuffled pairing is not."""
    cloud = _cloud(seed=2)
    view = ContrastView(15.0, 5.0, Augment(0.004, 0.01, 0.02, 0.0, 0.2))
    item = ContrastPairs([_Shape(cloud)], view, 320, 200, seed=4, train=True)[0]
    a, b, pairs = item["a"].double().numpy(), item["b"].double().numpy(), item["pairs"].numpy()

    def affine_residual(x: np.ndarray, y: np.ndarray) -> float:
        xh = np.hstack([x, np.ones((len(x), 1))])
        coef, *_ = np.linalg.lstsq(xh, y, rcond=None)
        return float(np.sqrt(((xh @ coef - y) ** 2).sum(1).mean()))

    matched = affine_residual(a[pairs[:, 0]], b[pairs[:, 1]])
    shuffled = affine_residual(a[pairs[:, 0]], b[np.random.default_rng(0).permutation(pairs[:, 1])])
    assert matched < 0.012  # two clipped jitters of sigma 0.004: ~0.004 * sqrt(2 * 3) = 0.0098 RMS
    assert shuffled > 10 * matched
    assert np.abs(a[pairs[:, 0]] - b[pairs[:, 1]]).max() > 0.02  # not the identity


def pretrain_config(root: Path, **kw) -> PointContrastConfig:
    values = {
        "task": "point_contrast",
        "data": str(root),
        "category": "chair",
        "epochs": 6,
        "lr": 3e-3,
        "n_pairs": 128,
        "backbone_kwargs": TINY,
        **kw,
    }
    return PointContrastConfig(**values)


@pytest.fixture(scope="module")
def pretrained(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("pc") / "pre"
    train_run(TASKS.get("point_contrast")(pretrain_config(sample_root)), run, progress=False)
    return run


def test_short_pretraining_lowers_the_loss_and_matches_points(pretrained: Path) -> None:
    hist = json.loads((pretrained / "history.json").read_text())["epochs"]
    assert hist[0]["train_loss"] < math.log(128) + 0.5  # chance level of 128 pairs, roughly
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] - 0.3, [h["train_loss"] for h in hist]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"], [h["val_loss"] for h in hist]
    assert hist[-1]["match_accuracy"] > 5 / 128  # well above chance (1 / 128)


def test_fine_tuning_starts_from_the_pretrained_backbone(sample_root: Path, pretrained: Path) -> None:
    from kpengine.learn.checkpoint import load_checkpoint

    pre = load_checkpoint(pretrained / "best.pt")["model"]
    cfg = TrainConfig(
        task="correspondence", data=str(sample_root), category="chair", shots=3, init=str(pretrained), **{}
    )
    cfg.backbone_kwargs = TINY
    task = TASKS.get("correspondence")(cfg)
    task.data()
    model = task.model()
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, pre[f"backbone.{name}"]), name
    assert model.head.out_channels == task.n_classes  # a new head of the task's size
    scratch = TASKS.get("correspondence")(TrainConfig(**{**cfg.to_json(), "init": ""}))
    scratch.data()
    first = next(iter(scratch.model().backbone.state_dict()))
    assert not torch.equal(scratch.model().backbone.state_dict()[first], pre[f"backbone.{first}"])


def test_bad_init_and_pretraining_predictions_are_refused(
    sample_root: Path, pretrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = {"task": "correspondence", "data": str(sample_root), "shots": 2, "init": str(pretrained)}
    wider = TASKS.get("correspondence")(TrainConfig(category="chair", backbone_kwargs={"width": 64}, **base))
    wider.data()
    with pytest.raises(DataError, match="backbone pointnet"):
        wider.model()
    other = TASKS.get("correspondence")(TrainConfig(category="table", backbone_kwargs=TINY, **base))
    other.data()
    with pytest.raises(DataError, match="category 'chair', not 'table'"):
        other.model()
    missing = TASKS.get("correspondence")(
        TrainConfig(category="chair", backbone_kwargs=TINY, **{**base, "init": str(tmp_path / "nothing")})
    )
    missing.data()
    with pytest.raises(DataError, match="no checkpoint"):
        missing.model()
    with pytest.raises(ValueError, match="no labels"):
        pretrain_config(sample_root, shots=5)
    with pytest.raises(ValueError, match="n_pairs"):
        pretrain_config(sample_root, n_pairs=5000)
    rc = main(["predict", "--run", str(pretrained), "--data", str(sample_root), "--category", "chair", "--out", "-"])
    assert rc != 0
    assert "fine-tune it first" in capsys.readouterr().err
    # the shapes the pretraining read: every train shape, no labels needed
    assert len(KeypointNetDataset(sample_root, "chair", "train")) > 3


def test_cli_fine_tunes_from_a_pretraining_run(sample_root: Path, pretrained: Path, tmp_path: Path, capsys) -> None:
    from kpengine.learn.checkpoint import load_checkpoint

    out = tmp_path / "ft"
    args = ["train", "--task", "correspondence", "--data", str(sample_root), "--category", "chair", "--shots", "2"]
    args += ["--epochs", "1", "--backbone-args", json.dumps(TINY), "--init", str(pretrained), "--out", str(out)]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["init"] == str(pretrained)
    assert json.loads((out / "config.json").read_text())["init"] == str(pretrained)
    # one epoch of fine-tuning moved the weights away from the pretrained ones, but not the shapes
    pre, ft = load_checkpoint(pretrained / "best.pt")["model"], load_checkpoint(out / "last.pt")["model"]
    shared = [k for k in ft if k.startswith("backbone.") and ft[k].is_floating_point()]
    assert shared and all(ft[k].shape == pre[k].shape for k in shared)
    assert any(not torch.equal(ft[k], pre[k]) for k in shared)
