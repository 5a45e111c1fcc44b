"""The explorer in real headless Chromium on real KeypointNet data (airplane, chair, bathtub):
it opens on a model that has geometry, shows a model without geometry as its keypoints alone,
searches, highlights, draws a textured mesh, keeps the view in the URL, and scores the
template baseline's predictions model by model. Screenshots: /tmp/kpengine_explore_*.png."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from kpengine.data import KeypointNetDataset
from kpengine.io.annotations import load_annotations
from kpengine.metrics.evaluate import evaluate_file
from kpengine.server import ServerConfig, create_app
from kpengine.server.pages import web_dist
from kpengine.server.process import serve_in_thread
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from test_web_pages import CHROMIUM, SHOTS, _need, browser  # noqa: F401 - fixture

pytestmark = pytest.mark.realdata
TEXTURED_CHAIR = "88382b877be91b2a572f8e1c1caad99e"  # the one chair with texture images


@pytest.fixture(scope="module")
def site(keypointnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    _need(Path(CHROMIUM).is_file() or bool(shutil.which("chromium")), "chromium missing (scripts/setup_system.sh)")
    _need((web_dist() / "assets" / "explore.js").is_file(), "web pages not built (scripts/setup_system.sh)")
    tmp = tmp_path_factory.mktemp("explore_web")
    store = open_store(f"sqlite:///{tmp / 'store.db'}")
    with store.session() as s:
        import_dataset(s, keypointnet, ["airplane", "chair", "bathtub"])
    from kpengine.learn.template import MeanPositionTemplate

    template = MeanPositionTemplate.fit(KeypointNetDataset(keypointnet, "bathtub", "train"))
    target = KeypointNetDataset(keypointnet, "bathtub", "test")
    preds = tmp / "template_bathtub_test.json"
    preds.write_text(
        json.dumps({s.model_id: {str(k): v for k, v in template.predict_correspondence(s).items()} for s in target})
    )
    pck = evaluate_file(keypointnet, "bathtub", "test", "correspondence", preds).metrics["pck"]
    with serve_in_thread(create_app(ServerConfig(store=store, runs_dir=tmp))) as url:
        yield {"url": url, "predictions": preds, "pck": pck, "n_test": len(target)}
    store.dispose()


def _geometry(root: Path, synset: str, model_id: str) -> bool:
    return (root / "pcds" / synset / f"{model_id}.pcd").is_file() or (
        root / "meshes" / synset / model_id / "models" / "model_normalized.obj"
    ).is_file()


def _shown(page, model: str | None = None, timeout: int = 30000) -> str:  # noqa: ANN001
    cond = f"document.body.dataset.shown === {json.dumps(model)}" if model else "!!document.body.dataset.shown"
    page.wait_for_function(cond, timeout=timeout)
    page.wait_for_timeout(400)  # a frame or two for the canvas and labels
    return page.evaluate("document.body.dataset.shown")


def test_explorer_on_real_data(site: dict, browser, keypointnet: Path) -> None:  # noqa: ANN001, F811
    page = browser.new_page(viewport={"width": 1400, "height": 850})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)  # favicon too
    anns, _ = load_annotations(keypointnet / "annotations" / "airplane.json")
    with_geo = [a.model_id for a in anns if _geometry(keypointnet, a.class_id, a.model_id)]
    assert anns[0].model_id not in with_geo  # the case that showed an empty view

    # 1. opens on an airplane that has geometry; the legend counts models per semantic id
    page.goto(f"{site['url']}/explore?category=airplane")
    first = _shown(page)
    assert first in with_geo and page.evaluate("document.body.dataset.display") in ("mesh", "cloud")
    assert int(page.inner_text("#n-models")) == len(with_geo)
    assert page.locator("#banner.error").count() == 0
    counts = Counter(sid for a in anns for sid in set(a.semantic_ids))
    legend = {int(li.get_attribute("data-id")): li.inner_text() for li in page.locator("#legend li").all()}
    assert legend.keys() == counts.keys()
    assert all(f"{counts[sid]} models" in text for sid, text in legend.items())
    page.screenshot(path=str(SHOTS / "kpengine_explore_airplane.png"))
    shown = next(a for a in anns if a.model_id == first)
    drawn = json.loads(page.evaluate("document.body.dataset.symmetry"))
    assert drawn["pairs"] == len(shown.symmetries.reflection)
    assert drawn["polygons"] == sum(len(g.kp_indexes) > 1 for g in shown.symmetries.rotation)

    # 2. a model without geometry, found by id prefix: its keypoints alone, labelled, with a note
    page.select_option("#geo", "")
    bare = anns[0]
    prefix = bare.model_id[:5]
    page.fill("#search", prefix)
    page.wait_for_function(
        f"document.getElementById('n-models').textContent === '{sum(a.model_id.startswith(prefix) for a in anns)}'"
    )
    _shown(page, bare.model_id)
    assert page.evaluate("document.body.dataset.display") == "keypoints"
    assert "No geometry" in page.inner_text("#note")
    # CSS2D labels enter the DOM on the view's next frame, which may come after "shown" under load
    page.wait_for_function(
        f"document.querySelectorAll('#view .kp-label').length === {len(bare.keypoints)}", timeout=10000
    )
    page.screenshot(path=str(SHOTS / "kpengine_explore_constellation.png"))

    # 3. a highlighted id marks exactly the listed models that carry it; the link reopens the view
    page.fill("#search", "")
    page.wait_for_function(f"document.getElementById('n-models').textContent === '{len(anns)}'")
    page.locator("#legend li[data-id='9']").click()
    assert page.locator("#models li.marked").count() == sum(9 in a.semantic_ids for a in anns)
    page.keyboard.press("j")
    moved = _shown(page)
    assert moved != bare.model_id
    page.mouse.move(900, 450)
    page.mouse.down()
    page.mouse.move(960, 430, steps=4)
    page.mouse.up()
    page.wait_for_timeout(200)
    link = page.url
    query = parse_qs(urlparse(link).query)
    assert query["category"] == ["airplane"] and query["model"] == [moved] and query["hl"] == ["9"]
    again = browser.new_page(viewport={"width": 1400, "height": 850})
    again.goto(link)
    assert _shown(again) == moved
    assert again.locator("#legend li.active").all_inner_texts()[0].startswith("9")
    cam = lambda p: p.evaluate("new URLSearchParams(location.search).get('cam')")  # noqa: E731
    np.testing.assert_allclose(
        [float(v) for v in cam(again).split(",")], [float(v) for v in query["cam"][0].split(",")], atol=2e-3
    )
    again.close()

    # 4. the textured chair as a mesh with its textures, and as its cloud
    page.goto(f"{site['url']}/explore?category=chair&model={TEXTURED_CHAIR}")
    _shown(page, TEXTURED_CHAIR)
    assert page.evaluate("document.body.dataset.display") == "mesh"
    page.keyboard.press("y")  # symmetries off, then on again
    assert json.loads(page.evaluate("document.body.dataset.symmetry")) == {"pairs": 0, "polygons": 0, "circles": 0}
    page.keyboard.press("y")
    shot = SHOTS / "kpengine_explore_chair_mesh.png"
    page.screenshot(path=str(shot))
    # wood: some pixels of the view are brown (red clearly above blue), which untextured grey never is
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))[100:800, 300:1400].reshape(-1, 3).astype(int)
    assert np.count_nonzero((pixels[:, 0] - pixels[:, 2] > 60) & (pixels[:, 0] > 120)) > 2000
    if (keypointnet / "pcds" / "03001627" / f"{TEXTURED_CHAIR}.pcd").is_file():
        page.keyboard.press("m")
        page.wait_for_function("document.body.dataset.display === 'cloud'")

    # 5. the template baseline's predictions: scored per model, worst first, same PCK as evaluate
    page.goto(f"{site['url']}/explore?category=bathtub")
    _shown(page)
    page.set_input_files("#pred-file", str(site["predictions"]))
    page.wait_for_function(
        "document.getElementById('pred-summary').textContent.includes('models scored')", timeout=120000
    )
    summary = page.inner_text("#pred-summary")
    assert f"{site['n_test']} models scored" in summary
    assert f"PCK@0.05 = {site['pck'][5]:.3f}" in summary
    worst = _shown(page)
    rows = page.locator("#models li").all_inner_texts()
    scores = [float(r.split("PCK ")[1].split()[0]) for r in rows if "PCK " in r]
    assert (
        len(scores) == site["n_test"]
        and scores == sorted(scores)
        and worst == page.locator("#models li").first.get_attribute("data-id")
    )
    assert "PCK@0.05" in page.inner_text("#score")
    page.wait_for_function("document.querySelectorAll('#view .kp-label.pred').length > 0", timeout=10000)
    page.screenshot(path=str(SHOTS / "kpengine_explore_predictions.png"))

    # 6. the same file opened from the server's runs folder by a link, on another model
    second = page.locator("#models li").nth(1).get_attribute("data-id")
    page.goto(f"{site['url']}/explore?run={site['predictions'].name}&model={second}&category=chair")
    page.wait_for_function(
        "document.getElementById('pred-summary').textContent.includes('models scored')", timeout=120000
    )
    assert _shown(page, second) == second and page.input_value("#category") == "bathtub"
    assert f"PCK@0.05 = {site['pck'][5]:.3f}" in page.inner_text("#pred-summary")
    assert parse_qs(urlparse(page.url).query)["run"] == [site["predictions"].name]
    assert not errors, errors
    page.close()
