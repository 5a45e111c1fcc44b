"""Durability: a real ``kpengine serve`` process is SIGKILLed while annotators are saving
(at least two saves on the wire); after a restart each annotator's last acknowledged set is
there, or the set whose reply the kill cut off (on SQLite and PostgreSQL), and concurrent
annotators never overwrite each other. Worker threads collect their failures for the main
thread to assert: an assertion inside a thread would only be a warning."""

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


def _same_set(stored: list[dict], sent: list[dict]) -> bool:
    """Clicks on vertices are stored as those vertices (to float precision)."""
    if [k["index"] for k in stored] != [k["index"] for k in sent]:
        return False
    return all(np.allclose(a["xyz"], b["xyz"], atol=1e-9) for a, b in zip(stored, sent))


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
    acked: dict[tuple[str, str], dict] = {}  # the last acknowledged reply per annotator and model
    cut: dict[tuple[str, str], list[dict]] = {}  # a save sent but never answered (the kill)
    failures: list[str] = []  # assertions cannot fail a test from a worker thread: collect them
    in_flight: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def annotate(name: str, token: str) -> None:
        rng = np.random.default_rng(abs(hash(name)) % 2**32)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
            while not stop.is_set():
                mid = models[int(rng.integers(len(models)))]
                verts = surfaces[mid]
                n = int(rng.integers(1, 25))
                sent = [{"index": i, "xyz": verts[int(rng.integers(len(verts)))].tolist()} for i in range(n)]
                with lock:
                    in_flight.add(name)
                try:
                    r = client.put(f"/api/annotations/mug/{mid}", json={"keypoints": sent})
                except httpx.HTTPError:
                    cut[(name, mid)] = sent  # the server died under us: never acknowledged
                    return
                finally:
                    with lock:
                        in_flight.discard(name)
                if r.status_code != 200:
                    failures.append(f"{name} {mid}: {r.status_code} {r.text[:200]}")
                    return
                acked[(name, mid)] = {**r.json(), "sent": sent}

    threads = [threading.Thread(target=annotate, args=item) for item in tokens.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60  # every annotator has had saves acknowledged (slow on busy machines)
    while time.monotonic() < deadline and len({name for name, _ in acked}) < N_ANNOTATORS and not failures:
        time.sleep(0.05)
    while time.monotonic() < deadline + 30 and len(in_flight) < 2 and not failures:
        time.sleep(0.002)  # kill mid-request: at least two saves on the wire
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(15)
    assert not failures, failures
    assert len({name for name, _ in acked}) == N_ANNOTATORS
    assert len(cut) >= 1, "no save was in flight at the kill"

    proc = start_serve_process(db_url, port)  # the restart runs recovery (WAL replay) and must keep everything
    try:
        for key in sorted(set(acked) | set(cut)):
            name, mid = key
            r = httpx.get(
                f"http://127.0.0.1:{port}/api/annotations/mug/{mid}",
                headers={"Authorization": f"Bearer {tokens[name]}"},
            )
            stored = r.json()
            ack = acked.get(key, {"revision": 0, "keypoints": []})
            # the last acknowledged set is there, or the one save that committed but whose reply was cut off
            if key in cut and stored["revision"] == ack["revision"] + 1:
                assert _same_set(stored["keypoints"], cut[key]), (name, mid)
            else:
                assert stored["revision"] == ack["revision"], (name, mid, stored["revision"], ack["revision"])
                assert stored["keypoints"] == ack["keypoints"], (name, mid)
                if ack["revision"]:
                    assert _same_set(stored["keypoints"], ack["sent"]), (name, mid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    with store.session() as s:  # nobody's set holds another annotator's clicks
        for name, mid in acked:
            annotator = s.query(Annotator).filter_by(name=name).one()
            _, rows = raw_keypoints(s, get_model(s, "mug", mid), annotator)
            assert all(r.annotator_id == annotator.id for r in rows)
    store.dispose()
