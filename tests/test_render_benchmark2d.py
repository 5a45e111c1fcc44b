"""The rendered 2D benchmark on kpengine's sample data: layout, oracle PCK = 1, PCK arithmetic, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kpengine.cli.main import main
from kpengine.io.benchmark2d import load_benchmark
from kpengine.metrics.pck2d import pck
from kpengine.render.benchmark2d import build_benchmark, oracle_predictions


@pytest.fixture(scope="module")
def bench(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench2d")
    build_benchmark(sample_root, "chair", "test", out, views=2, size=96, seed=1)
    return out


def test_layout_and_oracle(bench: Path) -> None:
    index, anns = load_benchmark(bench)
    assert index["images"] and len(anns) == len(index["images"])
    for ann in anns.values():
        assert (bench / ann["filename"]).is_file() and (bench / ann["mask"]).is_file()
        assert len(ann["kps"]) == len(ann["kps_ids"]) == len(ann["kps_visible"])
        x0, y0, x1, y1 = ann["bndbox"]
        assert 0 <= x0 <= x1 < 96 and 0 <= y0 <= y1 < 96
        assert 0 <= ann["viewpoint"]["azimuth_bin"] < 24 and 0 <= ann["viewpoint"]["elevation_bin"] < 12
    assert sum(sum(a["kps_visible"]) for a in anns.values()) > 0
    table = pck(anns, oracle_predictions(anns))
    assert table["chair"]["img@0.1"] == 1.0 and table["chair"]["bbox@0.05"] == 1.0


def test_pck_by_hand() -> None:
    ann = {
        "category": "mug",
        "image_width": 200,
        "image_height": 100,
        "bndbox": [10, 10, 59, 29],  # 50 x 20 -> max side 50
        "kps": [[20.0, 20.0], [40.0, 20.0], [50.0, 25.0]],
        "kps_ids": [0, 1, 2],
        "kps_visible": [1, 1, 0],
    }
    # errors: 4 px (id 0), 12 px (id 1); id 2 invisible and not counted
    preds = {"a": {"0": [24.0, 20.0], "1": [40.0, 32.0], "2": [0.0, 0.0]}}
    t = pck({"a": ann}, preds)["mug"]
    assert t["n"] == 2
    assert t["img@0.05"] == 0.5 and t["img@0.1"] == 1.0  # thresholds 10 and 20 px
    assert t["bbox@0.1"] == 0.5 and t["bbox@0.15"] == 0.5 and t["bbox@0.05"] == 0.0  # thresholds 2.5, 5 and 7.5 px
    assert pck({"a": ann}, {})["mug"]["img@0.15"] == 0.0


def test_cli_round_trip(bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, anns = load_benchmark(bench)
    preds = {k: {s: (np.array(p) + 2.0).tolist() for s, p in v.items()} for k, v in oracle_predictions(anns).items()}
    (tmp_path / "P.json").write_text(json.dumps(preds))
    assert (
        main(
            [
                "evaluate-2d",
                "--benchmark",
                str(bench),
                "--predictions",
                str(tmp_path / "P.json"),
                "--output",
                str(tmp_path / "R.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "R.json").read_text())
    assert result["all"]["img@0.05"] == 1.0  # 2.8 px < 4.8 px
    assert "chair" in capsys.readouterr().out
    assert main(["evaluate-2d", "--benchmark", str(tmp_path / "nope"), "--oracle"]) == 1


def test_evaluate_2d_warning_goes_through_logging(
    bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown image id is warned about once; ``-q`` silences it and ``-v`` names every one
    (issue 14, item 14: the command printed its own ``warning:`` past ``-q``)."""
    _, anns = load_benchmark(bench)
    preds = {**oracle_predictions(anns), "ghost-1": {"0": [1.0, 1.0]}, "ghost-2": {}}
    (tmp_path / "P.json").write_text(json.dumps(preds))
    args = ["evaluate-2d", "--benchmark", str(bench), "--predictions", str(tmp_path / "P.json"), "--output", "-"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("warning: 2 predicted images are not in the benchmark (e.g. ghost-1)") == 1, err
    assert main(["-q", *args]) == 0
    assert capsys.readouterr().err == ""
    assert main(["-v", *args]) == 0
    assert "ghost-1, ghost-2" in capsys.readouterr().err
