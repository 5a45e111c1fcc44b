"""Checks every request passes before any route sees it, and headers every answer carries.

* **NUL bytes**: no name in kpengine contains one, SQLite compares it as an ordinary
  character and PostgreSQL refuses it inside the driver (a 500 with a traceback). A path
  with one cannot name anything (404); a query parameter with one is malformed (422).
  JSON bodies are checked where they are parsed (:func:`check_json`, :data:`Text`).
* **Security headers**: the API and pages are never meant to be framed, sniffed as
  another type, or to leak their URLs (which carry model ids) to other sites.
* **Failed tokens**: a client that keeps sending unknown tokens is guessing; after
  :attr:`TokenThrottle.limit` failures in :attr:`TokenThrottle.window` seconds it gets 429
  until the window has passed, without its tokens being looked up.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from pydantic import AfterValidator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
]

#: The KeypointNet annotation format nests 4 levels deep; anything far deeper is not one.
MAX_JSON_DEPTH = 32


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


#: A string field of a request body: any text but NUL, which no database column stores alike.
Text = Annotated[str, AfterValidator(_no_nul)]


class BadJSON(ValueError):
    """A body that parses as JSON but that no route accepts: too deep, or with NUL in a string."""


def check_json(data: Any, max_depth: int = MAX_JSON_DEPTH) -> Any:  # noqa: ANN401 - any JSON value
    """Walk parsed JSON iteratively; raise :class:`BadJSON` on depth > ``max_depth`` or a NUL in any string."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > max_depth:
            raise BadJSON(f"JSON nested more than {max_depth} levels deep (at {where or 'the top'})")
        if isinstance(value, str):
            if "\x00" in value:
                raise BadJSON(f"a string at {where or 'the top'} contains a NUL character (\\u0000)")
        elif isinstance(value, dict):
            for k, v in value.items():
                if "\x00" in k:
                    raise BadJSON(f"a key at {where or 'the top'} contains a NUL character (\\u0000)")
                stack.append((v, depth + 1, f"{where}.{k}" if where else k))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(value))
    return data


def parse_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:  # noqa: ANN401 - any JSON value
    """``json.loads`` that answers :class:`BadJSON` instead of overflowing the stack on deep nesting."""
    try:
        data = json.loads(body)
    except RecursionError as exc:  # the C scanner recurses once per level
        raise BadJSON(f"JSON nested more than {max_depth} levels deep") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJSON(f"body is not JSON: {exc}") from exc
    return check_json(data, max_depth)


class TokenThrottle:
    """Count failed token checks per client address in a sliding window (thread-safe)."""

    def __init__(self, limit: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: it may try now)."""
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            if len(times) < self.limit:
                if not times:
                    self._failures.pop(client, None)
                return 0
            return max(1, int(times[0] + self.window - now + 0.999))

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            self._recent(client, now).append(now)
            if len(self._failures) > 100_000:  # bound the memory a spray of addresses can take
                self._failures = {c: t for c, t in self._failures.items() if t and t[-1] > now - self.window}


class GuardMiddleware:
    """Refuse NUL bytes in the path (404) and query (422); add :data:`SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in present
                ]
            await send(message)

        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        if "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(raw_path):
            await _answer(headed, 404, "not found: the path contains a NUL byte (%00), which no name here has")
            return
        if b"\x00" in unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" ")):
            await _answer(headed, 422, "a query parameter contains a NUL byte (%00)")
            return
        await self.app(scope, receive, headed)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
