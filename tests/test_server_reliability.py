"""Reliability at the edges of the server, on SQLite and PostgreSQL (issue 14): NUL bytes,
storage faults told as 503 with a usable connection and an honest health check, deep JSON,
strict types, unreadable meshes, security headers, file mode, failed-token throttling.

Storage faults are made so that they bind root too (tests run as root): ``chattr +i`` (an
immutable file), a size-limited tmpfs filled to the last byte (a full disk), PostgreSQL's
``default_transaction_read_only``. Where the kernel refuses ``chattr`` or ``mount`` the
test skips with the reason, or fails when ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.io.annotations import load_annotations
from kpengine.io.layout import mesh_path
from kpengine.io.mesh import load_mesh
from kpengine.server import ServerConfig, create_app
from kpengine.server.process import serve_in_thread
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.repo import create_annotator
from test_server_api import MUG, _bearer, _kps, served  # noqa: F401 - fixture
from test_store_support import db_url, postgres_server  # noqa: F401 - fixtures


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must be able to make this fault")
    pytest.skip(reason)


# --------------------------------------------------------------------------- 1. NUL bytes


def test_nul_bytes_are_refused_at_the_boundary(served) -> None:  # noqa: F811, ANN001
    c, mid = served.client, served.model_id
    for path in (
        "/api/categories/a%00b/models",
        "/api/models/mug/a%00b",
        f"/api/models/mu%00g/{mid}",
        "/api/models/mug/a%00b/mesh.glb",
        "/api/models/mug/a%00b/points",
    ):
        r = c.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert "NUL" in r.json()["detail"]
    r = c.get("/api/categories/mug/models", params={"split": "te\x00st"})
    assert r.status_code == 422 and "NUL" in r.json()["detail"]
    r = c.get("/api/next", params={"category": "mu\x00g"}, headers=served.alice)
    assert r.status_code == 422
    r = c.put("/api/annotations/mug/a%00b", json=_kps(served.surface[:1]), headers=served.alice)
    assert r.status_code == 404
    r = c.post("/api/admin/invitations", json={"name": "eve\x00"}, headers=served.admin)
    assert r.status_code == 422 and "NUL" in r.text
    r = c.put("/api/admin/verify/mug/labels/0", json={"name": "rim\x00"}, headers=served.admin)
    assert r.status_code == 422 and "NUL" in r.text
    r = c.post(
        "/api/admin/import/mug", json=[{"class_id": MUG, "model_id": "x\x00", "keypoints": []}], headers=served.admin
    )
    assert r.status_code == 422 and "NUL" in r.json()["detail"]
    # nothing was written, and the server still answers normally
    assert [a["name"] for a in c.get("/api/admin/raw", headers=served.admin).json()] == []
    assert c.get("/api/categories").status_code == 200


# --------------------------------------------------------------------------- 3, 4: bodies


def test_deeply_nested_import_is_refused(served) -> None:  # noqa: F811, ANN001
    deep = b"[" * 200_000 + b"]" * 200_000
    r = served.client.post(
        "/api/admin/import/mug", content=deep, headers={**served.admin, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "nested" in r.json()["detail"]
    medium = json.dumps(
        [
            {
                "class_id": MUG,
                "model_id": "m",
                "keypoints": [],
                "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
            }
        ]
    )
    r = served.client.post(
        "/api/admin/import/mug", content=medium, headers={**served.admin, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "nested" in r.json()["detail"]


STRICT = {
    "coordinates as strings": lambda p: {"index": 0, "xyz": [str(v) for v in p]},
    "a boolean coordinate": lambda p: {"index": 0, "xyz": [True, *p[1:]]},
    "index true": lambda p: {"index": True, "xyz": p},
    "index as a string": lambda p: {"index": "0", "xyz": p},
    "index as a float": lambda p: {"index": 0.0, "xyz": p},
}


@pytest.mark.parametrize("case", STRICT)
def test_types_are_strict(served, case: str) -> None:  # noqa: F811, ANN001
    url = f"/api/annotations/mug/{served.model_id}"
    r = served.client.put(url, json={"keypoints": [STRICT[case](served.surface[0])]}, headers=served.alice)
    assert r.status_code == 422, r.text
    assert served.client.get(url, headers=served.alice).json()["revision"] == 0
    r = served.client.put(url, json={"keypoints": [], "base_revision": True}, headers=served.alice)
    assert r.status_code == 422


# --------------------------------------------------------------------------- 5. unreadable mesh


def test_truncated_mesh_is_reported_at_import_and_by_the_api(db_url: str, sample_root: Path, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "data"
    shutil.copytree(sample_root, root)
    anns, _ = load_annotations(root / "annotations" / "mug.json")
    broken = anns[1].model_id
    obj = mesh_path(root, MUG, broken)
    glb = load_mesh(obj).to_trimesh().export(file_type="glb")
    shutil.rmtree(obj.parents[1])  # meshes/<synset>/<id>/models/model_normalized.obj -> flat <id>.glb
    (root / "meshes" / MUG / f"{broken}.glb").write_bytes(glb[: len(glb) - 2])
    store = open_store(db_url)
    try:
        with store.session() as s:
            summary = import_dataset(s, root, ["mug"], labels=KEYPOINT_NAMES)
        assert [p.model_id for p in summary.problems] == [broken]
        assert "truncated" in summary.problems[0].reason
        c = TestClient(create_app(ServerConfig(store=store)))
        for fmt in ("glb", "ply"):
            r = c.get(f"/api/models/mug/{broken}/mesh.{fmt}")
            assert r.status_code == 409, r.text
            assert "truncated" in r.json()["detail"] and broken in r.json()["detail"]
        assert c.get(f"/api/models/mug/{anns[0].model_id}/mesh.glb").status_code == 200
        c.close()
    finally:
        store.dispose()


# --------------------------------------------------------------------------- 6. hardening


def test_security_headers_on_every_answer(served) -> None:  # noqa: F811, ANN001
    for r in (
        served.client.get("/api/health"),
        served.client.get("/api/models/mug/nope"),
        served.client.get("/api/categories/a%00b/models"),
        served.client.get("/api/me"),
        served.client.get("/"),
    ):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = open_store(f"sqlite:///{tmp_path / 'new' / 'store.db'}")
        with store.session() as s:
            create_annotator(s, "x")
        store.dispose()
    finally:
        os.umask(old)
    for f in (tmp_path / "new").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_repeated_unknown_tokens_are_throttled(served) -> None:  # noqa: F811, ANN001
    c = served.client
    codes = [c.get("/api/me", headers={"Authorization": f"Bearer guess{i}"}).status_code for i in range(25)]
    assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}
    r = c.get("/api/me", headers=served.alice)  # while throttled, even a good token waits: no oracle
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # another client address is not affected
    other = TestClient(c.app, client=("10.0.0.2", 1234))
    assert other.get("/api/me", headers=served.alice).status_code == 200


# --------------------------------------------------------------------------- 2. storage faults


@contextmanager
def _live(store) -> Iterator[tuple[httpx.Client, object]]:  # noqa: ANN001
    """A real uvicorn server (keep-alive matters here) and one persistent HTTP client."""
    app = create_app(ServerConfig(store=store))
    app.state.write_probe.interval = 0.0
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client, app


def _populated(url: str, sample_root: Path):  # noqa: ANN202
    store = open_store(url)
    with store.session() as s:
        import_dataset(s, sample_root, ["mug"])
        token = create_annotator(s, "alice")[1]
    anns, _ = load_annotations(sample_root / "annotations" / "mug.json")
    mid = anns[0].model_id
    surface = load_mesh(mesh_path(sample_root, MUG, mid)).vertices[::7][:5].tolist()
    return store, {"Authorization": f"Bearer {token}"}, mid, surface


def _assert_fault_told(client: httpx.Client, alice: dict, mid: str, surface: list, words: str) -> None:
    url = f"/api/annotations/mug/{mid}"
    connections: list = []
    client.event_hooks["request"] = [lambda req: connections.append(req.extensions)]
    r = client.put(url, json=_kps(surface[:3]), headers=alice)
    assert r.status_code == 503, r.text
    assert words in r.json()["detail"] and "nothing was saved" in r.json()["detail"]
    assert r.headers.get("connection", "").lower() != "close"
    h = client.get("/api/health")  # same keep-alive connection: still usable
    assert h.status_code == 503 and h.json()["ok"] is False and words in h.json()["error"]
    assert client.get("/api/categories").status_code == 200  # reads still work


def _chattr(flag: str, *paths: Path) -> None:
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    if done.returncode:
        _unavailable(f"chattr {flag} failed: {done.stderr.strip()}")


def test_immutable_sqlite_file_gives_503_and_honest_health(tmp_path: Path, sample_root: Path) -> None:
    db = tmp_path / "store.db"
    store, alice, mid, surface = _populated(f"sqlite:///{db}", sample_root)
    with _live(store) as (client, _app):
        assert client.get("/api/health").json()["ok"] is True
        assert client.put(f"/api/annotations/mug/{mid}", json=_kps(surface[:1]), headers=alice).status_code == 200
        store.engine.dispose()  # checkpoint the WAL into the file, then freeze everything
        files = [p for p in tmp_path.iterdir() if p.name.startswith("store.db")]
        _chattr("+i", *files)
        try:
            _assert_fault_told(client, alice, mid, surface, "read-only")
        finally:
            _chattr("-i", *files)
        r = client.put(f"/api/annotations/mug/{mid}", json=_kps(surface[:2]), headers=alice)
        assert r.status_code == 200 and r.json()["revision"] == 2, r.text  # the refused save left nothing
        assert client.get("/api/health").json()["ok"] is True
    store.dispose()


def test_server_started_on_read_only_sqlite_says_so(tmp_path: Path, sample_root: Path) -> None:
    db = tmp_path / "store.db"
    store, alice, mid, surface = _populated(f"sqlite:///{db}", sample_root)
    store.dispose()
    ro = open_store(f"sqlite:///file:{db}?mode=ro&uri=true")
    try:
        with _live(ro) as (client, _app):
            h = client.get("/api/health")
            assert h.status_code == 503 and h.json()["writable"] is False and "read-only" in h.json()["error"]
            _assert_fault_told(client, alice, mid, surface, "read-only")
    finally:
        ro.dispose()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode:
        _unavailable(f"cannot mount a small tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write zeros until the file system refuses even one more byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_gives_503_and_honest_health(small_tmpfs: Path, sample_root: Path) -> None:
    store, alice, mid, surface = _populated(f"sqlite:///{small_tmpfs / 'store.db'}", sample_root)
    with _live(store) as (client, _app):
        assert client.put(f"/api/annotations/mug/{mid}", json=_kps(surface[:1]), headers=alice).status_code == 200
        filler = _fill(small_tmpfs)
        try:
            _assert_fault_told(client, alice, mid, surface, "full")
        finally:
            filler.unlink()
        r = client.put(f"/api/annotations/mug/{mid}", json=_kps(surface[:2]), headers=alice)
        assert r.status_code == 200 and r.json()["revision"] == 2
        assert client.get("/api/health").json()["ok"] is True
    store.dispose()


def test_read_only_postgresql_gives_503_and_honest_health(postgres_server, sample_root: Path) -> None:  # noqa: F811, ANN001
    import psycopg

    url = postgres_server.new_database()
    store, alice, mid, surface = _populated(url, sample_root)
    name = url.rsplit("/", 1)[1]
    admin = f"postgresql://kpengine@127.0.0.1:{postgres_server.port}/postgres"
    with _live(store) as (client, _app):
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        store.engine.dispose()  # new connections take the setting
        _assert_fault_told(client, alice, mid, surface, "read-only")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
        store.engine.dispose()
        r = client.put(f"/api/annotations/mug/{mid}", json=_kps(surface[:2]), headers=alice)
        assert r.status_code == 200 and r.json()["revision"] == 1
        assert client.get("/api/health").json()["ok"] is True
    store.dispose()


@pytest.fixture
def postgres_on_small_disk(postgres_server) -> Iterator[str]:  # noqa: F811, ANN001
    """A fresh PostgreSQL database whose tables live in a tablespace on a 4 MB tmpfs.

    The write-ahead log stays in the cluster's own folder, so a full tablespace is what a
    full data disk looks like to a save (``could not extend file``, SQLSTATE 53100) without
    the WAL PANIC that would take the whole test server down. The folder is made in /tmp
    (the PostgreSQL user must reach it; pytest's tmp_path is root's only)."""
    import pwd
    import tempfile

    import psycopg

    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    base = Path(tempfile.mkdtemp(prefix="kpengine-tablespace-"))
    base.chmod(0o755)
    mount = base / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=4m,uid={owner.pw_uid},gid={owner.pw_gid},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        shutil.rmtree(base, ignore_errors=True)
        _unavailable(f"cannot mount a small tmpfs: {done.stderr.strip()}")
    admin = f"postgresql://kpengine@127.0.0.1:{postgres_server.port}/postgres"
    url = postgres_server.new_database()
    name, space = url.rsplit("/", 1)[1], f"small_{base.name[-8:].replace('-', '_').lower()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE \"{space}\" LOCATION '{mount}'")
        conn.execute(f'ALTER DATABASE "{name}" SET default_tablespace = "{space}"')  # kpengine's tables go there
    try:
        yield url, mount
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'DROP TABLESPACE IF EXISTS "{space}"')
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_full_disk_on_postgresql_gives_503_and_honest_health(postgres_on_small_disk, sample_root: Path) -> None:  # noqa: ANN001
    """Saves on a full PostgreSQL tablespace: 503 saying the disk is full and nothing was saved,
    the same connection still usable, health not ok, reads fine; once space is freed the same
    save gets revision 1 (the refused one left nothing). The first save of any annotator needs
    new pages in empty tables, which a full disk refuses, while the health probe's in-place
    update still fits: health must remember the save's fault."""
    import psycopg

    url, mount = postgres_on_small_disk
    store, alice, mid, surface = _populated(url, sample_root)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:  # the tables really are on the small disk
        where = conn.execute("SELECT spcname FROM pg_tables JOIN pg_tablespace t ON t.spcname = tablespace "
                             "WHERE tablename = 'raw_annotations'").fetchone()  # fmt: skip
        assert where is not None, "raw_annotations is not in the small tablespace"
    with _live(store) as (client, _app):
        assert client.get("/api/health").json()["ok"] is True
        filler = _fill(mount)
        try:
            _assert_fault_told(client, alice, mid, surface, "full")
            error = client.get("/api/health").json()["error"]
            assert "No space left on device" in error, error  # the driver's own line comes along
        finally:
            filler.unlink()
        r = client.put(f"/api/annotations/mug/{mid}", json=_kps(surface[:2]), headers=alice)
        assert r.status_code == 200 and r.json()["revision"] == 1, r.text
        assert client.get("/api/health").json()["ok"] is True
    store.dispose()


