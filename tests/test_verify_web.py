"""The verification page in real headless Chromium: an admin sees the t-SNE cluster plot and
a model's keypoints, rejects one keypoint and names a semantic id; the store has both.
Screenshot: /tmp/kpengine_verify.png."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from kpengine.server import ServerConfig, create_app
from kpengine.server.pages import web_dist
from kpengine.server.process import serve_in_thread
from kpengine.store import repo
from kpengine.store.schema import AggregatedKeypoint, SemanticLabel
from kpengine.store.verify import save_aggregation
from test_verify_support import fill_store, truth_result
from test_web_pages import CHROMIUM, SHOTS, _need, browser  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def site(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    _need(Path(CHROMIUM).is_file() or bool(shutil.which("chromium")), "chromium missing (scripts/setup_system.sh)")
    _need((web_dist() / "assets" / "verify.js").is_file(), "web pages not built (scripts/setup_system.sh)")
    store, tokens, shapes = fill_store(f"sqlite:///{tmp_path_factory.mktemp('verify') / 'store.db'}", sample_root)
    with store.session() as s:
        save_aggregation(s, repo.get_category(s, "chair"), truth_result(shapes))  # type: ignore[arg-type]
    with serve_in_thread(create_app(ServerConfig(store=store))) as url:
        yield {"url": url, "tokens": tokens, "shapes": shapes, "store": store}
    store.dispose()


def test_verify_page_reject_and_name(site: dict, browser) -> None:  # noqa: ANN001, F811
    page = browser.new_page(viewport={"width": 1500, "height": 820})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    shape = site["shapes"][0]
    page.goto(f"{site['url']}/verify?token={site['tokens']['admin']}&category=chair&model={shape.model_id}")
    n = len(shape.semantic_ids)
    page.wait_for_function(f"document.querySelectorAll('#view .kp-label').length === {n}", timeout=20000)
    n_cands = int(page.get_attribute("#plot", "data-points") or 0)
    assert n_cands >= n * len(site["shapes"])
    assert page.locator("#clusters li").count() == len(set(int(i) for s in site["shapes"] for i in s.semantic_ids))
    assert page.locator("#keypoints li").count() == n

    # reject the first keypoint of the model: it leaves the 3D view and is struck through
    first = page.locator("#keypoints li").first
    kp_id = int(first.get_attribute("data-id") or -1)
    first.locator("button.reject").click()
    page.wait_for_selector("#banner.ok", timeout=10000)
    page.wait_for_function(f"document.querySelectorAll('#view .kp-label').length === {n - 1}", timeout=10000)
    assert "rejected" in (page.locator("#keypoints li").first.get_attribute("class") or "")

    # pick cluster 0 in the list, name it
    page.locator("#clusters li[data-id='0']").click()
    page.fill("#name-input", "back top, left (verified)")
    page.click("#name-save")
    page.wait_for_function("document.getElementById('banner').textContent.startsWith('Named 0')", timeout=10000)
    assert "back top, left (verified)" in page.locator("#clusters li[data-id='0']").inner_text()
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "kpengine_verify.png"))

    # merge cluster 11 into 10 from the page
    page.locator("#clusters li[data-id='11']").click()
    page.select_option("#merge-target", "10")
    page.click("#merge")
    page.wait_for_function("document.getElementById('banner').textContent.startsWith('Merged 11')", timeout=10000)
    assert page.locator("#clusters li[data-id='11']").count() == 0

    with site["store"].session() as s:
        assert s.get(AggregatedKeypoint, kp_id).status == "rejected"  # type: ignore[union-attr]
        names = {lab.semantic_id: lab.name for lab in s.scalars(select(SemanticLabel))}
        ids = set(s.scalars(select(AggregatedKeypoint.semantic_id)))
    assert names[0] == "back top, left (verified)"
    assert 11 not in ids and 10 in ids
    assert not errors, errors

    # an annotator's token gets a clear refusal, not a broken page
    other = browser.new_page()
    other.goto(f"{site['url']}/verify?token={site['tokens']['annotator']}")
    other.wait_for_selector("#banner.error", timeout=10000)
    assert "admin" in other.inner_text("#banner")
    other.close()
    page.close()


def test_verify_page_split_button(site: dict, browser) -> None:  # noqa: ANN001, F811
    """Pick a cluster, press Split: its keypoints are cut in two by 2-means on the t-SNE plot.

    Checked in the store: the cluster's keypoints are now two non-empty parts (the old id and one
    above the largest), together exactly the old set, and each part is nearer its own mean than the
    other's (the fixed point 2-means stops at: a split a person would draw on the scatter plot)."""
    import numpy as np

    from kpengine.store.schema import AggregationCandidate

    source = 3
    with site["store"].session() as s:
        before = set(s.scalars(select(AggregatedKeypoint.id).where(AggregatedKeypoint.semantic_id == source)))
        top = max(s.scalars(select(AggregatedKeypoint.semantic_id)))
    assert len(before) >= 4
    page = browser.new_page(viewport={"width": 1500, "height": 820})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{site['url']}/verify?token={site['tokens']['admin']}&category=chair")
    page.wait_for_selector(f"#clusters li[data-id='{source}']", timeout=20000)
    n_clusters = page.locator("#clusters li").count()
    page.locator(f"#clusters li[data-id='{source}']").click()
    page.click("#split-cluster")
    page.wait_for_function(
        f"document.getElementById('banner').textContent.startsWith('Split cluster {source}')", timeout=10000
    )
    page.wait_for_selector(f"#clusters li[data-id='{top + 1}']", timeout=10000)
    assert page.locator("#clusters li").count() == n_clusters + 1
    page.screenshot(path=str(SHOTS / "kpengine_verify_split.png"))
    assert not errors, errors
    page.close()

    with site["store"].session() as s:
        kept = set(s.scalars(select(AggregatedKeypoint.id).where(AggregatedKeypoint.semantic_id == source)))
        moved = set(s.scalars(select(AggregatedKeypoint.id).where(AggregatedKeypoint.semantic_id == top + 1)))
        xy = {
            c.keypoint_id: (c.tsne_x, c.tsne_y, c.cluster)
            for c in s.scalars(select(AggregationCandidate).where(AggregationCandidate.keypoint_id.in_(before)))
        }
    assert kept and moved and kept | moved == before and not kept & moved
    assert all(xy[k][2] == top + 1 for k in moved) and all(xy[k][2] == source for k in kept)
    a = np.array([xy[k][:2] for k in kept])
    b = np.array([xy[k][:2] for k in moved])
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    assert (np.linalg.norm(a - ma, axis=1) <= np.linalg.norm(a - mb, axis=1)).all()
    assert (np.linalg.norm(b - mb, axis=1) <= np.linalg.norm(b - ma, axis=1)).all()


