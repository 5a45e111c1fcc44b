"""The own-fit step rule of the 2D few-shot rows (``steps_by_own_fit``) and its use by
benchmarks/mvdecor.py (``--steps-rule own-fit``), with stand-in trainers whose own-shape fit is set
by hand: which rungs are trained, which one is chosen, and which are read instead of retrained."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pytest

from kpengine.image.tasks.multiview_fewshot import OWN_FIT_LEVEL, default_steps, steps_by_own_fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import mvdecor  # noqa: E402


class StandIn:
    """A trainer whose own-shape PCK@0.05 at each step count is given; records what it trained."""

    def __init__(self, fits: dict[int, float]) -> None:
        self.fits, self.calls = fits, []

    def __call__(self, steps: int) -> float:
        self.calls.append(steps)
        return self.fits[steps]


def test_a_run_that_fits_at_the_first_rung_is_trained_once() -> None:
    t = StandIn({600: 0.98})
    assert steps_by_own_fit(t, 600) == (600, [(600, 0.98)])
    assert t.calls == [600]


def test_an_underfit_run_doubles_until_it_fits() -> None:
    t = StandIn({600: 0.91, 1200: 0.98, 2400: 1.0})
    steps, rungs = steps_by_own_fit(t, 600)
    assert steps == 1200 and rungs == [(600, 0.91), (1200, 0.98)]
    assert t.calls == [600, 1200]  # 2400 never trained: 1200 already fits


def test_the_level_itself_counts_as_fitted_and_just_below_does_not() -> None:
    assert steps_by_own_fit(StandIn({600: 0.97}), 600, level=0.97)[0] == 600
    assert steps_by_own_fit(StandIn({600: 0.9699, 1200: 0.97}), 600, level=0.97)[0] == 1200


def test_a_run_that_never_fits_stops_at_the_cap_and_is_kept() -> None:
    t = StandIn({600: 0.5, 1200: 0.6, 2400: 0.7, 4800: 1.0})
    steps, rungs = steps_by_own_fit(t, 600)  # the default: two doublings, 2400 at k = 5 and 10
    assert steps == 2400 and [s for s, _ in rungs] == [600, 1200, 2400]
    assert t.calls == [600, 1200, 2400]  # 4800 is past the cap


def test_nan_counts_as_not_fitted_and_no_doubling_means_one_rung() -> None:
    assert steps_by_own_fit(StandIn({600: math.nan, 1200: 0.99}), 600)[0] == 1200
    t = StandIn({1800: 0.5})
    assert steps_by_own_fit(t, 1800, doublings=0) == (1800, [(1800, 0.5)])
    with pytest.raises(ValueError):
        steps_by_own_fit(t, 0)


def test_a_saturating_stand_in_picks_the_first_power_of_two_past_its_crossing() -> None:
    # fit(s) = 1 - exp(-s / tau) reaches the level at s* = -tau ln(1 - level); the rule must pick
    # the smallest of 600 * 2^j (j <= 2) at or past s*, worked out here without the rule
    for tau, expected in ((150.0, 600), (300.0, 1200), (700.0, 2400), (2000.0, 2400)):
        crossing = -tau * math.log(1 - OWN_FIT_LEVEL)  # 526, 1052, 2455, 7013
        ladder = [600, 1200, 2400]
        assert expected == next((s for s in ladder if s >= crossing), ladder[-1])
        t = StandIn({s: 1 - math.exp(-s / tau) for s in (600, 1200, 2400)})
        assert steps_by_own_fit(t, default_steps(5))[0] == expected
        assert t.calls == ladder[: ladder.index(expected) + 1]


def _args(**kw) -> argparse.Namespace:
    base = dict(
        category="bathtub",
        steps_2d=0,
        steps_3d=200,
        kernel="ball",
        distance_weight=0.0,
        fit_level=OWN_FIT_LEVEL,
        fit_doublings=2,
    )
    return argparse.Namespace(**{**base, **kw})


def _row(steps: int, fit: float, k: int = 10, draw: int = 0, **kw) -> dict:
    return {
        "method": "scratch+dist",
        "category": "bathtub",
        "k": k,
        "draw": draw,
        "steps": steps,
        "epochs": steps // math.ceil(k * 12 / 8),
        "train_pck": [0.5, fit, 1.0],
        "pck": [0.2, 0.6, 0.8],
        "distance_weight": 1.0,
        "kernel": "ball",
        **kw,
    }


def test_the_benchmark_reads_a_rung_already_trained_and_trains_only_the_next(tmp_path, monkeypatch) -> None:
    trained = []

    def measure(args, method, k, draw, run_dir, test, steps=0):
        trained.append((method, k, draw, steps, run_dir.name))
        return _row(steps, {1200: 0.954, 2400: 0.99}[steps], k, draw)

    monkeypatch.setattr(mvdecor, "measure", measure)
    prior = [
        {**_row(600, 0.743), "rung_source": "gpu.jsonl"},
        {**_row(600, 1.0, draw=1), "rung_source": "gpu.jsonl"},  # another draw: not this cell's
        {**_row(1200, 1.0, epochs=3), "rung_source": "cut.jsonl"},  # stopped by a time limit: not a rung
        {**_row(1200, 1.0, distance_weight=0.0), "rung_source": "nodist.jsonl"},  # another head: not a rung
    ]
    row = mvdecor.own_fit_row(_args(), "scratch+dist", 10, 0, tmp_path, None, prior)
    assert trained == [
        ("scratch+dist", 10, 0, 1200, "scratch+dist-k10-d0-s1200"),
        ("scratch+dist", 10, 0, 2400, "scratch+dist-k10-d0-s2400"),
    ]
    assert row["steps"] == 2400 and row["train_pck"][1] == 0.99 and "rung_source" not in row
    rungs = row["steps_rule"]["rungs"]
    assert [(s, f) for s, f, _ in rungs] == [(600, 0.743), (1200, 0.954), (2400, 0.99)]
    assert rungs[0][2] == "gpu.jsonl" and rungs[1][2] == str(tmp_path / "rungs.jsonl")
    written = [json.loads(line) for line in (tmp_path / "rungs.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in written] == [1200, 2400]
    # run again (resumed): every rung is read back from OUT/rungs.jsonl, nothing is trained
    trained.clear()
    again = mvdecor.own_fit_row(_args(), "scratch+dist", 10, 0, tmp_path, None, prior[:1] + written)
    assert trained == [] and again["steps"] == 2400


def test_a_later_files_row_replaces_an_earlier_ones_of_the_same_cell() -> None:
    old, other, new = _row(600, 0.9), _row(600, 0.9, draw=1), {**_row(1200, 0.98), "steps_rule": {}}
    rows, replaced = mvdecor.latest_rows([old, other, new])
    assert rows == [new, other] and replaced == [old]


def test_the_rungs_table_lists_each_draws_rungs_and_marks_the_chosen_one() -> None:
    rule = {"rule": "own-fit", "level": 0.97, "doublings": 2}
    rows = [
        {**_row(1200, 0.98), "steps_rule": {**rule, "rungs": [[600, 0.94, "a"], [1200, 0.98, "b"]]}},
        {**_row(600, 1.0, draw=2), "steps_rule": {**rule, "rungs": [[600, 1.0, "a"]]}},
        _row(600, 0.5, draw=1),  # a fixed-step row: not in the table
    ]
    lines = mvdecor.rungs_table(rows).splitlines()
    assert lines[0] == "| category | k | method | draw 0 | draw 2 |"
    assert lines[2] == "| bathtub | 10 | scratch+dist | 600 (0.940) -> **1200 (0.980)** | **600 (1.000)** |"
    assert mvdecor.rungs_table([_row(600, 0.5)]) == ""


# --- the same rule for the point networks (sixth pass): written and tested before any of its runs


def _point_row(steps: int, fit: float, method: str = "dgcnn", k: int = 30, draw: int = 0) -> dict:
    # a point run's epochs: ceil(steps / ceil(k / 8)) (run_3d: batches of 8 shapes)
    return {
        "method": method,
        "category": "bathtub",
        "k": k,
        "draw": draw,
        "steps": steps,
        "epochs": math.ceil(steps / math.ceil(k / 8)),
        "train_pck": [0.5, fit, 1.0],
        "pck": [0.4, 0.7, 0.9],
    }


def test_a_point_row_starts_at_steps_3d_reads_its_200_step_row_and_doubles(tmp_path, monkeypatch) -> None:
    trained = []

    def measure(args, method, k, draw, run_dir, test, steps=0):
        trained.append((method, steps, run_dir.name))
        return _point_row(steps, {400: 0.95, 800: 0.99}[steps])

    monkeypatch.setattr(mvdecor, "measure", measure)
    prior = [{**_point_row(200, 0.890), "rung_source": "k30.jsonl"}]  # bathtub DGCNN k = 30: own .890
    row = mvdecor.own_fit_row(_args(), "dgcnn", 30, 0, tmp_path, None, prior)
    assert trained == [("dgcnn", 400, "dgcnn-k30-d0-s400"), ("dgcnn", 800, "dgcnn-k30-d0-s800")]
    assert row["steps"] == 800 and [(s, f) for s, f, _ in row["steps_rule"]["rungs"]] == [
        (200, 0.890),
        (400, 0.95),
        (800, 0.99),
    ]
    # a fitted 200-step row is the answer as it is: nothing trained, its steps kept
    trained.clear()
    fitted = [{**_point_row(200, 1.0, "pointnet", k=5), "rung_source": "gpu.jsonl"}]
    row = mvdecor.own_fit_row(_args(), "pointnet", 5, 0, tmp_path, None, fitted)
    assert trained == [] and row["steps"] == 200 and row["steps_rule"]["rungs"] == [[200, 1.0, "gpu.jsonl"]]
    # --steps-3d moves the first rung (and the 2D rows keep theirs)
    assert mvdecor.first_rung(_args(steps_3d=300), "pointcontrast", 10) == 300
    assert mvdecor.first_rung(_args(steps_3d=300), "scratch+dist", 30) == default_steps(30) == 1800


def test_the_rule_covers_the_few_shot_2d_and_point_rows_only() -> None:
    own, fixed = _args(steps_rule="own-fit"), _args(steps_rule="fixed")
    for method in ("mvdecor+dist", "scratch+dist", "mvdecor-noxyz", "pointnet", "dgcnn", "pointcontrast"):
        assert mvdecor.ruled(own, method, 5) and not mvdecor.ruled(fixed, method, 5)
        assert not mvdecor.ruled(own, method, 0)  # the full-data reference keeps its epochs
    for method in ("mvdecor-nn", "random-nn"):  # no training steps to give
        assert not mvdecor.ruled(own, method, 5)


def test_next_rung_is_what_the_rule_would_train_next() -> None:
    # worked out by hand from the rule: 200 -> 400 -> 800, level 0.97
    assert mvdecor.next_rung({}, 200) == 200
    assert mvdecor.next_rung({200: 0.969}, 200) == 400
    assert mvdecor.next_rung({200: 0.97}, 200) is None
    assert mvdecor.next_rung({200: 0.9, 400: 0.98}, 200) is None
    assert mvdecor.next_rung({200: 0.9, 800: 1.0}, 200) == 400  # a later rung does not skip the one before
    assert mvdecor.next_rung({200: 0.5, 400: 0.6, 800: 0.7}, 200) is None  # the cap: kept unfitted
    assert mvdecor.next_rung({1800: math.nan}, 1800) == 3600
    assert mvdecor.next_rung({600: 0.9}, 600, doublings=0) is None


def test_rungs_only_trains_nothing_and_names_the_missing_rung(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(mvdecor, "measure", lambda *a, **kw: pytest.fail("trained with --rungs-only"))
    prior = [{**_point_row(200, 0.9, "pointnet", k=10), "rung_source": "gpu.jsonl"}]
    with pytest.raises(mvdecor.MissingRung) as missing:
        mvdecor.own_fit_row(_args(rungs_only=True), "pointnet", 10, 0, tmp_path, None, prior)
    assert missing.value.steps == 400


def test_run_3d_trains_the_rungs_steps(tmp_path, monkeypatch) -> None:
    class Stop(Exception):
        pass

    seen = []

    def train_run(task, out, **kw):
        seen.append(task.config)
        raise Stop

    monkeypatch.setattr(mvdecor, "train_run", train_run)
    args = _args(data="unused", device="cpu", time_limit=0, epochs_full=40)
    for k, steps, epochs in ((5, 0, 200), (5, 400, 400), (10, 400, 200), (30, 800, 200), (30, 0, 50)):
        with pytest.raises(Stop):  # steps per epoch ceil(k / 8): 1, 2, 4; 0 = --steps-3d (200)
            mvdecor.run_3d(args, "dgcnn", k, 0, tmp_path, steps=steps)
        assert (seen[-1].epochs, seen[-1].shots, seen[-1].backbone) == (epochs, k, "dgcnn")
        assert seen[-1].relabel_margin == 0.0  # an args without --relabel-margin: the official loss
    with pytest.raises(Stop):
        mvdecor.run_3d(_args(**{**vars(args), "relabel_margin": 1.0}), "pointnet", 5, 0, tmp_path)
    assert seen[-1].relabel_margin == 1.0


def test_fitted_rows_leaves_out_the_runs_that_miss_whole_own_shapes() -> None:
    flipped = {**_point_row(800, 0.4, k=5), "train_pck": [0.4, 0.4, 0.4]}  # 3 of 5 shapes relabelled
    fine = {**_point_row(200, 1.0, k=5, draw=1), "train_pck": [0.9, 1.0, 1.0]}
    full = {**_point_row(0, 0.0), "k": 0, "train_pck": None}  # the full-data reference: no own shapes
    kept, out = mvdecor.fitted_rows([flipped, fine, full], 0.9)
    assert kept == [fine, full] and out == [flipped]
    assert mvdecor.fitted_rows([flipped], 0.4) == ([flipped], [])  # the level itself is kept


def test_a_relabel_margin_run_is_a_rung_of_its_own() -> None:
    official = {**_point_row(200, 0.4, "pointnet", k=5), "rung_source": "gpu.jsonl"}  # the relabelled run
    margin = {**_point_row(200, 1.0, "pointnet", k=5), "relabel_margin": 1.0, "rung_source": "m.jsonl"}
    prior = [official, margin]
    assert mvdecor.find_rung(prior, _args(), "pointnet", 5, 0, 200) is official
    assert mvdecor.find_rung(prior, _args(relabel_margin=1.0), "pointnet", 5, 0, 200) is margin
    assert mvdecor.find_rung([official], _args(relabel_margin=1.0), "pointnet", 5, 0, 200) is None
    # a 2D row has no relabelling in its loss: the margin does not split its rungs
    two_d = {**_point_row(600, 1.0, "scratch+dist", k=5), "epochs": 75, "kernel": "ball"}
    assert mvdecor.find_rung([two_d], _args(relabel_margin=1.0), "scratch+dist", 5, 0, 600) is two_d
