"""Who is asking: annotators are identified by a bearer token an admin gave them.

Tokens are random (``secrets.token_urlsafe``); the store keeps only their SHA-256, so a
leaked database does not leak working tokens. Every route that touches raw annotations
takes the annotator from the token, never from the URL or the body, which is what keeps
one annotator from reading or changing another's clicks. A client address that sends
too many unknown tokens is refused for a while (429, :class:`~kpengine.server.guard.TokenThrottle`).
"""

from __future__ import annotations

import threading
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kpengine.store.repo import annotator_by_token, hash_token
from kpengine.store.schema import Annotator

_bearer = HTTPBearer(auto_error=False, description="the token from your invitation (kpengine db invite)")


class AnnotatorCache:
    """Known tokens' annotators for ``ttl`` seconds, so that a request does not open a read
    transaction of its own just to find who is asking (a third of a keypoint read's server CPU).

    Safe to keep for a while: a token is never re-issued or changed, and an annotator's name
    and role do not change; only known tokens are kept (unknown ones go to the throttle), by
    their SHA-256, at most ``capacity`` of them."""

    def __init__(self, ttl: float = 30.0, capacity: int = 10_000):
        self.ttl = ttl
        self.capacity = capacity
        self._items: dict[str, tuple[Annotator, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Annotator | None:
        hit = self._items.get(hash_token(token))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def put(self, token: str, annotator: Annotator) -> None:
        with self._lock:
            if len(self._items) >= self.capacity:
                self._items.clear()
            self._items[hash_token(token)] = (annotator, time.monotonic() + self.ttl)


def current_annotator(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Annotator:
    if credentials is None or not credentials.credentials:
        raise HTTPException(401, "missing token: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    throttle = request.app.state.token_throttle
    client = request.client.host if request.client else "?"
    wait = throttle.retry_after(client)
    if wait:
        raise HTTPException(
            429, f"too many unknown tokens from {client}; try again in {wait} s", {"Retry-After": str(wait)}
        )
    cache: AnnotatorCache = request.app.state.annotators
    annotator = cache.get(credentials.credentials)
    if annotator is not None:
        return annotator
    with request.app.state.store.read() as s:
        annotator = annotator_by_token(s, credentials.credentials)
        if annotator is not None:
            s.expunge(annotator)
            cache.put(credentials.credentials, annotator)
    if annotator is None:
        throttle.failed(client)
        raise HTTPException(401, "unknown token: ask an admin for an invitation", {"WWW-Authenticate": "Bearer"})
    return annotator


def current_admin(annotator: Annotated[Annotator, Depends(current_annotator)]) -> Annotator:
    if annotator.role != "admin":
        raise HTTPException(403, "this needs an admin token")
    return annotator


AnnotatorDep = Annotated[Annotator, Depends(current_annotator)]
AdminDep = Annotated[Annotator, Depends(current_admin)]
