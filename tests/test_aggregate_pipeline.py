"""End to end on the generated sample data: simulated crowd -> aggregate -> close to ground truth."""

import json
from dataclasses import replace

import numpy as np
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


def _cfg(steps=STEPS, ids="classes"):
    cfg = AggregateConfig(progress=False, ids=ids)
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


def test_keypointnet_shaped_crowd_has_few_annotators_per_model_from_a_small_pool(chairs):
    model = CrowdModel.keypointnet("bed", seed=2, mirrored=1.0, mirror_flip=1.0, noise=0.0, wrong_rate=0.0,
                                   miss_rate=0.0, keep_rate=1.0)  # fmt: skip
    assert model.n_annotators == 8  # the paper's Table 3 pool for beds
    clicks = simulate_crowd(chairs, model)
    assert clicks == simulate_crowd(chairs, model)
    per_model: dict[str, set[str]] = {}
    for c in clicks:
        per_model.setdefault(c.model_id, set()).add(c.annotator)
    assert all(3 <= len(v) <= 5 for v in per_model.values()) and len(per_model) == len(chairs)
    assert len({c.annotator for c in clicks}) <= 8
    # every annotator mirrored on every model, no noise: each click lands on the reflection partner
    by_id = {s.model_id: s for s in chairs}
    checked = 0
    for c in clicks:
        s = by_id[c.model_id]
        partner = {}
        for g in s.symmetries.reflection:
            i, j = g.kp_indexes
            partner[i], partner[j] = j, i
        k = list(s.point_indices).index(c.point_index) if c.point_index in s.point_indices else None
        assert k is not None  # exact clicks land on ground-truth points
        checked += k in partner
    assert checked > 0
    # the same annotator's kp_index names a point and its mirror partner on different models only when
    # the model has a pair; with mirror_flip 0 each kp_index keeps one semantic id everywhere
    steady = simulate_crowd(chairs, replace(model, mirror_flip=0.0))
    meaning: dict[tuple[str, int], set[int]] = {}
    for c in steady:
        s = by_id[c.model_id]
        sid = int(s.semantic_ids[list(s.point_indices).index(c.point_index)])
        meaning.setdefault((c.annotator, c.kp_index), set()).add(sid)
    assert all(len(v) == 1 for v in meaning.values())
    flipped: dict[tuple[str, int], set[int]] = {}
    for c in clicks:
        s = by_id[c.model_id]
        sid = int(s.semantic_ids[list(s.point_indices).index(c.point_index)])
        flipped.setdefault((c.annotator, c.kp_index), set()).add(sid)
    assert flipped != meaning  # mirrored clicks name the partner's id


@pytest.mark.parametrize("ids", ["classes", "tsne"])
def test_aggregation_recovers_ground_truth_with_consistent_ids(chairs, ids):
    clicks = simulate_crowd(chairs, CrowdModel(n_annotators=10, noise=0.015, wrong_rate=0.05, seed=0))
    res = aggregate(chairs, clicks, _cfg(ids=ids))
    s = evaluate_aggregation(chairs, res.predictions)
    assert s["recall@0.05"] >= 0.9
    assert s["precision@0.05"] >= 0.95
    assert s["ari"] >= 0.9 and s["purity"] >= 0.9
    assert abs(s["classes_found"] - s["classes_true"]) <= 2
    assert res.report["keypoints_per_model"] and res.report["clusters"]
    # same seed, same result
    again = aggregate(chairs, clicks, _cfg(ids=ids))
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
    assert report["config"]["classes"]["position"]["enabled"] is True
    assert report["config"]["embedding"]["anti_collapse"] == "variance"
    # the two switches reach the pipeline (the report keeps the configuration it ran with)
    out2 = tmp_path / "out2.json"
    argv2 = ["aggregate", *base, "--raw", str(raw), "--out", str(out2), "--steps", "5", "--figures", "0"]
    assert main([*argv2, "--no-progress", "--no-position-prior", "--anti-collapse", "entropy"]) == 0
    report2 = json.loads((tmp_path / "out2.report.json").read_text())
    assert report2["config"]["classes"]["position"]["enabled"] is False
    assert report2["config"]["embedding"]["anti_collapse"] == "entropy"
    assert report2["class_grouping"]["single_annotator_placed_by_prior"] == 0


def test_classes_route_on_a_keypointnet_shaped_crowd_weights_careful_annotators(chairs):
    crowd = CrowdModel.keypointnet("chair", seed=0, n_annotators=6)
    res = aggregate(chairs, simulate_crowd(chairs, crowd), _cfg())
    s = evaluate_aggregation(chairs, res.predictions)
    # 3-5 of 6 annotators per chair, one mirrored-prone crowd, wrong clicks and misses (measured 0.91 / 0.97 / 0.96)
    assert s["recall@0.05"] >= 0.85 and s["precision@0.05"] >= 0.93 and s["ari"] >= 0.9
    assert abs(s["classes_found"] - s["classes_true"]) <= 2
    # each annotator's measured spread (leave-one-out distance to the others' consensus) ranks them as
    # their true click noise does; the noise is the simulator's own draw (crowd.py: traits stream, seed (seed, 1))
    traits = np.random.default_rng([crowd.seed, 1])
    traits.normal(0.0, crowd.activity_spread, crowd.n_annotators)
    noise = crowd.noise * np.exp(traits.normal(0.0, crowd.noise_spread, crowd.n_annotators))
    spread = res.report["class_grouping"]["annotator_spread"]
    names = sorted(spread)
    measured = np.array([spread[a] for a in names])
    true = np.array([noise[int(a[3:])] for a in names])
    assert np.corrcoef(np.argsort(np.argsort(measured)), np.argsort(np.argsort(true)))[0, 1] >= 0.6


def test_progress_reports_every_stage_once_per_round_and_never_goes_back(chairs):
    seen: list[tuple[str, float]] = []
    clicks = simulate_crowd(chairs, CrowdModel(n_annotators=6, seed=0))
    aggregate(chairs, clicks, replace(_cfg(steps=3), rounds=2), on_stage=lambda n, f: seen.append((n, f)))
    rounds = ["embedding", "fidelity", "ids"]
    assert [n for n, _ in seen] == ["saliency", *rounds, *rounds, "symmetry", "done"]
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions[4] == 0.15 + 0.75 / 2  # the second round's embedding starts halfway through the rounds' share
