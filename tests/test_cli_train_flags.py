"""`kpengine train`: a settings flag the user did not give leaves the task's own default in place."""

from __future__ import annotations

from dataclasses import fields

import pytest

import kpengine.learn.runs
from kpengine.cli.main import main
from kpengine.learn.registry import TASKS


@pytest.fixture()
def configs(monkeypatch):
    """The config each `train` call would run with (the run itself is not started)."""
    seen = []

    def fake_train_run(task, out, resume=False, progress=True, time_limit_s=None):
        task.config.time_limit_s_given = time_limit_s  # what the command passed on
        seen.append(task.config)
        return {"best_val_loss": 0.0, "best_epoch": 0, "world_size": 1}

    monkeypatch.setattr(kpengine.learn.runs, "train_run", fake_train_run)
    return seen


def _defaults(task: str) -> dict:
    return {f.name: f.default for f in fields(TASKS.get(task).config_class)}


def test_image_task_keeps_its_defaults_unless_a_flag_is_given(configs, tmp_path):
    base = ["train", "--task", "viewpoint", "--data", "renders", "--category", "chair", "--out", str(tmp_path / "r")]
    assert main(base) == 0
    d = _defaults("viewpoint")
    # the viewpoint task's own settings, not the point tasks' 50 epochs x batch 8 at 1e-3, constant
    assert (d["epochs"], d["batch_size"], d["lr"], d["lr_schedule"]) == (60, 64, 2e-3, "cosine")
    cfg = configs[-1]
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.seed) == (60, 64, 2e-3, "cosine", 0)
    assert main([*base, "--epochs", "3", "--lr", "0.01", "--batch-size", "8", "--lr-schedule", "constant"]) == 0
    cfg = configs[-1]
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_schedule) == (3, 8, 0.01, "constant")
    # a flag given with the point tasks' default value still wins over the task's default
    assert main([*base, "--batch-size", "64", "--epochs", "50"]) == 0
    assert (configs[-1].batch_size, configs[-1].epochs) == (64, 50)
    # --config sets what has no flag, and beats a flag
    assert main([*base, "--epochs", "3", "--config", '{"epochs": 5, "flip": false}']) == 0
    assert (configs[-1].epochs, configs[-1].flip) == (5, False)


def test_silhouette_and_point_tasks_defaults(configs, tmp_path):
    assert main(["train", "--task", "silhouette", "--data", "d", "--category", "chair", "--out", str(tmp_path)]) == 0
    assert (configs[-1].epochs, configs[-1].batch_size) == (30, 32)
    assert (
        main(["train", "--task", "correspondence", "--data", "d", "--category", "chair", "--out", str(tmp_path)]) == 0
    )
    cfg = configs[-1]  # the official benchmark's settings, now from the config class rather than argparse
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.n_points, cfg.backbone) == (
        50, 8, 1e-3, "constant", 2048, "pointnet",
    )  # fmt: skip
    argv = ["train", "--task", "correspondence", "--data", "d", "--category", "chair", "--out", str(tmp_path),
            "--points", "1024", "--backbone", "dgcnn", "--scale-augment", "0.2"]  # fmt: skip
    assert main(argv) == 0
    assert (configs[-1].n_points, configs[-1].backbone, configs[-1].scale_augment) == (1024, "dgcnn", 0.2)


def test_time_limit_reaches_the_run(configs, tmp_path):
    base = ["train", "--task", "viewpoint", "--data", "renders", "--category", "chair", "--out", str(tmp_path / "r")]
    assert main(base) == 0
    assert configs[-1].time_limit_s_given is None  # no limit unless asked
    assert main([*base, "--time-limit", "90"]) == 0
    assert configs[-1].time_limit_s_given == 90.0
