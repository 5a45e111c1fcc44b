"""Suggested keypoints on the annotation page (issue 16): the route serves a predictions file's
entries for one model as points of its stored cloud; the page draws them faintly and one click
turns a suggestion into a keypoint that is saved where it was suggested. The browser part runs
real headless Chromium like tests/test_web_pages.py (screenshot: /tmp/kpengine_suggestions.png)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.geometry.detectors import farthest_point_keypoints
from kpengine.io.annotations import load_annotations
from kpengine.io.layout import pcd_path
from kpengine.io.pcd import load_pcd
from kpengine.server import ServerConfig, create_app
from kpengine.server.process import serve_in_thread
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.repo import create_annotator
from test_web_pages import SHOTS, _need, browser  # noqa: F401 - the shared Chromium fixture


@pytest.fixture(scope="module")
def suggest_site(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("suggest")
    store = open_store(f"sqlite:///{tmp / 'store.db'}")
    with store.session() as s:
        import_dataset(s, sample_root, ["mug"], labels=KEYPOINT_NAMES)
        _, token = create_annotator(s, "carol")
    anns, _ = load_annotations(sample_root / "annotations" / "mug.json")
    model = anns[0].model_id
    cloud = load_pcd(pcd_path(sample_root, "03797390", model)).points
    idx = farthest_point_keypoints(cloud, 3)  # three far-apart points, in this order
    runs = tmp / "runs"
    (runs / "unsup").mkdir(parents=True)
    (runs / "unsup" / "mug.json").write_text(json.dumps({model: [[int(i), 0.9 - 0.1 * k] for k, i in enumerate(idx)]}))
    (runs / "broken.json").write_text(json.dumps({model: [[len(cloud), 0.5]]}))
    with serve_in_thread(create_app(ServerConfig(store=store, runs_dir=runs))) as url:
        yield {"url": url, "token": token, "model": model, "model2": anns[1].model_id, "xyz": cloud[idx]}
    store.dispose()


def test_the_route_serves_a_file_s_entries_as_cloud_points(suggest_site: dict) -> None:
    base = f"{suggest_site['url']}/api/suggestions/mug"
    got = httpx.get(f"{base}/{suggest_site['model']}", params={"name": "unsup/mug.json"}).json()
    assert [k["index"] for k in got["keypoints"]] == [0, 1, 2]
    np.testing.assert_allclose([k["xyz"] for k in got["keypoints"]], suggest_site["xyz"], atol=1e-6)
    assert [k["score"] for k in got["keypoints"]] == pytest.approx([0.9, 0.8, 0.7])
    # a model the file does not mention: nothing to suggest
    other = httpx.get(f"{base}/{suggest_site['model2']}", params={"name": "unsup/mug.json"}).json()
    assert other["keypoints"] == []
    missing = httpx.get(f"{base}/{suggest_site['model']}", params={"name": "../etc/passwd"})
    assert missing.status_code == 404 and "no predictions file" in missing.json()["detail"]
    bad = httpx.get(f"{base}/{suggest_site['model']}", params={"name": "broken.json"})
    assert bad.status_code == 422 and "out of range" in bad.json()["detail"] and "broken.json" in bad.json()["detail"]
    unknown = httpx.get(f"{base}/nope", params={"name": "unsup/mug.json"})
    assert unknown.status_code == 404


def test_one_click_accepts_a_faint_suggestion(suggest_site: dict, browser) -> None:  # noqa: ANN001, F811
    from kpengine.server.pages import web_dist

    _need((web_dist() / "assets" / "annotate.js").is_file(), "web pages not built (scripts/setup_system.sh)")
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    site = suggest_site
    page.goto(f"{site['url']}/annotate?token={site['token']}&category=mug&model={site['model']}&suggest=unsup/mug.json")
    page.wait_for_function("document.querySelectorAll('#view .kp-label.suggestion').length === 3", timeout=20000)
    assert "3 suggestions" in page.inner_text("#suggest-note")
    assert int(page.inner_text("#count")) == 0  # suggestions are not keypoints until accepted
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "kpengine_suggestions.png"))

    label = page.locator("#view .kp-label.suggestion", has_text="1?")
    box = label.bounding_box()  # centred on its sphere (CSS2D)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("document.getElementById('count').textContent === '1'", timeout=5000)
    # the accepted one is no longer offered (labels are redrawn on the next animation frame)
    page.wait_for_function("document.querySelectorAll('#view .kp-label.suggestion').length === 2", timeout=10000)
    assert page.locator("#keypoints li").first.inner_text().startswith("1:")  # numbered like the suggestion
    page.click("#save")
    page.wait_for_selector("#banner.ok", timeout=10000)
    saved = httpx.get(
        f"{site['url']}/api/annotations/mug/{site['model']}", headers={"Authorization": f"Bearer {site['token']}"}
    ).json()["keypoints"]
    assert [k["index"] for k in saved] == [1]
    # stored where it was suggested (the server puts clicks on the mesh surface, within its tolerance)
    assert np.linalg.norm(np.array(saved[0]["xyz"]) - site["xyz"][1]) < 0.005
    page.screenshot(path=str(SHOTS / "kpengine_suggestions_accepted.png"))
    assert not errors, errors
    page.close()
