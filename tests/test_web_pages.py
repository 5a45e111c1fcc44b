"""The web pages in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
an annotator clicks keypoints on a model, saves, reloads and sees them; a save made offline
is sent when the connection returns; the explorer shows a model's aggregated keypoints.
Screenshots go to /tmp/kpengine_*.png."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.io.annotations import load_annotations
from kpengine.server import ServerConfig, create_app
from kpengine.server.pages import web_dist
from kpengine.server.process import serve_in_thread
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from kpengine.store.repo import create_annotator

CHROMIUM = os.environ.get("KPENGINE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("KPENGINE_SCREENSHOTS", "/tmp"))


def _need(condition: bool, message: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def site(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    _need(Path(CHROMIUM).is_file() or bool(shutil.which("chromium")), "chromium missing (scripts/setup_system.sh)")
    _need((web_dist() / "assets" / "annotate.js").is_file(), "web pages not built (scripts/setup_system.sh)")
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('web') / 'store.db'}")
    with store.session() as s:
        import_dataset(s, sample_root, ["mug"], labels=KEYPOINT_NAMES)
        _, token = create_annotator(s, "alice")
        _, token2 = create_annotator(s, "bob")  # the drag test's own annotator: alice's list stays hers
    with serve_in_thread(create_app(ServerConfig(store=store))) as url:
        anns, _ = load_annotations(sample_root / "annotations" / "mug.json")
        yield {
            "url": url,
            "token": token,
            "token2": token2,
            "model": anns[0].model_id,
            "model2": anns[1].model_id,
            "root": sample_root,
            "n_agg": len(anns[0].keypoints),
        }
    store.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"),
            args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"],
        )
        yield b
        b.close()


def _click_on_model(page, n: int) -> int:  # noqa: ANN001
    """Click a spiral of canvas points around the centre until n keypoints are placed.

    The count is read from the side panel, which the page updates synchronously on each
    click (labels are drawn on the next animation frame, late on a loaded machine)."""
    canvas = page.locator("#view canvas").first
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    placed = lambda: int(page.inner_text("#count"))  # noqa: E731
    for i in range(60):
        if placed() >= n:
            break
        r = 12 + 6 * i
        angle = i * 2.4
        page.mouse.click(cx + r * math.cos(angle), cy + r * math.sin(angle))
    return placed()


def test_drag_a_keypoint_along_the_surface(site: dict, browser) -> None:  # noqa: ANN001
    """Select a saved keypoint, drag it to another spot on the model, save, reload: the moved
    point is stored and is a point of the mesh's surface (the barycentric combination of its
    triangle's corners), the other keypoints stay where they were."""
    import httpx
    import numpy as np

    from kpengine.io.layout import mesh_path
    from kpengine.io.mesh import load_mesh

    page = browser.new_page(viewport={"width": 1366, "height": 768})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{site['url']}/annotate?token={site['token2']}&category=mug&model={site['model2']}")
    page.wait_for_function("document.getElementById('status').textContent.length > 0", timeout=20000)
    page.wait_for_timeout(500)
    assert _click_on_model(page, 3) == 3
    page.click("#save")
    page.wait_for_selector("#banner.ok", timeout=10000)
    api = f"{site['url']}/api/annotations/mug/{site['model2']}"
    headers = {"Authorization": f"Bearer {site['token2']}"}
    before = {k["index"]: k for k in httpx.get(api, headers=headers).json()["keypoints"]}

    page.locator("#keypoints li").nth(0).click()  # select keypoint 0, then drag it 40 px left, 20 down
    page.wait_for_selector("#view .kp-label.selected", timeout=5000)
    box = page.locator("#view .kp-label.selected").bounding_box()  # centred on the marker (CSS2D)
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    for s in range(1, 21):  # small steps: the marker follows the pointer and stays under it
        page.mouse.move(x0 - 2 * s, y0 + s)
        page.wait_for_timeout(20)
    page.mouse.up()
    page.click("#save")
    page.wait_for_function("document.getElementById('banner').className.includes('ok')", timeout=10000)
    page.reload()
    page.wait_for_function("document.querySelectorAll('#view .kp-label').length === 3", timeout=20000)
    assert "revision 2" in page.inner_text("#status")

    after = {k["index"]: k for k in httpx.get(api, headers=headers).json()["keypoints"]}
    assert sorted(after) == [0, 1, 2]
    moved = np.array(after[0]["xyz"])
    assert np.linalg.norm(moved - before[0]["xyz"]) > 0.02, "keypoint 0 did not move"
    for k in (1, 2):
        np.testing.assert_allclose(after[k]["xyz"], before[k]["xyz"], atol=1e-12)
    mesh = load_mesh(mesh_path(site["root"], "03797390", site["model2"]))
    corners = mesh.vertices[mesh.faces[after[0]["face_index"]]]
    np.testing.assert_allclose(np.array(after[0]["barycentric"]) @ corners, moved, atol=1e-6)
    page.screenshot(path=str(SHOTS / "kpengine_annotate_dragged.png"))
    assert not errors, errors
    page.close()


