"""Storage faults told honestly: what the database could not do, and whether it can write now.

A database that cannot write (a read-only or immutable file, a full disk, a read-only
PostgreSQL) raises inside the driver. Left alone that becomes a plain-text 500 and uvicorn
closes the keep-alive connection, so the client's *next* request fails too. Instead the
app answers 503 with what is wrong and that nothing was saved (every route writes in one
transaction, rolled back on the error), and the connection stays usable.

``/api/health`` reports the truth with a write probe (:class:`WriteProbe`): one tiny
committed write, at most every ``interval`` seconds, and the storage fault a request met
less than ``hold`` seconds ago unless a save has succeeded since. The probe alone is not
enough: on PostgreSQL it rewrites a row inside a page the table already has, and a full
tablespace refuses only writes that need a new page (a save on a model nobody annotated
yet), so the probe passes while saves fail. A server started on a read-only database says
so there instead of answering "ok" and failing every save.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from kpengine.store.db import Store

#: (words found in the driver's message or SQLSTATE, what to tell the user)
_KNOWN = (
    (("readonly database", "read-only file system", "25006", "read-only transaction"), "the database is read-only"),
    (("disk is full", "no space left", "53100", "disk full"), "the disk holding the database is full"),
    (("disk i/o error", "input/output error"), "the disk holding the database failed to read or write"),
    (
        ("unable to open database", "permission denied", "operation not permitted"),
        "the database file cannot be opened for writing",
    ),
    (("database is locked",), "the database stayed locked by another writer for too long"),
    (("connection", "server closed", "could not connect", "terminating"), "the database server cannot be reached"),
)


def describe(exc: DBAPIError) -> str:
    """A one-line, user-facing account of a driver error, with the driver's own first line."""
    orig = exc.orig if exc.orig is not None else exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    state = str(getattr(orig, "sqlstate", "") or "")
    haystack = f"{first} {state}".lower()
    what = next((say for words, say in _KNOWN if any(w in haystack for w in words)), "the database failed")
    return f"{what} ({type(orig).__name__}: {first})"


@dataclass
class ProbeResult:
    writable: bool
    error: str | None
    checked_at: float


class WriteProbe:
    """Whether the store can commit a write now: probed at most every ``interval`` seconds.

    The probe rewrites Alembic's one-row version table with its own value and commits, which
    goes through the same journal, file and disk as a save. Requests that hit a storage
    fault report it with :meth:`failed`, and it stays reported for ``hold`` seconds (the
    ``Retry-After`` the client was given) or until a request's write succeeds
    (:meth:`succeeded`), whatever the probe says meanwhile.
    """

    def __init__(self, store: Store, interval: float = 2.0, hold: float = 30.0):
        self.store = store
        self.interval = interval
        self.hold = hold
        self._last: ProbeResult | None = None
        self._fault: tuple[str, float] | None = None  # a request's storage fault, and when
        self._lock = threading.Lock()

    def failed(self, message: str) -> None:
        with self._lock:
            self._fault = (message, time.monotonic())

    def succeeded(self) -> None:
        """A request committed a write: the store writes again."""
        if self._fault is not None:
            with self._lock:
                self._fault = None

    def check(self) -> ProbeResult:
        with self._lock:
            last = self._last
        if last is None or time.monotonic() - last.checked_at >= self.interval:
            last = self._probe()
        if not last.writable:
            return last
        with self._lock:
            fault = self._fault
        age = time.monotonic() - fault[1] if fault else None
        if fault and age is not None and age < self.hold:
            return ProbeResult(False, f"{fault[0]} (a save met this {age:.0f} s ago)", time.monotonic())
        return last

    def _probe(self) -> ProbeResult:
        try:
            with self.store.session() as s:
                s.execute(text("UPDATE alembic_version SET version_num = version_num"))
            result = ProbeResult(True, None, time.monotonic())
        except DBAPIError as exc:
            result = ProbeResult(False, describe(exc), time.monotonic())
        with self._lock:
            self._last = result
        return result
