"""The command-line contract: kpengine stats / evaluate / baseline / show / sample-data."""

import json

import pytest

from kpengine.cli.main import main


def test_stats_on_real_data_matches_the_published_counts(keypointnet, tmp_path, capsys):
    out = tmp_path / "stats.json"
    assert main(["stats", "--data", str(keypointnet), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "bathtub" in table and "total" in table
    stats = {c["category"]: c for c in json.loads(out.read_text())["categories"]}
    bathtub, bed = stats["bathtub"], stats["bed"]
    assert bathtub["models"] == 492 and bed["models"] == 146
    assert [bathtub["models_by_split"][s] for s in ("train", "val", "test")] == [344, 49, 99]
    assert [bed["models_by_split"][s] for s in ("train", "val", "test")] == [102, 14, 30]
    assert bathtub["keypoints"] == 7880 and bathtub["with_pcd"] == 492
    assert len(stats) == 15


def test_template_baseline_reproduces_the_anchor_pck(keypointnet, tmp_path, capsys):
    """The issue's anchor for the mean-position template: 0.074 / 0.411 / 0.742 on bathtub."""
    preds, result = tmp_path / "p.json", tmp_path / "r.json"
    args = ["--data", str(keypointnet), "--category", "bathtub"]
    assert main(["baseline", *args, "--task", "correspondence", "--out", str(preds)]) == 0
    assert main(["evaluate", *args, "--split", "test", "--task", "correspondence", "--predictions", str(preds),
                 "--output", str(result)]) == 0  # fmt: skip
    r = json.loads(result.read_text())
    assert r["thresholds"][5] == pytest.approx(0.05)
    assert [round(r["pck"][i], 3) for i in (1, 5, 10)] == [0.074, 0.411, 0.742]
    assert "threshold" in capsys.readouterr().out


def test_evaluate_ground_truth_scores_perfectly_on_sample_data(sample_root, tmp_path):
    from kpengine.data import KeypointNetDataset

    test = KeypointNetDataset(sample_root, "table", "test")
    sal = {s.model_id: [[int(i), 1.0] for i in sorted(set(s.point_indices.tolist()))] for s in test}
    cor = {s.model_id: {str(k): int(v) for k, v in zip(s.semantic_ids, s.point_indices)} for s in test}
    for task, preds in (("saliency", sal), ("correspondence", cor)):
        p, r = tmp_path / f"{task}.json", tmp_path / f"{task}_r.json"
        p.write_text(json.dumps(preds))
        argv = ["evaluate", "--data", str(sample_root), "--category", "table", "--split", "test", "--task", task]
        assert main([*argv, "--predictions", str(p), "--output", str(r)]) == 0
        result = json.loads(r.read_text())
        for name in ("miou", "map") if task == "saliency" else ("pck",):
            assert result[name][0] == (1.0 if name == "miou" else 0.0)  # strict < at 0 for AP/PCK, > for IoU
            assert result[name][1:] == [1.0] * 10


def test_evaluate_reports_bad_predictions_clearly(sample_root, tmp_path, capsys):
    from kpengine.data import KeypointNetDataset

    test = KeypointNetDataset(sample_root, "mug", "test")
    first = test.model_ids[0]
    argv = ["evaluate", "--data", str(sample_root), "--category", "mug", "--split", "test", "--task", "correspondence"]
    p = tmp_path / "p.json"
    p.write_text(json.dumps({first: {"0": 99999}}))
    assert main([*argv, "--predictions", str(p)]) == 1
    err = capsys.readouterr().err
    assert str(p) in err and first in err and "99999" in err
    p.write_text('{"a": [1, 2,,]}')
    assert main([*argv, "--predictions", str(p)]) == 1
    assert "line 1, column" in capsys.readouterr().err
    p.write_text(json.dumps({first: {"0": 1, "77": 2}, "no-such-model": {"0": 1}}))
    out = tmp_path / "r.json"
    assert main([*argv, "--predictions", str(p), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no-such-model" in err and "77" in err and "have no predictions" in err
    # every model but the first predicted nothing, the first predicted 1 of 7 ids at most
    assert json.loads(out.read_text())["pck"][-1] <= 1 / 7 / len(test) + 1e-9


def test_unknown_category_and_show(sample_root, tmp_path, capsys):
    assert main(["stats", "--data", str(sample_root), "--category", "sofa"]) == 1
    assert "unknown category 'sofa'" in capsys.readouterr().err
    png = tmp_path / "mug.png"
    assert main(["show", "--data", str(sample_root), "--category", "mug", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "point_index, score" in text and "strict" in text
