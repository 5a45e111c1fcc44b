"""The run mechanism with a network that is not a point network, and the registries."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset, default_collate

from kpengine.errors import DataError
from kpengine.learn.checkpoint import load_checkpoint
from kpengine.learn.config import RunConfig
from kpengine.learn.registry import Registry
from kpengine.learn.runs import Data, Run, Task, train_run

torch.set_num_threads(1)


@dataclass(kw_only=True)
class ToyConfig(RunConfig):
    width: int = 8
    IDENTITY: ClassVar[tuple[str, ...]] = ("task", "width")


class ToyTask(Task):
    """Regression y = x . w + noise with a dropout network: training draws from torch's RNG."""

    config_class = ToyConfig

    def __init__(self, config: ToyConfig, validated: bool = True, median: bool = False):
        super().__init__(config)
        self.validated, self.median = validated, median

    def data(self) -> Data:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(60, 4, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(60, generator=g)
        val = TensorDataset(x[48:], y[48:]) if self.validated else None
        return Data(TensorDataset(x[:48], y[:48]), val, default_collate)

    def model(self) -> nn.Module:
        w = self.config.width
        return nn.Sequential(nn.Linear(4, w), nn.ReLU(), nn.Dropout(0.3), nn.Linear(w, 1))

    def loss(self, net: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return ((net(x)[:, 0] - y) ** 2).mean()

    def validate(self, model: nn.Module) -> dict[str, float] | None:
        if not self.median:
            return None
        x, y = self.data().val.tensors
        err = (model(x)[:, 0] - y).abs()
        return {"val_loss": float((err**2).mean()), "median_error": float(err.median())}


def toy(epochs: int = 4, **kw) -> ToyConfig:
    return ToyConfig(**{"task": "toy", "epochs": epochs, "batch_size": 8, "lr": 1e-2, "lr_schedule": "cosine", **kw})


def weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / name)["model"]


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = train_run(ToyTask(toy()), tmp_path / "whole", progress=False)
    real_epoch = Run._train_epoch

    def killed_in_epoch_3(self: Run, epoch: int) -> float:
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(Run, "_train_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_run(ToyTask(toy()), tmp_path / "cut", progress=False)
    monkeypatch.setattr(Run, "_train_epoch", real_epoch)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1  # two epochs done
    resumed = train_run(ToyTask(toy()), tmp_path / "cut", resume=True, progress=False)
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    h1 = json.loads((tmp_path / "whole" / "history.json").read_text())["epochs"]
    h2 = json.loads((tmp_path / "cut" / "history.json").read_text())["epochs"]
    assert [(r["train_loss"], r["val_loss"], r["lr"]) for r in h1] == [
        (r["train_loss"], r["val_loss"], r["lr"]) for r in h2
    ]
    assert resumed["best_val_loss"] == whole["best_val_loss"] and h1[-1]["train_loss"] < h1[0]["train_loss"]
    # the lr is the epoch's alone: cosine from 1e-2 towards 1 % of it
    assert [r["lr"] for r in h1] == pytest.approx([toy().lr_at(e) for e in range(4)])
    # a different seed really trains differently (the check above can fail)
    train_run(ToyTask(toy(seed=1)), tmp_path / "seed1", progress=False)
    c = weights(tmp_path / "seed1")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_and_run_directory(tmp_path: Path) -> None:
    train_run(ToyTask(toy(epochs=2)), tmp_path / "r", progress=False)
    state = load_checkpoint(tmp_path / "r" / "best.pt")
    assert {"model", "optimizer", "config", "versions", "epoch", "history", "best_val"} <= set(state)
    assert state["config"]["width"] == 8 and state["versions"]["code"]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["task"] == "toy"
    assert (tmp_path / "r" / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_refuses_another_identity_and_keeps_saved_settings(tmp_path: Path) -> None:
    train_run(ToyTask(toy(epochs=1)), tmp_path / "r", progress=False)
    with pytest.raises(DataError, match="--resume"):
        Run(ToyTask(toy()), tmp_path / "r")
    with pytest.raises(DataError, match="width 8, not 16"):
        Run(ToyTask(toy(width=16)), tmp_path / "r", resume=True)
    run = Run(ToyTask(toy(epochs=3, lr=0.5)), tmp_path / "r", resume=True, progress=False)
    assert run.config.lr == 1e-2 and run.config.epochs == 3 and run.start_epoch == 1


def test_whole_set_validation_and_runs_without_validation(tmp_path: Path) -> None:
    train_run(ToyTask(toy(epochs=2), median=True), tmp_path / "median", progress=False)
    rows = json.loads((tmp_path / "median" / "history.json").read_text())["epochs"]
    assert all(r["median_error"] > 0 for r in rows)
    summary = train_run(ToyTask(toy(epochs=3), validated=False), tmp_path / "noval", progress=False)
    rows = json.loads((tmp_path / "noval" / "history.json").read_text())["epochs"]
    assert all(r["val_loss"] is None for r in rows)
    assert summary["best_val_loss"] == min(r["train_loss"] for r in rows)  # best by training loss
    assert (tmp_path / "noval" / "curve.png").is_file()


def test_in_memory_run_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = Run(ToyTask(toy(epochs=2)), None)
    summary = run.run()
    assert list(tmp_path.iterdir()) == [] and summary["epochs"] == 2
    x = torch.zeros(3, 4)
    assert run.model(x).shape == (3, 1)


def test_time_limit_stops_after_an_epoch_and_resume_finishes(tmp_path: Path) -> None:
    first = train_run(ToyTask(toy()), tmp_path / "t", progress=False, time_limit_s=0.0)
    assert first["epochs"] == 1
    train_run(ToyTask(toy()), tmp_path / "t", resume=True, progress=False)
    train_run(ToyTask(toy()), tmp_path / "whole", progress=False)
    a, b = weights(tmp_path / "t"), weights(tmp_path / "whole")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_line_per_epoch_and_no_bar_when_not_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train_run(ToyTask(toy(epochs=3)), tmp_path / "r")
    out, err = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/3", "2/3", "3/3"]
    assert "it/s" not in err and "\r" not in err  # no progress bar in a log


def test_task_refuses_another_config_class() -> None:
    with pytest.raises(DataError, match="needs a ToyConfig"):
        ToyTask(RunConfig(task="toy"))


def test_registry_lists_names_and_help_without_importing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "toyreg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        'from kpengine.learn.registry import Registry\n\nREG = Registry("toy", ("toyreg",))\n'
    )
    (pkg / "_private.py").write_text('"""not an entry"""\n')
    for name, doc in (("alpha", "first toy entry"), ("beta", "second toy entry")):
        (pkg / f"{name}.py").write_text(
            f'"""{doc}\n\nmore text\n"""\nfrom toyreg import REG\n\n\n@REG.register("{name}")\n'
            f"class Thing:\n    value = {name!r}\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    import toyreg

    reg: Registry = toyreg.REG
    assert reg.names() == ["alpha", "beta"]
    assert reg.summary("beta") == "second toy entry"
    assert "alpha  first toy entry" in reg.help()
    assert "toyreg.alpha" not in sys.modules  # listed, not imported
    assert reg.get("alpha").value == "alpha" and "toyreg.alpha" in sys.modules
    with pytest.raises(ValueError, match="unknown toy 'gamma'; choose one of alpha, beta"):
        reg.get("gamma")
    reg.add_package("no_such_package_here")  # a package that is not installed adds no entry
    assert reg.names() == ["alpha", "beta"]


def test_point_tasks_and_backbones_are_registered() -> None:
    from kpengine.learn.registry import BACKBONES, TASKS

    assert TASKS.names("kpengine.learn.tasks") == [
        "correspondence",
        "embedding",
        "point_contrast",
        "saliency",
        "unsupervised_keypoints",
    ]
    assert BACKBONES.names() == ["dgcnn", "pointconv", "pointnet", "pointnet2"]
    assert np.all([TASKS.summary(n) for n in TASKS.names()])
