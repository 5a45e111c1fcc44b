"""Engines, sessions and migrations.

SQLite is the embedded default: WAL journal (readers never block the writer), ``synchronous
= FULL`` (a committed transaction survives a killed process and a power cut), foreign keys
on, and every transaction opened with ``BEGIN IMMEDIATE`` so that two writers queue on the
database lock at the start instead of failing with "database is locked" when a read
transaction tries to upgrade. PostgreSQL is used when the URL says so
(``postgresql://...``; the psycopg 3 driver is filled in).

The schema is created and upgraded by the Alembic migrations shipped in
``kpengine/store/migrations`` (never by ``create_all``), so a database made by one version
upgrades in place under the next.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

#: Environment variable naming the database URL when no option is given.
DB_ENV = "KPENGINE_DB"
MIGRATIONS = Path(__file__).with_name("migrations")


def default_url(path: str | Path = "kpengine.db") -> str:
    """``$KPENGINE_DB`` if set, else a SQLite file at ``path``."""
    return os.environ.get(DB_ENV) or f"sqlite:///{Path(path).absolute()}"


def normalise_url(url: str) -> str:
    """Fill in the psycopg 3 driver for bare ``postgresql://`` URLs; paths become sqlite URLs."""
    if "://" not in url:
        return f"sqlite:///{Path(url).absolute()}"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
    dbapi_conn.isolation_level = None  # the "begin" hook below opens transactions itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


#: Execution option of a read-only transaction (:meth:`Store.read`): a plain deferred BEGIN.
READ_ONLY = "kpengine_read_only"


def _sqlite_begin(conn) -> None:  # noqa: ANN001 - SQLAlchemy Connection
    # A reader in WAL mode needs no lock: a deferred BEGIN never waits for the writer (whose
    # commit may be inside an fsync) nor sleeps in SQLite's busy handler.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


#: SQLite errors after which a connection must be reopened: a file SQLite could only open
#: read-only (immutable, read-only mount) stays read-only on that connection even after the
#: fault is repaired; an I/O error leaves the connection's view of the file unknown.
_REOPEN = ("SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_CORRUPT")


def _sqlite_storage_fault(context) -> None:  # noqa: ANN001 - sqlalchemy ExceptionContext
    name = getattr(context.original_exception, "sqlite_errorname", "") or ""
    if name.startswith(_REOPEN):
        context.is_disconnect = True  # the pool drops its connections; the next request reopens the file


def _track_writability(path: str):  # noqa: ANN202 - two pool event hooks
    """Pool hooks that reopen a connection made while the file could not be written once it can.

    A read that opened the file during a fault (it succeeds, read-only) would otherwise stay
    in the pool and fail the first write after the repair. ``os.access`` binds root too for
    immutable files and read-only mounts.
    """

    def on_connect(_dbapi_conn, record) -> None:  # noqa: ANN001
        record.info["read_only_at_open"] = not os.access(path, os.W_OK)

    def on_checkout(_dbapi_conn, record, _proxy) -> None:  # noqa: ANN001
        if record.info.get("read_only_at_open") and os.access(path, os.W_OK):
            raise DisconnectionError("the database file became writable; reconnecting")

    return on_connect, on_checkout


def _create_private(path: Path) -> None:
    """Create a new SQLite file readable by its owner only (0600): it holds every annotator's
    work and the token hashes. SQLite gives the ``-wal`` and ``-shm`` files the database's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass  # an existing database keeps the mode its owner gave it


def make_engine(url: str, *, pool_size: int = 20) -> Engine:
    """An engine for ``url`` with the settings described in the module docstring."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            _create_private(Path(path))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=pool_size)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "handle_error", _sqlite_storage_fault)
        if path and path != ":memory:" and not path.startswith("file:"):
            on_connect, on_checkout = _track_writability(path)
            event.listen(engine, "connect", on_connect)
            event.listen(engine, "checkout", on_checkout)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the shipped Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@dataclass
class Store:
    """An engine and its session factory; ``with store.session() as s`` is one transaction."""

    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on an exception.

        Writers wait for each other in SQLite's busy handler (``BEGIN IMMEDIATE``). A queue
        (a Python lock per process) in front of it was tried for the long tail and dropped:
        on the loaded 2-core machine every hand-off waited for the next writer to be
        scheduled (a lock convoy), 12.1 saves/s against 39.5 without it, same window.
        """
        with self.sessions.begin() as s:
            yield s

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction that only reads. On SQLite it does not take the write lock, so reads
        go on beside a save; on PostgreSQL it is an ordinary transaction. Writing in it is a
        mistake (SQLite may then answer "database is locked")."""
        with self.sessions() as s:  # closing ends the transaction (rolled back: nothing to keep)
            s.connection(execution_options={READ_ONLY: True})
            yield s

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(url: str | None = None, *, migrate: bool = True, pool_size: int = 20) -> Store:
    """Open (and by default create or upgrade) the store at ``url`` (default: :func:`default_url`)."""
    engine = make_engine(url or default_url(), pool_size=pool_size)
    if migrate:
        upgrade(engine)
    return Store(engine, sessionmaker(engine, expire_on_commit=False))