def _open_model(chromium, url: str, token: str, shape) -> tuple:  # noqa: ANN001
    """The verify page on ``shape``'s model once its keypoints are drawn; (page, page errors)."""
    page = chromium.new_page(viewport={"width": 1500, "height": 820})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/verify?token={token}&category=chair&model={shape.model_id}")
    n = len(shape.semantic_ids)
    page.wait_for_function(f"document.querySelectorAll('#view .kp-label').length === {n}", timeout=20000)
    return page, errors


def test_verify_page_adds_a_missed_keypoint(site: dict, browser) -> None:  # noqa: ANN001, F811
    """Reject a model's keypoint, choose its id under "Add a missed keypoint", click the model: the
    store has a new verified keypoint of that id on that model, lying on one of the model's cloud
    points (the page picks a cloud point; the server snaps and checks it)."""
    import numpy as np

    shape = site["shapes"][1]
    page, errors = _open_model(browser, site["url"], site["tokens"]["admin"], shape)
    n = len(shape.semantic_ids)
    first = page.locator("#keypoints li").first
    kp_id = int(first.get_attribute("data-id") or -1)
    with site["store"].session() as s:
        sid = s.get(AggregatedKeypoint, kp_id).semantic_id  # type: ignore[union-attr]
    assert page.locator(f"#add-id option[value='{sid}']").count() == 0  # the model has it: not offered
    first.locator("button.reject").click()
    page.wait_for_function(f"document.querySelectorAll('#view .kp-label').length === {n - 1}", timeout=10000)
    page.select_option("#add-id", str(sid))

    box = page.locator("#view canvas").bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    added = False
    for dx, dy in [(dx, dy) for r in range(0, 120, 12) for dx, dy in ((r, 0), (-r, 0), (0, r), (0, -r))]:
        page.mouse.click(cx + dx, cy + dy)  # a miss (background or a marker) saves nothing
        page.wait_for_timeout(150)
        if page.locator("#banner").inner_text().startswith(f"Added {sid}"):
            added = True
            break
    assert added, page.locator("#banner").inner_text()
    page.wait_for_function(f"document.querySelectorAll('#view .kp-label').length === {n}", timeout=10000)
    assert page.locator(f"#add-id option[value='{sid}']").count() == 0
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "kpengine_verify_add.png"))
    assert not errors, errors
    page.close()

    with site["store"].session() as s:
        model_pk = s.get(AggregatedKeypoint, kp_id).model_id  # type: ignore[union-attr]
        rows = list(s.scalars(select(AggregatedKeypoint).where(AggregatedKeypoint.model_id == model_pk)))
    new = [k for k in rows if k.semantic_id == sid and k.status == "verified"]
    assert len(new) == 1 and new[0].extra.get("added_by") == "root"
    xyz = np.array([new[0].x, new[0].y, new[0].z])
    assert np.linalg.norm(shape.points[new[0].point_index] - xyz) < 0.005


