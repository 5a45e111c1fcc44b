#!/usr/bin/env python
"""Plant issue 17's bugs one at a time and check that the tests named for each one fail.

Why: issue 17 listed bugs that survived the whole suite (the 20-NN graph built with k - 1
neighbours, fx and fy swapped, the contrastive hinge on the squared distance, ...), and
``docs/testing.md`` names the test that now catches each one. A name in a table proves
nothing until the bug is planted again and the test is seen to fail; this script does that
whenever the code or the tests move, so the table stays true.

Each bug is a literal text replacement in one or more source files (refused if the text is
no longer there: the code moved and the plant must be rewritten). It is applied to a scratch
copy of ``src/`` and ``tests/`` (the checkout is never touched), the named tests are run with
the copy first on the path, and the bug counts as caught when pytest reports a test failure
(exit code 1; a collection or usage error is reported as such, not as caught). ``--baseline``
first runs every named test on the unplanted copy, which must pass. Not part of CI: a few
minutes, most of it in the server and durability tests::

    KPENGINE_SHARED_DATA=../shared/data nice -n 10 .venv/bin/python scripts/planted_bugs.py --baseline

Prints one line per bug and writes ``WORK/planted.json``; exits 1 if any bug survives.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plant:
    name: str
    edits: tuple[tuple[str, str, str], ...]  # (file under src/kpengine, text, replacement)
    tests: tuple[str, ...]


PLANTS: tuple[Plant, ...] = (
    Plant(
        "20-NN geodesic graph built with k - 1 neighbours",
        (
            (
                "geometry/geodesic.py",
                'kneighbors_graph(points, k, mode="distance"',
                'kneighbors_graph(points, k - 1, mode="distance"',
            ),
        ),
        ("tests/test_geodesic.py::test_geodesics_use_exactly_twenty_neighbours_like_the_benchmark",),
    ),
    Plant(
        "LZF: long back-reference length byte read as 7 bits",
        (("io/pcd.py", "length += data[i]\n", "length += data[i] & 0x7F\n"),),
        (
            "tests/test_io_pcd.py::test_binary_compressed_written_by_liblzf",
            "tests/test_io_pcd.py::test_lzf_round_trips_the_reference_encoder_on_varied_data",
        ),
    ),
    Plant(
        "LZF: back-reference offset loses its high bits",
        (("io/pcd.py", "((ctrl & 0x1F) << 8)", "((ctrl & 0x0F) << 8)"),),
        (
            "tests/test_io_pcd.py::test_binary_compressed_written_by_liblzf",
            "tests/test_io_pcd.py::test_lzf_round_trips_the_reference_encoder_on_varied_data",
        ),
    ),
    Plant(
        "PCD field of COUNT > 1 read as one column",
        (
            (
                "io/pcd.py",
                'columns += [(base if count == 1 else f"{base}_{k}", dt) for k in range(count)]',
                "columns += [(base, dt)]",
            ),
        ),
        (
            "tests/test_io_pcd.py::test_binary_compressed_written_by_liblzf",
            "tests/test_io_pcd.py::test_binary_with_a_padding_field_of_count_three",
        ),
    ),
    Plant(
        "fx and fy swapped in Camera.project",
        (
            ("render/cameras.py", "self.intrinsics.fx * cam[:, 0] / z", "self.intrinsics.FY * cam[:, 0] / z"),
            ("render/cameras.py", "self.intrinsics.fy * cam[:, 1] / z", "self.intrinsics.fx * cam[:, 1] / z"),
            ("render/cameras.py", "self.intrinsics.FY * cam[:, 0] / z", "self.intrinsics.fy * cam[:, 0] / z"),
        ),
        (
            "tests/test_render_cameras.py::test_non_square_pixels_hand_computed_and_behind_the_camera",
            "tests/test_render_cameras.py::test_projection_agrees_with_kornia_pinhole",
        ),
    ),
    Plant(
        "no NaN for points behind the camera",
        (("render/cameras.py", "        uv[z <= 0] = np.nan\n", ""),),
        ("tests/test_render_cameras.py::test_non_square_pixels_hand_computed_and_behind_the_camera",),
    ),
    Plant(
        "contrastive hinge on the squared distance",
        (("learn/losses.py", "margin - hardest[ok].clamp_min(1e-12).sqrt()", "margin - hardest[ok]"),),
        (
            "tests/test_learn_losses.py::test_contrastive_loss_hand_computed",
            "tests/test_learn_losses.py::test_contrastive_margin_scales_the_hinge",
        ),
    ),
    Plant(
        "hardest negative taken as the farthest",
        (
            (
                "learn/losses.py",
                'torch.where(same_id, torch.full_like(d2, float("inf")), d2)',
                'torch.where(same_id, torch.full_like(d2, float("-inf")), d2)',
            ),
            ("learn/losses.py", "hardest = neg_d.min(dim=1).values", "hardest = neg_d.max(dim=1).values"),
        ),
        ("tests/test_learn_losses.py::test_contrastive_loss_hand_computed",),
    ),
    Plant(
        "PointNet's feature-transform regulariser never set",
        (("learn/backbones/pointnet.py", "self._regularizer = ((torch.bmm", "_unused = ((torch.bmm"),),
        (
            "tests/test_learn_backbones.py::test_pointnet_feature_transform_regularizer_hand_computed_and_lowered_by_a_step",
        ),
    ),
    Plant(
        "server stores the raw click, not the surface point",
        (
            (
                "server/geometry.py",
                "(float(positions[k][0]), float(positions[k][1]), float(positions[k][2])),",
                "(float(query[k][0]), float(query[k][1]), float(query[k][2])),",
            ),
        ),
        ("tests/test_server_api.py::test_a_click_off_the_vertices_is_stored_as_its_surface_point",),
    ),
    Plant(
        "off-surface tolerance 10x looser in the check",
        (("server/geometry.py", "if not dist <= tolerance:", "if not dist <= 10 * tolerance:"),),
        ("tests/test_server_api.py::test_surface_tolerance_is_five_thousandths",),
    ),
    Plant(
        "off-surface tolerance 10x looser in the default",
        (("server/app.py", "tolerance: float = 0.005", "tolerance: float = 0.05"),),
        ("tests/test_server_api.py::test_surface_tolerance_is_five_thousandths",),
    ),
    Plant(
        "24-keypoint limit off by one (24 refused)",
        (("server/api.py", "if len(body.keypoints) > MAX_KEYPOINTS:", "if len(body.keypoints) >= MAX_KEYPOINTS:"),),
        ("tests/test_server_api.py::test_exactly_24_keypoints_are_saved_and_25_refused",),
    ),
    Plant(
        "24-keypoint limit off by one (25 accepted)",
        (("io/clicks.py", "MAX_KEYPOINTS = 24", "MAX_KEYPOINTS = 25"),),
        ("tests/test_server_api.py::test_exactly_24_keypoints_are_saved_and_25_refused",),
    ),
    Plant(
        "every save refused with 422 (the durability test passed on this before issue 17)",
        (
            (
                "server/api.py",
                "    indices = [k.index for k in body.keypoints]\n",
                '    raise HTTPException(422, "planted")\n    indices = [k.index for k in body.keypoints]\n',
            ),
        ),
        ("tests/test_server_durability.py::test_kill_mid_request_loses_nothing_acknowledged",),
    ),
    Plant(
        "a correspondence run accepted by transfer (both checks removed)",
        (
            ("learn/transfer.py", 'if cfg.task != "embedding":', "if False:"),
            ("learn/transfer.py", 'model, state = load_run(run, task="embedding")', "model, state = load_run(run)"),
        ),
        ("tests/test_learn_train.py::test_a_correspondence_run_cannot_transfer",),
    ),
)


def _copy(work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", work / "pyproject.toml")
    if (REPO / "web" / "dist").exists():
        shutil.copytree(REPO / "web" / "dist", work / "web" / "dist")


def _pytest(work: Path, tests: tuple[str, ...]) -> tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=str(work / "src"))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("KPENGINE_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    start = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist", *tests]
    done = subprocess.run(cmd, cwd=work, env=env, text=True, capture_output=True)
    tail = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, time.monotonic() - start, tail[-1] if tail else ""


def _plant(work: Path, plant: Plant) -> dict[Path, str]:
    originals: dict[Path, str] = {}
    for rel, old, new in plant.edits:
        path = work / "src" / "kpengine" / rel
        text = path.read_text()
        originals.setdefault(path, text)
        if old not in text:
            raise SystemExit(f"{plant.name}: {rel} no longer contains {old!r}; rewrite this plant")
        path.write_text(text.replace(old, new, 1))
    return originals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kpengine-planted"), help="scratch folder")
    parser.add_argument("--baseline", action="store_true", help="first run every named test unplanted (must pass)")
    parser.add_argument("--only", nargs="+", default=[], metavar="WORD", help="plants whose name contains a word")
    args = parser.parse_args()
    plants = [p for p in PLANTS if not args.only or any(w in p.name for w in args.only)]
    _copy(args.work)
    rows: list[dict] = []
    if args.baseline:
        tests = tuple(dict.fromkeys(t for p in plants for t in p.tests))
        rc, seconds, last = _pytest(args.work, tests)
        print(f"baseline: rc {rc} in {seconds:.0f} s: {last}", flush=True)
        if rc != 0:
            raise SystemExit("the named tests fail without a planted bug: fix them first")
    for plant in plants:
        originals = _plant(args.work, plant)
        try:
            rc, seconds, last = _pytest(args.work, plant.tests)
        finally:
            for path, text in originals.items():
                path.write_text(text)
        verdict = {0: "SURVIVED", 1: "caught"}.get(rc, f"error (pytest exit {rc})")
        rows.append({"bug": plant.name, "tests": list(plant.tests), "verdict": verdict, "seconds": round(seconds, 1)})
        print(f"{verdict:8s} {seconds:5.0f} s  {plant.name}: {last}", flush=True)
    (args.work / "planted.json").write_text(json.dumps(rows, indent=2))
    if any(r["verdict"] != "caught" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
