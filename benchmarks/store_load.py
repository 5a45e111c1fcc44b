"""Load test of the annotation server on loopback, for SQLite and PostgreSQL.

N virtual annotators (default 50) each save and revise keypoint sets on a few sample mugs
for a fixed time through a real ``kpengine serve`` process (one uvicorn worker), sending
``base_revision`` like the web page does. Afterwards every acknowledged save is checked
against the database: the stored revision and keypoints of each (annotator, model) must be
those of the last acknowledgement (zero lost or mixed-up writes). Prints a JSON line per
database with p50/p99 latency, throughput and the load average (2 shared cores here).

    .venv/bin/python benchmarks/store_load.py [--annotators 50] [--seconds 10] [--db sqlite postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from kpengine.server.process import free_port, start_serve_process
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.pgtemp import start_temp_postgres
from kpengine.store.repo import create_annotator, get_model, raw_keypoints
from kpengine.store.schema import Annotator

MUG = "03797390"


async def _annotator(base, token, models, surfaces, seconds, seed, latencies, acked, errors) -> None:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    revision: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            mid = models[int(rng.integers(len(models)))]
            verts = surfaces[mid]
            n = int(rng.integers(1, 25))
            body = {
                "keypoints": [{"index": i, "xyz": verts[int(rng.integers(len(verts)))].tolist()} for i in range(n)],
                "base_revision": revision.get(mid, 0),
            }
            t0 = time.perf_counter()
            r = await client.put(f"/api/annotations/mug/{mid}", json=body)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
                continue
            ack = r.json()
            revision[mid] = ack["revision"]
            acked[(token, mid)] = ack


def run(kind: str, url: str, sample: Path, n_annotators: int, seconds: float) -> dict:
    store = open_store(url)
    with store.session() as s:
        import_dataset(s, sample, ["mug"])
        tokens = [create_annotator(s, f"load{i}")[1] for i in range(n_annotators)]
    anns, _ = load_annotations(sample / "annotations" / "mug.json")
    models = [a.model_id for a in anns[:6]]
    surfaces = {m: load_mesh(mesh_path(sample, MUG, m)).vertices for m in models}
    port = free_port()
    proc = start_serve_process(url, port)
    latencies: list[float] = []
    acked: dict[tuple[str, str], dict] = {}
    errors: list[str] = []

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                _annotator(f"http://127.0.0.1:{port}", t, models, surfaces, seconds, i, latencies, acked, errors)
                for i, t in enumerate(tokens)
            )
        )
        return time.perf_counter() - t0

    load_before = os.getloadavg()
    wall = asyncio.run(main())
    load_after = os.getloadavg()
    proc.terminate()
    proc.wait(30)
    lost = mixed = 0
    by_token = {}
    with store.session() as s:
        for a in s.query(Annotator).all():
            by_token[a.name] = a
        names = {t: f"load{i}" for i, t in enumerate(tokens)}
        for (token, mid), ack in acked.items():
            rev, rows = raw_keypoints(s, get_model(s, "mug", mid), by_token[names[token]])
            if rev != ack["revision"]:
                lost += 1
            elif [(r.kp_index, [r.x, r.y, r.z]) for r in rows] != [(k["index"], k["xyz"]) for k in ack["keypoints"]]:
                mixed += 1
    store.dispose()
    lat = np.array(latencies) * 1000
    return {
        "database": kind,
        "annotators": n_annotators,
        "seconds": round(wall, 2),
        "saves_acknowledged": len(latencies) - len(errors),
        "errors": len(errors),
        "first_errors": errors[:3],
        "throughput_per_s": round((len(latencies) - len(errors)) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "sets_checked": len(acked),
        "lost": lost,
        "mixed_up": mixed,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample"
        generate_sample_dataset(sample, shapes_per_category=6, categories=["mug"])
        for kind in args.db:
            if kind == "sqlite":
                result = run(kind, f"sqlite:///{tmp}/load.db", sample, args.annotators, args.seconds)
            else:
                pg = start_temp_postgres()
                try:
                    result = run(kind, pg.new_database(), sample, args.annotators, args.seconds)
                finally:
                    pg.stop()
            print(json.dumps(result), flush=True)
            if result["lost"] or result["mixed_up"] or result["errors"]:
                sys.exit(1)


if __name__ == "__main__":
    main()
