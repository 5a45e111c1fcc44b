"""The photo page in real headless Chromium: the output folder of ``kpengine understand`` (made
by hand from a known render: tests/understand_fixture.py) shown beside the shape; hovering a
pixel marks the 3D point that pixel sees. Screenshots: /tmp/kpengine_photo_*.png."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.io.annotations import load_annotations
from kpengine.server import ServerConfig, create_app
from kpengine.server.pages import web_dist
from kpengine.server.process import serve_in_thread
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from test_web_pages import CHROMIUM, SHOTS, _need, browser  # noqa: F401 - fixture
from understand_fixture import make_understand_output


@pytest.fixture(scope="module")
def site(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    _need(Path(CHROMIUM).is_file() or bool(shutil.which("chromium")), "chromium missing (scripts/setup_system.sh)")
    _need((web_dist() / "assets" / "photo.js").is_file(), "web pages not built (scripts/setup_system.sh)")
    tmp = tmp_path_factory.mktemp("photo")
    store = open_store(f"sqlite:///{tmp / 'store.db'}")
    with store.session() as s:
        import_dataset(s, sample_root, ["mug"], labels=KEYPOINT_NAMES)
    anns, _ = load_annotations(sample_root / "annotations" / "mug.json")
    fixture = make_understand_output(sample_root, anns[0], "mug", tmp / "understood")
    with serve_in_thread(create_app(ServerConfig(store=store))) as url:
        yield {"url": url, "fixture": fixture}
    store.dispose()


def _hover(page, u: float, v: float) -> dict:  # noqa: ANN001
    """Move the pointer to image pixel (u, v) (pixel centres at integers) and read what the page found."""
    box = page.locator("#canvas").bounding_box()
    w, h = page.evaluate("[document.getElementById('canvas').width, document.getElementById('canvas').height]")
    before = page.evaluate("document.body.dataset.hover || ''")
    page.mouse.move(box["x"] + (u + 0.5) / w * box["width"], box["y"] + (v + 0.5) / h * box["height"])
    page.wait_for_function(f"(document.body.dataset.hover || '') !== {json.dumps(before)}", timeout=10000)
    return json.loads(page.evaluate("document.body.dataset.hover"))


def test_photo_page_hover_finds_the_3d_point(site: dict, browser) -> None:  # noqa: ANN001, F811
    fx = site["fixture"]
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"{site['url']}/photo")
    page.set_input_files("#files", [str(p) for p in sorted(fx.out.iterdir())])
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=30000)
    assert page.locator("#keypoints li").count() == len(fx.keypoints)
    assert page.locator("#view .kp-label").count() == len(fx.keypoints)  # the shape's own keypoints
    assert "azimuth 35.0°" in page.inner_text("#pose")

    # hover each visible keypoint's pixel: the page's ray from the fitted camera meets the shape there
    def inside(u: float, v: float) -> bool:  # the pixel and its neighbours see the shape (not its outline)
        i, j = round(v), round(u)
        return bool(fx.render.mask[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].all())

    visible = [(int(s), k["uv"]) for s, k in fx.keypoints.items() if k["visible"] and inside(*k["uv"])]
    assert len(visible) >= 2, fx.keypoints
    pixel = float(np.linalg.norm(fx.camera.t)) / fx.camera.intrinsics.fx  # model units per pixel at the object
    for sid, (u, v) in visible:
        seen = _hover(page, u, v)
        assert seen["xyz"] is not None, (sid, seen)
        assert np.linalg.norm(np.array(seen["xyz"]) - fx.xyz[sid]) < 0.01 + 2 * pixel, (sid, seen)
        i, j = round(seen["v"]), round(seen["u"])
        want = int(fx.semantic[i, j])
        assert seen["semantic_id"] == (want if want >= 0 else None), (sid, seen, want)
        # the 3D point projects back to the hovered pixel (kpengine's camera, independent of the page)
        uv, _ = fx.camera.project(np.array([seen["xyz"]]))
        pu, pv = uv[0]
        assert abs(pu - seen["u"]) < 1.0 and abs(pv - seen["v"]) < 1.0
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "kpengine_photo_hover.png"))

    # a background pixel sees nothing
    bg = np.argwhere(~fx.render.mask)[0]
    assert _hover(page, float(bg[1]), float(bg[0]))["xyz"] is None
    page.click("#from-camera")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "kpengine_photo_from_camera.png"))
    assert not errors, errors
    page.close()
