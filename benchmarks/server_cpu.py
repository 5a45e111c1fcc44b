"""Server CPU per request, by endpoint: the load-independent cost behind the annotation load test.

Latency on a shared machine says mostly how long a request waited for a core; the CPU time
the server spends on it does not depend on the others' jobs. This starts a real
``kpengine serve`` process (SQLite and/or PostgreSQL, sample mugs), then sends, one at a time
from one keep-alive client, ``--repeat`` requests of each kind an annotator's page makes:
``/api/next``, the model info, ``mesh.glb``, the annotator's own keypoints, and a save of 3-15
clicks with ``base_revision`` (half of them on models saved before, as a revision is). For each
kind it reads the server's CPU time (user + system, all its processes, from ``/proc``) before
and after and prints the mean CPU milliseconds per request, and the mix one annotator cycle
costs (next + info + GLB + own keypoints two times in three, plus one save), which is what
``store_load.py`` reports as ``server_cpu_ms_per_save``.

    nice .venv/bin/python benchmarks/server_cpu.py --repeat 300 --db sqlite postgresql

With ``--py-spy PATH`` (the py-spy binary) each phase is also sampled (busy threads only) and
the functions found in the most samples, callees included, are listed (``--top``), which is
how the costs were found.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_load import MUG, _tree_cpu_seconds  # noqa: E402 - a sibling script

from kpengine.data.sample import generate_sample_dataset  # noqa: E402
from kpengine.io.annotations import load_annotations  # noqa: E402
from kpengine.io.layout import mesh_path  # noqa: E402
from kpengine.io.mesh import load_mesh  # noqa: E402
from kpengine.server.process import free_port, start_serve_process, stop_serve_process  # noqa: E402
from kpengine.store import open_store  # noqa: E402
from kpengine.store.exchange import import_dataset  # noqa: E402
from kpengine.store.pgtemp import start_temp_postgres  # noqa: E402
from kpengine.store.repo import create_annotator  # noqa: E402

#: share of annotator cycles that fetch a new model (the others revise the same one), as in store_load.py
NEW_MODEL_SHARE = 2 / 3


def _top(raw: Path, n: int) -> list[tuple[str, float]]:
    """Functions by share of samples they appear in (inclusive), from py-spy's collapsed stacks."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, k = line.rpartition(" ")
        total += int(k)
        for frame in set(stack.split(";")):
            counts[frame] += int(k)
    return [(frame, round(c / max(total, 1), 3)) for frame, c in counts.most_common(n)]


def measure(kind: str, url: str, sample: Path, repeat: int, py_spy: str | None, top: int) -> dict:
    store = open_store(url)
    with store.session() as s:
        import_dataset(s, sample, ["mug"])
        token = create_annotator(s, "cpu")[1]
    store.dispose()
    models = [a.model_id for a in load_annotations(sample / "annotations" / "mug.json")[0]]
    surfaces = {m: load_mesh(mesh_path(sample, MUG, m)).vertices for m in models}
    port = free_port()
    proc = start_serve_process(url, port)
    rng = np.random.default_rng(0)
    revision: dict[str, int] = {}
    out: dict = {"database": kind, "repeat": repeat}
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:

            def save(i: int) -> httpx.Response:
                mid = models[i % len(models)] if i % 2 else models[int(rng.integers(len(models)))]
                verts = surfaces[mid]
                n = int(rng.integers(3, 16))
                body = {
                    "keypoints": [{"index": k, "xyz": verts[int(rng.integers(len(verts)))].tolist()} for k in range(n)],
                    "base_revision": revision.get(mid, 0),
                }
                r = client.put(f"/api/annotations/mug/{mid}", json=body)
                revision[mid] = r.json()["revision"]
                return r

            kinds = {
                "next": lambda i: client.get("/api/next", params={"category": "mug"}),
                "model_info": lambda i: client.get(f"/api/models/mug/{models[i % len(models)]}"),
                "mesh_glb": lambda i: client.get(f"/api/models/mug/{models[i % len(models)]}/mesh.glb"),
                "own_keypoints": lambda i: client.get(f"/api/annotations/mug/{models[i % len(models)]}"),
                "save": save,
            }
            for name, call in kinds.items():
                for i in range(len(models)):  # warm: every model's geometry loaded once, as a long-running server has
                    assert call(i).status_code == 200, name
                spy = None
                if py_spy:
                    raw = Path(tempfile.mkdtemp()) / f"{name}.txt"
                    spy = subprocess.Popen(
                        [py_spy, "record", "--format", "raw", "-o", str(raw), "--pid", str(proc.pid), "-r", "400",
                         "--nolineno"],  # fmt: skip
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.0)
                cpu0, t0 = _tree_cpu_seconds(proc.pid), time.perf_counter()
                for i in range(repeat):
                    r = call(i)
                    assert r.status_code == 200, (name, r.status_code, r.text[:200])
                wall = time.perf_counter() - t0
                out[f"{name}_cpu_ms"] = round(1000 * (_tree_cpu_seconds(proc.pid) - cpu0) / repeat, 2)
                out[f"{name}_wall_ms"] = round(1000 * wall / repeat, 2)
                if spy is not None:
                    spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
                    spy.wait(60)
                    out[f"{name}_top"] = _top(raw, top)
    finally:
        stop_serve_process(proc)
    reads = out["next_cpu_ms"] + out["model_info_cpu_ms"] + out["mesh_glb_cpu_ms"] + out["own_keypoints_cpu_ms"]
    out["cycle_cpu_ms"] = round(NEW_MODEL_SHARE * reads + out["save_cpu_ms"], 2)
    out["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200, help="requests of each kind (default 200)")
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--models", type=int, default=24)
    ap.add_argument("--py-spy", metavar="PATH", help="py-spy binary: sample the save phase")
    ap.add_argument("--top", type=int, default=40, help="functions listed from the py-spy samples")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample"
        generate_sample_dataset(sample, shapes_per_category=args.models, categories=["mug"])
        for kind in args.db:
            pg = start_temp_postgres() if kind == "postgresql" else None
            try:
                url = pg.new_database() if pg else f"sqlite:///{tmp}/cpu.db"
                print(json.dumps(measure(kind, url, sample, args.repeat, args.py_spy, args.top)), flush=True)
            finally:
                if pg:
                    pg.stop()


if __name__ == "__main__":
    main()