def test_verify_page_runs_aggregation_as_a_job(sample_root: Path, tmp_path: Path, browser) -> None:  # noqa: ANN001, F811
    """ "Run aggregation" starts a server job and follows it: the page sees every pipeline stage in
    order, then redraws from the stored run (its pending keypoints and candidates are the store's)."""
    from sqlalchemy import func

    from kpengine.aggregate.pipeline import STAGES
    from kpengine.store.schema import AggregationCandidate

    _need((web_dist() / "assets" / "verify.js").is_file(), "web pages not built (scripts/setup_system.sh)")
    store, tokens, _ = fill_store(f"sqlite:///{tmp_path / 'store.db'}", sample_root, keep_truth=True)
    with serve_in_thread(create_app(ServerConfig(store=store))) as url:
        page = browser.new_page(viewport={"width": 1500, "height": 820})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/verify?token={tokens['admin']}&category=chair")
        page.wait_for_selector("#clusters li", timeout=20000)  # the imported (verified) ids
        assert page.get_attribute("#plot", "data-points") == "0"  # no run yet
        page.fill("#agg-steps", "3")
        page.click("#agg-run")
        page.wait_for_selector("#agg-job:not([hidden])", timeout=10000)
        assert page.locator("#agg-run").is_disabled()
        page.wait_for_function(
            "document.getElementById('banner').textContent.startsWith('Aggregated chair')", timeout=300000
        )
        stages = (page.get_attribute("#agg-stage", "data-stages") or "").split(",")
        assert stages == list(STAGES)  # one round: every stage once, in order
        assert float(page.eval_on_selector("#agg-progress", "e => e.value")) == 1.0
        assert not page.locator("#agg-run").is_disabled()
        pending = int(page.inner_text("#banner").split(": ")[1].split()[0])
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / "kpengine_verify_job.png"))
        n_plot = int(page.get_attribute("#plot", "data-points") or 0)
        assert not errors, errors
        page.close()
    with store.session() as s:
        assert pending == s.scalar(select(func.count()).where(AggregatedKeypoint.status == "pending")) > 0
        assert n_plot == s.scalar(select(func.count()).select_from(AggregationCandidate)) > 0
    store.dispose()


def test_verify_page_draws_symmetry_groups(sample_root: Path, tmp_path: Path, browser) -> None:  # noqa: ANN001, F811
    """The imported (official) groups of a model are listed by semantic id and drawn over its view:
    one dashed line per reflection pair, one polygon per rotation group of two or more."""
    _need((web_dist() / "assets" / "verify.js").is_file(), "web pages not built (scripts/setup_system.sh)")
    store, tokens, shapes = fill_store(f"sqlite:///{tmp_path / 'store.db'}", sample_root, keep_truth=True)
    shape = max(shapes, key=lambda s: len(s.symmetries.reflection) + len(s.symmetries.rotation))
    refl, rot = shape.symmetries.reflection, shape.symmetries.rotation
    assert refl or rot
    with serve_in_thread(create_app(ServerConfig(store=store))) as url:
        page, errors = _open_model(browser, url, tokens["admin"], shape)
        items = page.locator("#symmetries li").all_inner_texts()
        drawn = json.loads(page.get_attribute("#symmetries", "data-drawn") or "{}")
        page.locator("#symmetries").scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / "kpengine_verify_symmetry.png"))
        assert not errors, errors
        page.close()
    store.dispose()
    sid = shape.annotation.keypoints
    want = sorted(
        [
            f"⟷ {' · '.join(str(sid[i].semantic_id) for i in sorted(g.kp_indexes, key=lambda i: sid[i].semantic_id))}"
            for g in refl
        ]
        + [
            f"⟳ {' · '.join(str(sid[i].semantic_id) for i in sorted(g.kp_indexes, key=lambda i: sid[i].semantic_id))}"
            for g in rot
        ]
    )
    assert sorted(t.split(" (circle)")[0] for t in items) == want
    assert drawn["reflection"] == sum(len(g.kp_indexes) >= 2 for g in refl)
    assert drawn["rotation"] == sum(len(g.kp_indexes) >= 2 for g in rot)
