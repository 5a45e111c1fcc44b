"""A throwaway PostgreSQL cluster for tests and benchmarks (``initdb`` + ``pg_ctl``).

Tests and the load benchmark need a real PostgreSQL without depending on a system service
or its configuration. Root cannot run PostgreSQL, so as root the cluster is created and run
as the ``postgres`` user (``runuser``) in a fresh temporary folder it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path


def pg_binary(name: str) -> str | None:
    """The newest ``/usr/lib/postgresql/*/bin/<name>`` (Debian), else one on PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TempPostgres:
    """A running cluster; ``url`` is its maintenance database. Call :meth:`stop` when done."""

    base: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://kpengine@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        name = f"db_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"postgresql://kpengine@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://kpengine@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        pg_ctl = pg_binary("pg_ctl")
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(self.base / "data"), "-m", "immediate", "stop"]), capture_output=True
        )  # type: ignore[list-item]
        shutil.rmtree(self.base, ignore_errors=True)


def start_temp_postgres(max_connections: int = 200) -> TempPostgres:
    """initdb into a new temporary folder and start the server on a free loopback port.

    Raises ``FileNotFoundError`` when the PostgreSQL binaries are not installed.
    """
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found; run scripts/setup_system.sh")
    base = Path(tempfile.mkdtemp(prefix="kpengine-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = _free_port()

    def run(cmd: list[str]) -> None:
        done = subprocess.run(_as_postgres(cmd), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.stdout.strip()}")

    run([initdb, "-D", str(base / "data"), "-U", "kpengine", "--auth=trust", "-E", "UTF8", "--no-sync"])
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c max_connections={max_connections}"
    run([pg_ctl, "-D", str(base / "data"), "-o", opts, "-l", str(base / "log"), "-w", "start"])
    return TempPostgres(base, port)
