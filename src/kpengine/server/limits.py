"""Request size limits, enforced before a body is parsed.

A pure ASGI middleware rather than a FastAPI dependency, because a dependency runs after
the body has been read into memory; this one refuses on ``Content-Length`` and also counts
the bytes of chunked bodies as they arrive.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Refuse bodies above ``default`` bytes, or above the limit of the first matching path prefix."""

    def __init__(self, app: ASGIApp, default: int, overrides: Sequence[tuple[str, int]] = ()):
        self.app = app
        self.default = default
        self.overrides = list(overrides)

    def limit_for(self, path: str) -> int:
        return next((n for prefix, n in self.overrides if path.startswith(prefix)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(send, limit, int(length))
            return
        seen = 0
        refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # answer now; the app sees a disconnect and its own reply is dropped
                    refused = True
                    await _refuse(send, limit, seen)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded)


async def _refuse(send: Callable, limit: int, size: int) -> None:
    body = json.dumps({"detail": f"request body too large: {size} bytes, the limit here is {limit} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
