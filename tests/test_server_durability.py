"""Durability: a real ``kpengine serve`` process is SIGKILLed while annotators are saving;
after a restart every acknowledged save is there (on SQLite and PostgreSQL), and concurrent
annotators never overwrite each other."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from kpengine.io.annotations import load_annotations
from kpengine.io.layout import mesh_path
from kpengine.io.mesh import load_mesh
from kpengine.server.process import free_port, start_serve_process
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.repo import create_annotator, get_model, raw_keypoints
from kpengine.store.schema import Annotator
from test_store_support import db_url, postgres_server  # noqa: F401 - fixtures

MUG = "03797390"
N_ANNOTATORS = 8


def test_kill_mid_request_loses_nothing_acknowledged(db_url: str, sample_root: Path) -> None:  # noqa: F811
    store = open_store(db_url)
    with store.session() as s:
        import_dataset(s, sample_root, ["mug"])
        tokens = {f"a{i}": create_annotator(s, f"a{i}")[1] for i in range(N_ANNOTATORS)}
    anns, _ = load_annotations(sample_root / "annotations" / "mug.json")
    models = [a.model_id for a in anns[:3]]
    surfaces = {m: load_mesh(mesh_path(sample_root, MUG, m)).vertices for m in models}
    port = free_port()
    proc = start_serve_process(db_url, port)
    acked: dict[tuple[str, str], dict] = {}
    stop = threading.Event()

    def annotate(name: str, token: str) -> None:
        rng = np.random.default_rng(abs(hash(name)) % 2**32)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
            while not stop.is_set():
                mid = models[int(rng.integers(len(models)))]
                verts = surfaces[mid]
                n = int(rng.integers(1, 25))
                body = {
                    "keypoints": [{"index": i, "xyz": verts[int(rng.integers(len(verts)))].tolist()} for i in range(n)]
                }
                try:
                    r = client.put(f"/api/annotations/mug/{mid}", json=body)
                except httpx.HTTPError:
                    return  # the server died under us: this save was never acknowledged
                assert r.status_code == 200, r.text
                acked[(name, mid)] = r.json()

    threads = [threading.Thread(target=annotate, args=item) for item in tokens.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60  # kill once every annotator has had saves acknowledged (slow on busy machines)
    while time.monotonic() < deadline and len({name for name, _ in acked}) < N_ANNOTATORS:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # mid-request: several saves are in flight
    proc.wait()
    stop.set()
    for t in threads:
        t.join(15)
    assert len(acked) >= N_ANNOTATORS

    proc = start_serve_process(db_url, port)  # the restart runs recovery (WAL replay) and must keep everything
    try:
        for (name, mid), ack in acked.items():
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/annotations/mug/{mid}",
                headers={"Authorization": f"Bearer {tokens[name]}"},
            )
            stored = r.json()
            # the last acknowledged save is there, or one later save that committed but whose reply was cut off
            assert stored["revision"] in (ack["revision"], ack["revision"] + 1), (name, mid)
            if stored["revision"] == ack["revision"]:
                assert stored["keypoints"] == ack["keypoints"], (name, mid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    with store.session() as s:  # nobody's set holds another annotator's clicks
        for name, mid in acked:
            annotator = s.query(Annotator).filter_by(name=name).one()
            _, rows = raw_keypoints(s, get_model(s, "mug", mid), annotator)
            assert all(r.annotator_id == annotator.id for r in rows)
    store.dispose()