def test_annotate_save_reload_and_offline(site: dict, browser) -> None:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{site['url']}/annotate?token={site['token']}&category=mug&model={site['model']}")
    page.wait_for_function("document.getElementById('status').textContent.length > 0", timeout=20000)
    page.wait_for_timeout(500)
    placed = _click_on_model(page, 4)
    assert placed == 4, f"placed {placed} keypoints"
    page.wait_for_function("document.querySelectorAll('#view .kp-label').length === 4", timeout=10000)
    assert sorted(page.locator("#view .kp-label").all_inner_texts()) == ["0", "1", "2", "3"]
    page.click("#save")
    page.wait_for_selector("#banner.ok", timeout=10000)
    assert "Saved 4 keypoints" in page.inner_text("#banner")
    page.screenshot(path=str(SHOTS / "kpengine_annotate.png"))

    page.reload()
    page.wait_for_function("document.querySelectorAll('#view .kp-label').length === 4", timeout=20000)
    assert "revision 1" in page.inner_text("#status")
    assert page.locator("#done li").count() == 1
    page.wait_for_function("document.getElementById('progress').textContent.length > 0", timeout=10000)
    assert page.inner_text("#progress") == "You have annotated 1 model: mug 1/12"  # the annotator's own progress
    assert "Ctrl+S" in (page.text_content("#shortcuts") or "")

    # select keypoint 3 in the list, delete it, undo the delete: still 4
    page.locator("#keypoints li").nth(3).click()
    page.click("#delete")
    page.wait_for_function("document.querySelectorAll('#view .kp-label').length === 3", timeout=5000)
    page.click("#undo")
    page.wait_for_function("document.querySelectorAll('#view .kp-label').length === 4", timeout=5000)

    context.set_offline(True)
    assert _click_on_model(page, 5) == 5
    page.click("#save")
    page.wait_for_selector("#banner.warn", timeout=10000)
    assert "kept in this browser" in page.inner_text("#banner")
    context.set_offline(False)
    page.wait_for_selector("#banner.ok", timeout=15000)
    page.reload()
    page.wait_for_function("document.querySelectorAll('#view .kp-label').length === 5", timeout=20000)
    assert "revision 2" in page.inner_text("#status")
    page.screenshot(path=str(SHOTS / "kpengine_annotate_reloaded.png"))
    assert not errors, errors
    context.close()


def test_server_errors_are_shown(site: dict, browser) -> None:  # noqa: ANN001
    page = browser.new_page()
    page.goto(f"{site['url']}/annotate?token=wrong-token")
    page.wait_for_selector("#banner.error", timeout=15000)
    assert "unknown token" in page.inner_text("#banner")
    page.close()


def test_explorer_shows_aggregated_keypoints(site: dict, browser) -> None:  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(f"{site['url']}/explore?category=mug&model={site['model']}")
    page.wait_for_function(f"document.querySelectorAll('#view .kp-label').length === {site['n_agg']}", timeout=20000)
    legend = page.locator("#legend li").all_inner_texts()
    assert any(KEYPOINT_NAMES["mug"][0] in t for t in legend), legend
    page.select_option("#split", "test")
    page.wait_for_function("document.getElementById('n-models').textContent !== '12'", timeout=10000)
    assert 0 < int(page.inner_text("#n-models")) < 12
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "kpengine_explore.png"))
    page.close()
