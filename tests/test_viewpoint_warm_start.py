"""A viewpoint run that starts from another run's network (``init``): the ninth session's bathtub run
stopped at epoch 75 of 150 without optimizer state, and training on from its weights is the cheap way
to finish it on the CPU."""

from __future__ import annotations

import pytest
import torch

from kpengine.errors import DataError
from kpengine.image.tasks.viewpoint import ViewpointConfig, ViewpointTask, start_weights
from kpengine.learn.checkpoint import save_checkpoint
from kpengine.learn.runs import resumed_config


def config(tmp_path, **kw) -> ViewpointConfig:
    base = {"task": "viewpoint", "data": str(tmp_path / "nodata"), "category": "car", "size": 32, "widths": [4, 8]}
    return ViewpointConfig(**{**base, **kw})


def saved_run(tmp_path, name: str = "start", file: str = "best.pt", **kw):
    """A run directory holding one checkpoint of a network with seeded random weights."""
    cfg = config(tmp_path, **kw)
    torch.manual_seed(7)
    net = ViewpointTask(cfg).model()
    with torch.no_grad():  # batch-norm statistics too, so that eval-mode outputs depend on every tensor
        for buf in net.buffers():
            if buf.dtype.is_floating_point:
                buf.uniform_(0.5, 1.5)
    run = tmp_path / name
    save_checkpoint(run / file, {"config": cfg.to_json(), "model": net.state_dict(), "epoch": 74})
    return run, net


def test_a_run_with_init_starts_from_the_saved_network_exactly(tmp_path):
    run, saved = saved_run(tmp_path)
    torch.manual_seed(123)  # a different seed: without init the weights would differ
    fresh = ViewpointTask(config(tmp_path)).model()
    torch.manual_seed(123)
    started = ViewpointTask(config(tmp_path, init=str(run))).model()
    x = torch.rand(3, 3, 32, 32)
    saved.eval(), fresh.eval(), started.eval()
    with torch.no_grad():
        want = saved(x)
        assert torch.equal(started(x)["azimuth"], want["azimuth"])
        assert torch.equal(started(x)["elevation"], want["elevation"])
        assert not torch.allclose(fresh(x)["azimuth"], want["azimuth"])
    for k, v in saved.state_dict().items():
        assert torch.equal(started.state_dict()[k], v), k


def test_init_falls_back_to_last_pt_when_the_run_kept_no_best(tmp_path):
    run, saved = saved_run(tmp_path, file="last.pt")
    got = start_weights(config(tmp_path, init=str(run)))
    assert all(torch.equal(got[k], v) for k, v in saved.state_dict().items())


@pytest.mark.parametrize(
    ("start", "mine", "says"),
    [
        ({"widths": [4, 16]}, {}, "widths"),
        ({"size": 48}, {}, "size"),
        ({}, {"half_weight": 0.5}, "half head"),
        ({}, {"category": "chair"}, "category"),
    ],
)
def test_init_of_another_shape_or_category_is_refused_naming_the_checkpoint(tmp_path, start, mine, says):
    run, _ = saved_run(tmp_path, **start)
    with pytest.raises(DataError, match=says) as err:
        ViewpointTask(config(tmp_path, init=str(run), **mine)).model()
    assert str(run / "best.pt") in str(err.value)


def test_init_of_another_task_or_a_missing_run_is_refused(tmp_path):
    run = tmp_path / "sil"
    save_checkpoint(run / "best.pt", {"config": {"task": "silhouette", "category": "car"}, "model": {}})
    with pytest.raises(DataError, match="task 'silhouette'"):
        ViewpointTask(config(tmp_path, init=str(run))).model()
    with pytest.raises(DataError, match="no checkpoint"):
        ViewpointTask(config(tmp_path, init=str(tmp_path / "gone"))).model()


def test_a_resumed_run_does_not_need_its_start_run_any_more(tmp_path):
    """init is a runtime setting: resuming takes the command's (empty) value, not the saved path,
    which may have been deleted since; the resumed weights come from the run's own checkpoint."""
    saved = config(tmp_path, init=str(tmp_path / "deleted")).to_json()
    cfg = resumed_config(config(tmp_path), saved, tmp_path / "run" / "last.pt")
    assert cfg.init == ""
    ViewpointTask(cfg).model()  # builds without looking for the deleted run


def test_a_checkpoint_of_a_warm_started_run_loads_without_its_start_run(tmp_path):
    """Inference (``kpengine viewpoint``, ``understand``) rebuilds the network from the saved config; it
    must take the checkpoint's own weights and not look for the run training started from."""
    from kpengine.learn.runs import Task

    run, saved = saved_run(tmp_path)
    state = {"config": config(tmp_path, init=str(tmp_path / "deleted")).to_json(), "model": saved.state_dict()}
    got = ViewpointTask.load_model(state)
    assert all(torch.equal(got.state_dict()[k], v) for k, v in saved.state_dict().items())
    with pytest.raises(DataError, match="no checkpoint"):  # the generic path would have read init
        Task.load_model.__func__(ViewpointTask, state)
