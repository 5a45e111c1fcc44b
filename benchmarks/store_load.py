"""Load tests of the annotation server on loopback, for SQLite and PostgreSQL.

Two kinds of load, both through a real ``kpengine serve`` process (``--workers N`` uvicorn
workers) on sample mugs, sending ``base_revision`` like the web page does:

* **annotators** (``--think LOW HIGH``): N virtual people each ask for their next model,
  fetch it as the annotation page does (model info, ``mesh.glb``, their keypoints on it),
  spend a think time on it (seeded log-normal, median
  ``sqrt(LOW*HIGH)``, clipped to [LOW, HIGH] seconds), save 3-15 clicks, and revise the same
  model one time in three. Start times are spread over the first think time, as people
  do not all arrive in the same second. This is the load the server is for.
* **tight loop** (no ``--think``): N clients save 1-24 clicks back to back: the saturation
  throughput of the machine, for the curve of saves/s against workers.

Afterwards every acknowledged save is checked against the database: the stored revision and
keypoints of each (annotator, model) must be those of the last acknowledgement (zero lost or
mixed-up writes). Prints one JSON line per run with p50/p99 save latency, throughput and the
load average. Bounded: ``--seconds`` per run, loopback only.

    nice .venv/bin/python benchmarks/store_load.py --annotators 200 --think 5 30 --seconds 120 --workers 1 2
    nice .venv/bin/python benchmarks/store_load.py --annotators 50 --seconds 15 --workers 1 2 4   # saturation
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from kpengine.data.sample import generate_sample_dataset
from kpengine.io.annotations import load_annotations
from kpengine.io.layout import mesh_path
from kpengine.io.mesh import load_mesh
from kpengine.server.process import free_port, start_serve_process, stop_serve_process
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.pgtemp import start_temp_postgres
from kpengine.store.repo import create_annotator, get_model, raw_keypoints
from kpengine.store.schema import Annotator

MUG = "03797390"


class Tally:
    """What the clients saw: save latencies, other request latencies, errors, acknowledgements."""

    def __init__(self) -> None:
        self.saves: list[float] = []
        self.reads: list[float] = []
        self.errors: list[str] = []
        self.acked: dict[tuple[str, str], dict] = {}


async def _save(client, mid, verts, rng, n, revision, token, tally) -> None:  # noqa: ANN001
    body = {
        "keypoints": [{"index": i, "xyz": verts[int(rng.integers(len(verts)))].tolist()} for i in range(n)],
        "base_revision": revision.get(mid, 0),
    }
    t0 = time.perf_counter()
    r = await client.put(f"/api/annotations/mug/{mid}", json=body)
    tally.saves.append(time.perf_counter() - t0)
    if r.status_code != 200:
        tally.errors.append(f"{r.status_code} {r.text[:200]}")
        return
    ack = r.json()
    revision[mid] = ack["revision"]
    tally.acked[(token, mid)] = ack


async def _tight(base, token, models, surfaces, seconds, seed, tally) -> None:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    revision: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            mid = models[int(rng.integers(len(models)))]
            await _save(client, mid, surfaces[mid], rng, int(rng.integers(1, 25)), revision, token, tally)


def think_time(rng: np.random.Generator, low: float, high: float) -> float:
    """Seconds spent on a model: log-normal with median sqrt(low*high), clipped to [low, high]."""
    median = math.sqrt(low * high)
    return float(np.clip(rng.lognormal(math.log(median), 0.45), low, high))


async def _person(base, token, surfaces, seconds, seed, think, tally) -> None:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    revision: dict[str, int] = {}
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        await asyncio.sleep(float(rng.uniform(0, think_time(rng, *think))))  # arrivals spread out
        mid = None
        while time.monotonic() < end:
            if mid is None or rng.random() > 1 / 3:  # a new model two times in three
                t0 = time.perf_counter()
                r = await client.get("/api/next", params={"category": "mug"})
                tally.reads.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    tally.errors.append(f"next: {r.status_code} {r.text[:200]}")
                    return
                mid = r.json()["model_id"]
                for path in (f"/api/models/mug/{mid}", f"/api/models/mug/{mid}/mesh.glb"):  # the page's fetches
                    t0 = time.perf_counter()
                    r = await client.get(path)
                    tally.reads.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        tally.errors.append(f"next: {path} {r.status_code}")
                t0 = time.perf_counter()
                r = await client.get(f"/api/annotations/mug/{mid}")
                tally.reads.append(time.perf_counter() - t0)
                revision[mid] = r.json()["revision"]
            wait = think_time(rng, *think)
            if time.monotonic() + wait >= end:  # would save after the end: the run stops here
                break
            await asyncio.sleep(wait)
            await _save(client, mid, surfaces[mid], rng, int(rng.integers(3, 16)), revision, token, tally)


def _check(store, tokens: list[str], acked: dict) -> tuple[int, int]:  # noqa: ANN001
    """(lost, mixed up): acknowledged sets whose stored revision or keypoints differ from the ack."""
    lost = mixed = 0
    names = {t: f"load{i}" for i, t in enumerate(tokens)}
    with store.session() as s:
        people = {a.name: a for a in s.query(Annotator).all()}
        for (token, mid), ack in acked.items():
            rev, rows = raw_keypoints(s, get_model(s, "mug", mid), people[names[token]])
            if rev != ack["revision"]:
                lost += 1
            elif [(r.kp_index, [r.x, r.y, r.z]) for r in rows] != [(k["index"], k["xyz"]) for k in ack["keypoints"]]:
                mixed += 1
    return lost, mixed


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux ``/proc``)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(stat.parent.name)
        parent[p] = int(fields[1])
        ticks[p] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(values) * 1000, q)), 1) if values else None


def run(
    kind: str, url: str, sample: Path, n_annotators: int, seconds: float, workers: int, think: list[float] | None
) -> dict:
    store = open_store(url)
    with store.session() as s:
        import_dataset(s, sample, ["mug"])
        tokens = [create_annotator(s, f"load{i}")[1] for i in range(n_annotators)]
    anns, _ = load_annotations(sample / "annotations" / "mug.json")
    all_models = [a.model_id for a in anns]
    surfaces = {m: load_mesh(mesh_path(sample, MUG, m)).vertices for m in all_models}
    port = free_port()
    proc = start_serve_process(url, port, workers=workers)
    base = f"http://127.0.0.1:{port}"
    tally = Tally()

    async def main() -> float:
        t0 = time.perf_counter()
        if think:
            jobs = [_person(base, t, surfaces, seconds, i, think, tally) for i, t in enumerate(tokens)]
        else:
            jobs = [_tight(base, t, all_models[:6], surfaces, seconds, i, tally) for i, t in enumerate(tokens)]
        await asyncio.gather(*jobs)
        return time.perf_counter() - t0

    load_before = os.getloadavg()
    cpu_before = _tree_cpu_seconds(proc.pid)
    wall = asyncio.run(main())
    server_cpu = _tree_cpu_seconds(proc.pid) - cpu_before
    load_after = os.getloadavg()
    stop_serve_process(proc)
    lost, mixed = _check(store, tokens, tally.acked)
    store.dispose()
    ok = len(tally.saves) - sum(not e.startswith("next:") for e in tally.errors)
    return {
        "database": kind,
        "mode": f"annotators, think {think[0]:g}-{think[1]:g} s" if think else "tight loop",
        "annotators": n_annotators,
        "workers": workers,
        "seconds": round(wall, 2),
        "saves_acknowledged": ok,
        "errors": len(tally.errors),
        "first_errors": tally.errors[:3],
        "throughput_per_s": round(ok / wall, 2),
        "p50_ms": _pct(tally.saves, 50),
        "p99_ms": _pct(tally.saves, 99),
        "max_ms": _pct(tally.saves, 100),
        "reads_p99_ms": _pct(tally.reads, 99),
        # the server's own CPU time (all workers) per acknowledged save, reads included: what
        # the machine's load does not change much, unlike latency
        "server_cpu_ms_per_save": round(1000 * server_cpu / max(ok, 1), 2),
        "server_cpu_share": round(server_cpu / wall, 3),
        "sets_checked": len(tally.acked),
        "lost": lost,
        "mixed_up": mixed,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotators", type=int, nargs="+", default=[50])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="uvicorn workers; one run per value")
    ap.add_argument("--think", type=float, nargs=2, metavar=("LOW", "HIGH"), help="think times (s): annotator mode")
    ap.add_argument("--models", type=int, default=24, help="sample mugs to annotate (annotator mode)")
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = ap.parse_args()
    if args.seconds > 600 or max(args.annotators) > 500:
        ap.error("bounded: at most 600 s per run and 500 annotators")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample"
        generate_sample_dataset(sample, shapes_per_category=max(6, args.models), categories=["mug"])
        for kind in args.db:
            pg = start_temp_postgres(max_connections=400) if kind == "postgresql" else None
            try:
                for n in args.annotators:
                    for workers in args.workers:
                        url = pg.new_database() if pg else f"sqlite:///{tmp}/load-{n}-{workers}.db"
                        result = run(kind, url, sample, n, args.seconds, workers, args.think)
                        print(json.dumps(result), flush=True)
                        failed |= bool(result["lost"] or result["mixed_up"] or result["errors"])
            finally:
                if pg:
                    pg.stop()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
