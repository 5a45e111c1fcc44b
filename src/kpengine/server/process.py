"""Run the server for tests, benchmarks and notebooks: in a thread, or as a real process.

A real ``kpengine serve`` process is what the durability test kills and the load test
measures; a thread is enough where only HTTP behaviour matters (browser tests).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from fastapi import FastAPI


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread; yields the base URL, stops on exit."""
    import uvicorn

    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server thread stopped before serving on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def start_serve_process(db_url: str, port: int, timeout: float = 120.0, workers: int = 1) -> subprocess.Popen:
    """Start ``kpengine serve --db URL --port PORT [--workers N]`` and wait until ``/api/health`` answers.

    The server runs in its own process group, so :func:`stop_serve_process` also stops the
    uvicorn workers it spawned (killing only the parent of ``--workers N`` leaves them
    running), and its stderr goes to a temporary file (a pipe nobody reads can fill up and
    block the server; one the orphaned workers hold open blocks its reader forever).
    """
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpengine.cli.main", "serve", "--db", db_url, "--port", str(port)]
        + (["--workers", str(workers)] if workers > 1 else []),
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    stop_serve_process(proc, signal.SIGKILL)
    log.seek(0)
    raise RuntimeError(f"kpengine serve did not start within {timeout:g} s: {log.read().decode()[-2000:]}")


def stop_serve_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Send ``sig`` to the server's whole process group; SIGKILL what is left after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers still shutting down, or the group's stragglers
    proc.wait(timeout)
