"""Security: tokens, roles, one annotator never touches another's clicks, and every bad
submission is refused with a clear message and changes nothing."""

from __future__ import annotations

import pytest

from test_server_api import _kps, served  # noqa: F401 - fixture
from test_store_support import db_url, postgres_server  # noqa: F401 - fixtures


def _state(srv, who) -> dict:  # noqa: ANN001
    return srv.client.get(f"/api/annotations/mug/{srv.model_id}", headers=who).json()


def test_missing_and_wrong_tokens_are_refused(served) -> None:  # noqa: F811, ANN001
    c, url = served.client, f"/api/annotations/mug/{served.model_id}"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YTpi"}):
        for r in (c.get(url, headers=headers), c.put(url, json=_kps(served.surface[:1]), headers=headers)):
            assert r.status_code == 401, r.text
            assert "token" in r.json()["detail"]
    assert _state(served, served.alice)["revision"] == 0
    for path in ("/api/admin/raw", "/api/admin/export/mug"):
        assert c.get(path, headers=served.alice).status_code == 403
        assert c.get(path).status_code == 401


def test_annotators_only_see_and_change_their_own(served) -> None:  # noqa: F811, ANN001
    c, url = served.client, f"/api/annotations/mug/{served.model_id}"
    assert c.put(url, json=_kps(served.surface[:4]), headers=served.alice).status_code == 200
    alice_before = _state(served, served.alice)
    assert _state(served, served.bob) == {**alice_before, "revision": 0, "keypoints": []}  # bob sees his own (none)
    assert c.get("/api/annotations", headers=served.bob).json() == []
    assert c.put(url, json=_kps(served.surface[5:6]), headers=served.bob).status_code == 200
    assert c.put(url, json={**_kps(served.surface[6:7]), "base_revision": 0}, headers=served.bob).status_code == 409
    assert _state(served, served.alice) == alice_before
    # there is no way to name another annotator: extra fields are ignored, identity comes from the token
    r = c.put(url, json={**_kps(served.surface[:1]), "annotator": "alice", "annotator_id": 1}, headers=served.bob)
    assert r.status_code == 200
    assert _state(served, served.alice) == alice_before


BAD = {
    "25 points": (lambda s: _kps((s.surface * 2)[:25]), "at most 24 keypoints"),
    "NaN": (lambda s: '{"keypoints": [{"index": 0, "xyz": [NaN, 0, 0]}]}', "finite"),
    "infinity": (lambda s: '{"keypoints": [{"index": 0, "xyz": [1e999, 0, 0]}]}', "finite"),
    "off surface": (
        lambda s: _kps([[s.surface[0][0], s.surface[0][1] + 1.0, s.surface[0][2]]]),
        "from the model surface",
    ),
    "repeated index": (
        lambda s: {"keypoints": [{"index": 1, "xyz": s.surface[0]}, {"index": 1, "xyz": s.surface[1]}]},
        "unique",
    ),
    "index 24": (lambda s: {"keypoints": [{"index": 24, "xyz": s.surface[0]}]}, "less than 24"),
    "two coordinates": (lambda s: {"keypoints": [{"index": 0, "xyz": [0.1, 0.2]}]}, "keypoints.0.xyz"),
    "not json": (lambda s: "{keypoints: oops", "JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_submissions_are_refused_and_change_nothing(served, case: str) -> None:  # noqa: F811, ANN001
    c, url = served.client, f"/api/annotations/mug/{served.model_id}"
    assert c.put(url, json=_kps(served.surface[:2]), headers=served.alice).status_code == 200
    before = _state(served, served.alice)
    make, message = BAD[case]
    body = make(served)
    kwargs = (
        {"content": body, "headers": {**served.alice, "Content-Type": "application/json"}}
        if isinstance(body, str)
        else {"json": body, "headers": served.alice}
    )
    r = c.put(url, **kwargs)
    assert r.status_code == 422, r.text
    assert message.lower() in r.json()["detail"].lower(), r.json()["detail"]
    assert _state(served, served.alice) == before


def test_oversized_bodies_are_refused_before_parsing(served) -> None:  # noqa: F811, ANN001
    c, url = served.client, f"/api/annotations/mug/{served.model_id}"
    before = _state(served, served.alice)
    big = '{"keypoints": [], "pad": "' + "x" * 100_000 + '"}'
    r = c.put(url, content=big, headers={**served.alice, "Content-Type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"keypoints": [], "pad": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    r = c.put(url, content=chunks(), headers={**served.alice, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert _state(served, served.alice) == before


def test_client_cannot_name_files(served) -> None:  # noqa: F811, ANN001
    c = served.client
    for path in ("/api/models/mug/..%2F..%2Fetc%2Fpasswd/mesh.glb", "/api/models/mug/%2Fetc%2Fpasswd/points"):
        assert c.get(path).status_code == 404
    assert c.get("/api/models/mug/x/mesh.obj").status_code == 404
