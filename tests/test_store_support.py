"""Fixtures shared by the store, server and web tests (imported by name; no tests here).

``postgres_server`` starts a throwaway PostgreSQL cluster for the test session
(:mod:`kpengine.store.pgtemp`), so the tests do not depend on a system service. Without
PostgreSQL binaries they skip, or fail when ``CI`` is set (``scripts/setup_system.sh``
installs them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpengine.store.pgtemp import TempPostgres, start_temp_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TempPostgres]:
    try:
        server = start_temp_postgres()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_server").new_database()
