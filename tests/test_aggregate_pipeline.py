"""End to end on the generated sample data: simulated crowd -> aggregate -> close to ground truth."""

import json
from dataclasses import replace

import pytest

from kpengine.aggregate.crowd import CrowdModel, simulate_crowd
from kpengine.aggregate.evaluate import evaluate_aggregation
from kpengine.aggregate.pipeline import AggregateConfig, aggregate
from kpengine.cli.main import main
from kpengine.data import KeypointNetDataset
from kpengine.errors import DataError

STEPS = 100


@pytest.fixture(scope="module")
def chairs(sample_root):
    return list(KeypointNetDataset(sample_root, "chair", "all"))


def _cfg(steps=STEPS):
    cfg = AggregateConfig(progress=False)
    return replace(cfg, embedding=replace(cfg.embedding, steps=steps))


def test_simulated_crowd_is_seeded_and_follows_its_model(chairs):
    a = simulate_crowd(chairs, CrowdModel(n_annotators=6, seed=3))
    b = simulate_crowd(chairs, CrowdModel(n_annotators=6, seed=3))
    c = simulate_crowd(chairs, CrowdModel(n_annotators=6, seed=4))
    assert a == b and a != c
    per_model = {}
    for click in a:
        per_model.setdefault(click.model_id, set()).add(click.annotator)
    assert len(per_model) == len(chairs) and min(len(v) for v in per_model.values()) >= 3
    exact = simulate_crowd(chairs, CrowdModel(n_annotators=4, noise=0.0, wrong_rate=0.0, miss_rate=0.0, keep_rate=1))
    gt = {s.model_id: set(s.point_indices.tolist()) for s in chairs}
    assert all(c.point_index in gt[c.model_id] for c in exact)


def test_aggregation_recovers_ground_truth_with_consistent_ids(chairs):
    clicks = simulate_crowd(chairs, CrowdModel(n_annotators=10, noise=0.015, wrong_rate=0.05, seed=0))
    res = aggregate(chairs, clicks, _cfg())
    s = evaluate_aggregation(chairs, res.predictions)
    assert s["recall@0.05"] >= 0.9
    assert s["precision@0.05"] >= 0.95
    assert s["ari"] >= 0.9 and s["purity"] >= 0.9
    assert abs(s["classes_found"] - s["classes_true"]) <= 2
    assert res.report["keypoints_per_model"] and res.report["clusters"]
    # same seed, same result
    again = aggregate(chairs, clicks, _cfg())
    assert all((again.predictions[m].point_index == p.point_index).all() for m, p in res.predictions.items())


def test_too_few_annotations_is_a_clear_error(chairs):
    clicks = simulate_crowd(chairs[:1], CrowdModel(n_annotators=3, seed=0))
    with pytest.raises(DataError, match="too few annotations to cluster"):
        aggregate(chairs, clicks, _cfg(steps=2))


def test_cli_simulate_and_aggregate_write_official_format_with_bad_clicks_reported(sample_root, tmp_path, capsys):
    raw, out = tmp_path / "raw.json", tmp_path / "out.json"
    base = ["--data", str(sample_root), "--category", "mug"]
    assert main(["simulate-crowd", *base, "--annotators", "8", "--out", str(raw), "--seed", "1"]) == 0
    clicks = json.loads(raw.read_text())
    clicks.append({**clicks[0], "model_id": "no-such-model"})
    clicks.append(dict(clicks[0]))  # a duplicate
    raw.write_text(json.dumps(clicks))
    argv = ["aggregate", *base, "--raw", str(raw), "--out", str(out), "--steps", "40", "--figures", "1"]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "no-such-model" in err and "duplicate" in err
    from kpengine.io.annotations import load_annotations

    models, problems = load_annotations(out)
    assert not problems and len(models) == 12 and sum(len(m.keypoints) for m in models) > 0
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert {"clusters", "noise_candidates", "keypoints_per_model", "problems"} <= set(report)
    assert (tmp_path / "out.clusters.png").stat().st_size > 0
    assert len(list(tmp_path.glob("out.fidelity_*.png"))) == 1