# --------------------------------------------------------------------------- 7. several workers


def test_an_annotators_page_reads_cost_one_query_per_table_once_warm(served, monkeypatch) -> None:  # noqa: F811, ANN001
    """Item 7, the server's CPU per annotator cycle: with a known token and a warm model, the
    page's reads run only their own queries. Counted by hand: own keypoints = the model with
    its category (one join), the revision, the rows (3); model info = the model with its
    category, the labels, the aggregated keypoints (3); next = the category, the model (2).
    Before, each also looked the token up in a transaction of its own and lazily loaded the
    category (5, 4 and 3), and every read re-ran the surface search that warms the geometry."""
    import trimesh
    from sqlalchemy import event

    c, mid = served.client, served.model_id
    statements: list[str] = []
    event.listen(c.app.state.store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    searches = []
    real = trimesh.proximity.closest_point
    monkeypatch.setattr(trimesh.proximity, "closest_point", lambda *a, **k: searches.append(1) or real(*a, **k))
    expected = {f"/api/annotations/mug/{mid}": 3, f"/api/models/mug/{mid}": 3, "/api/next?category=mug": 2}
    for path, n in expected.items():
        assert c.get(path, headers=served.alice).status_code == 200  # first: token looked up, geometry warmed
        statements.clear()
        searches.clear()
        assert c.get(path, headers=served.alice).status_code == 200
        selects = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
        assert len(selects) == n, (path, selects)
        assert not any("annotators" in q for q in selects)  # the token's annotator is known
        assert searches == [], path  # the warm geometry is not searched again
    assert c.get(f"/api/annotations/mug/{mid}", headers=_bearer("not-a-token")).status_code == 401  # still checked


def test_serve_with_two_workers_keeps_every_save(tmp_path: Path, sample_root: Path) -> None:
    from kpengine.server.process import free_port, start_serve_process, stop_serve_process
    from kpengine.store.repo import get_model, raw_keypoints
    from kpengine.store.schema import Annotator

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store, alice, mid, surface = _populated(url, sample_root)
    port = free_port()
    proc = start_serve_process(url, port, workers=2)
    try:
        acks = []
        for n in range(1, 6):  # a new connection each time: both workers answer some
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                r = client.put(
                    f"/api/annotations/mug/{mid}", json={**_kps(surface[:n]), "base_revision": n - 1}, headers=alice
                )
                assert r.status_code == 200, r.text
                acks.append(r.json())
    finally:
        stop_serve_process(proc)
    with store.session() as s:
        who = s.query(Annotator).filter_by(name="alice").one()
        revision, rows = raw_keypoints(s, get_model(s, "mug", mid), who)
    assert revision == 5 == acks[-1]["revision"]
    assert [(r.kp_index, [r.x, r.y, r.z]) for r in rows] == [(k["index"], k["xyz"]) for k in acks[-1]["keypoints"]]
    store.dispose()
