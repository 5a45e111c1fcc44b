#!/usr/bin/env python
"""Mutation testing of kpengine's core modules with mutmut, one module group at a time.

Why: a test suite that passes tells little until it is seen to fail. mutmut plants one
small bug at a time (a flipped comparison, an off-by-one, a dropped argument) and runs the
tests that reach the mutated function; a mutant that survives is a bug the tests would miss.

Each group is mutated in its own scratch copy of the tree (``--work``, default
``/tmp/kpengine-mutation/GROUP``) so that the checkout stays untouched while it runs, with
only the group's own test files selected (mutmut then narrows further, per mutant, to the
tests that call the mutated function). Not part of CI: it is slow (tens of minutes per group
on 2 shared cores). Run it niced::

    nice -n 10 .venv/bin/python scripts/mutation.py metrics geometry --jobs 1

A run can be stopped (kill its process group) and resumed with ``--resume``; ``--mutants``
runs a named subset (a glob) so a long group can be split.

It prints, and writes to ``WORK/summary.json``, per group: mutants, killed, survived,
timeouts, the score (killed + timeout over all mutants, those no test reaches included), and
each survivor's diff.
Results and the surviving mutants explained are kept in ``docs/testing.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# group -> (files to mutate, test files that exercise them). Keep the tests narrow: mutmut
# runs them once with tracing to learn which tests reach which function.
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "metrics": (
        [
            "src/kpengine/metrics/saliency.py",
            "src/kpengine/metrics/correspondence.py",
            "src/kpengine/metrics/das.py",
            "src/kpengine/metrics/relabel.py",
        ],
        ["tests/test_metrics.py", "tests/test_symmetry_eval.py"],
    ),
    "geometry": (
        [
            "src/kpengine/geometry/geodesic.py",
            "src/kpengine/geometry/sampling.py",
            "src/kpengine/geometry/transforms.py",
        ],
        ["tests/test_geodesic.py", "tests/test_geometry_sampling.py", "tests/test_transforms.py"],
    ),
    "io": (
        [
            "src/kpengine/io/pcd.py",
            "src/kpengine/io/annotations.py",
            "src/kpengine/io/splits.py",
            "src/kpengine/io/mesh.py",
        ],
        [
            "tests/test_io_pcd.py",
            "tests/test_io_annotations.py",
            "tests/test_io_mesh.py",
            "tests/test_io_splits.py",
        ],  # not test_dataset.py: its real-data loads made a mutant cost ~30 s on the shared machine
    ),
    "cameras": (
        ["src/kpengine/render/cameras.py", "src/kpengine/render/project.py"],
        ["tests/test_render_cameras.py", "tests/test_render_raycast.py"],
    ),
    "losses": (
        ["src/kpengine/learn/losses.py"],
        ["tests/test_learn_losses.py"],
    ),
    "validation": (
        ["src/kpengine/server/geometry.py", "src/kpengine/server/schemas.py"],
        ["tests/test_server_geometry.py", "tests/test_server_api.py", "tests/test_server_security.py"],
    ),
    # issue 17 item 5, a sample of this round's image-side code: the viewpoint bins and soft
    # labels, photo-to-photo transfer through 3D, the shape space file and the Sammon stress
    "image": (
        [
            "src/kpengine/image/viewpoint.py",
            "src/kpengine/image/transfer.py",
            "src/kpengine/io/shapespace.py",
            "src/kpengine/image/retrieval/sammon.py",
        ],
        ["tests/test_image_viewpoint.py", "tests/test_image_transfer.py", "tests/test_retrieval_space.py"],
    ),
}

# extra pytest arguments of a group. The server's validation does not depend on the database
# kind, and the API tests' PostgreSQL variants double the cost of each mutant (a fresh
# database per test); the store's own tests cover PostgreSQL.
PYTEST_ARGS: dict[str, list[str]] = {"validation": ["-k", "not postgresql"]}


def _write_config(work: Path, files: list[str], tests: list[str], extra: list[str]) -> None:
    existing = [t for t in tests if (REPO / t).exists()]
    text = (REPO / "pyproject.toml").read_text()
    text += "\n[tool.mutmut]\n"
    text += 'source_paths = ["src"]\n'
    text += f"only_mutate = {json.dumps(files)}\n"
    text += f"pytest_add_cli_args_test_selection = {json.dumps(existing)}\n"
    args = ["-p", "no:cacheprovider", "-p", "no:xdist", *extra]
    text += f"pytest_add_cli_args = {json.dumps(args)}\n"
    (work / "pyproject.toml").write_text(text)


def _prepare(group: str, root: Path, resume: bool = False, extra: list[str] | None = None) -> Path:
    """Copy the tree into ``root/group``; with ``resume``, keep mutmut's earlier results there.

    mutmut 3 records each mutant's result in ``mutants/*.meta`` as it goes and, on the next
    ``run``, tests only the mutants without one (or whose function's source changed), and
    traces only the tests that are new. So a run stopped to free the CPU, or one restarted
    after tests were added, goes on where it was.
    """
    files, tests = GROUPS[group]
    work = root / group
    keep = resume and (work / "mutants").exists()
    if work.exists() and not keep:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", work / "src", ignore=ignore, dirs_exist_ok=keep)
    shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=keep)
    web_dist = REPO / "web" / "dist"
    if web_dist.exists():
        shutil.copytree(web_dist, work / "web" / "dist", dirs_exist_ok=keep)
    _write_config(work, files, tests, PYTEST_ARGS.get(group, []) + list(extra or []))
    return work


def _mutmut(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The mutated copy must be the one imported: mutmut puts mutants/src first on sys.path
    # and drops ./src, so an inherited PYTHONPATH pointing at a checkout would hide it.
    env.pop("PYTHONPATH", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    # the scratch copy has no ../shared/data beside it: point the real-data tests at this checkout's
    env.setdefault("KPENGINE_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    mutmut = [sys.executable, "-c", "from mutmut.__main__ import cli; cli()"]
    return subprocess.run([*mutmut, *args], cwd=work, env=env, text=True, capture_output=True)


def _summarise(group: str, work: Path) -> dict:
    results = _mutmut(work, "results", "--all", "true").stdout
    statuses: dict[str, str] = {}
    for line in results.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses[name] = status
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    # a mutant no selected test reaches ("no tests") is a bug the tests would miss: it counts as survived
    ran = sum(n for s, n in counts.items() if s in ("killed", "survived", "timeout", "suspicious", "no tests"))
    caught = counts.get("killed", 0) + counts.get("timeout", 0)
    survivors = {n: _mutmut(work, "show", n).stdout for n, s in statuses.items() if s in ("survived", "no tests")}
    return {
        "group": group,
        "files": GROUPS[group][0],
        "tests": GROUPS[group][1],
        "counts": counts,
        "score": caught / ran if ran else None,
        "survivors": survivors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "groups", nargs="*", default=list(GROUPS), help=f"groups to mutate (default all: {list(GROUPS)})"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/kpengine-mutation"), help="scratch folder")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    parser.add_argument("--summary-only", action="store_true", help="re-read the results of an earlier run")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep an earlier run's results in WORK/GROUP and test only the mutants without one "
        "(tests and sources are refreshed from this checkout; new tests are traced, changed functions re-run)",
    )
    parser.add_argument(
        "--pytest-args",
        type=shlex.split,
        default=[],
        metavar="ARGS",
        help='extra pytest arguments (one shell-quoted string, given as --pytest-args="...") for every '
        "test run of this invocation, e.g. --pytest-args=\"-k 'not real'\" to run "
        "mutants of the real-data parse paths against the unit tests only (say so where you record the score)",
    )
    parser.add_argument(
        "--mutants",
        nargs="+",
        default=[],
        metavar="NAME",
        help="run (or re-run) only these mutants, by name or glob as `mutmut results` prints them, "
        "e.g. 'kpengine.render.cameras.x_look_at__mutmut_*'; splits a long group into pieces",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {unknown}; known: {list(GROUPS)}")

    summaries = []
    for group in args.groups:
        work = args.work / group
        if not args.summary_only:
            work = _prepare(group, args.work, resume=args.resume or bool(args.mutants), extra=args.pytest_args)
            print(f"[{group}] mutmut run in {work}", flush=True)
            run = _mutmut(work, "run", "--max-children", str(args.jobs), *args.mutants)
            (work / "run.log").write_text(run.stdout + run.stderr)
            if run.returncode != 0:
                print(f"[{group}] mutmut failed ({run.returncode}); see {work / 'run.log'}", flush=True)
        summary = _summarise(group, work)
        summaries.append(summary)
        score = "n/a" if summary["score"] is None else f"{100 * summary['score']:.1f} %"
        print(f"[{group}] {summary['counts']} score {score}", flush=True)
        (work / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.work / "summary.json").write_text(json.dumps(summaries, indent=2))
    for summary in summaries:
        for name, diff in summary["survivors"].items():
            print(f"--- survivor {name}\n{diff}")


if __name__ == "__main__":
    main()
