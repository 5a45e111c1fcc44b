"""The photo page in real headless Chromium: the output folder of ``kpengine understand`` (the
real pipeline, on a render of a sample chair with its view and shape given, so no trained
network is needed) shown beside the shape; hovering a pixel marks the 3D point that pixel sees.
Screenshots: /tmp/kpengine_photo_*.png."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.ndimage import binary_erosion

from kpengine.data.sample import KEYPOINT_NAMES
from kpengine.image.pipeline import KnowledgeBase, Networks, understand, write_understanding
from kpengine.image.viewpoint import ViewpointNet
from kpengine.render.cameras import Camera, Intrinsics, Viewpoint, fit_distance, make_camera
from kpengine.render.overlay import save_png
from kpengine.server import ServerConfig, create_app
from kpengine.server.pages import web_dist
from kpengine.server.process import serve_in_thread
from kpengine.store import open_store
from kpengine.store.exchange import import_dataset
from test_web_pages import CHROMIUM, SHOTS, _need, browser  # noqa: F401 - fixture


@dataclass
class Understood:
    out: Path
    camera: Camera  # the fitted camera, as pose.json has it
    mask: np.ndarray  # (H, W) the fitted shape's silhouette
    semantic: np.ndarray  # (H, W) semantic id per pixel, -1 elsewhere
    keypoints: dict[str, dict]  # keypoints.json
    xyz: dict[int, np.ndarray]  # semantic id -> the shape's keypoint
    mesh: trimesh.Trimesh

    def surface_distance(self, point: np.ndarray) -> float:
        return float(trimesh.proximity.closest_point(self.mesh, point[None])[1][0])


@pytest.fixture(scope="module")
def site(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    _need(Path(CHROMIUM).is_file() or bool(shutil.which("chromium")), "chromium missing (scripts/setup_system.sh)")
    _need((web_dist() / "assets" / "photo.js").is_file(), "web pages not built (scripts/setup_system.sh)")
    tmp = tmp_path_factory.mktemp("photo")
    store = open_store(f"sqlite:///{tmp / 'store.db'}")
    with store.session() as s:
        import_dataset(s, sample_root, ["chair"], labels=KEYPOINT_NAMES)
    # the photo: a render of a knowledge shape; understand is told its view and shape (untrained network)
    knowledge = KnowledgeBase.load(sample_root, "chair", "all")
    shape = knowledge.shapes[0]
    _, renderer, center = knowledge.mesh(shape)
    k = Intrinsics.from_fov(320, 240, 30.0)
    radius = float(np.linalg.norm(shape.points - center, axis=1).max())
    view = Viewpoint(210.0, 20.0, fit_distance(radius, k, 0.8), 0.0)
    image = renderer.render(make_camera(view, k, center), background=(0.4, 0.5, 0.6)).color
    mask = renderer.render(make_camera(view, k, center)).mask
    u = understand(
        image,
        knowledge,
        Networks(ViewpointNet(64, (16, 32, 64, 128))),
        mask=mask,
        viewpoint_override=view,
        shape_override=shape.model_id,
        steps=20,
    )
    out = tmp / "understood"
    write_understanding(u, out)
    save_png(out / "photo.png", image)
    pose = json.loads((out / "pose.json").read_text())
    understood = Understood(
        out,
        Camera.from_json(pose["camera"]),
        u.object_mask,
        u.semantic_map,
        json.loads((out / "keypoints.json").read_text()),
        {int(s): x for s, x in zip(shape.semantic_ids, shape.keypoints.astype(np.float64))},
        trimesh.Trimesh(renderer.mesh.vertices, renderer.mesh.faces, process=False),
    )
    with serve_in_thread(create_app(ServerConfig(store=store))) as url:
        yield {"url": url, "fixture": understood}
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
    # the shape's own keypoints: CSS2D labels enter the DOM on the 3D view's next frame, after "ready"
    # (under load that frame can come late: wait for it, do not sample the DOM once)
    page.wait_for_function(
        f"document.querySelectorAll('#view .kp-label').length === {len(fx.keypoints)}", timeout=10000
    )
    assert "azimuth" in page.inner_text("#pose") and "silhouette IoU" in page.inner_text("#pose")

    pixel = float(np.linalg.norm(fx.camera.t)) / fx.camera.intrinsics.fx  # model units per pixel at the object

    def check(seen: dict) -> None:
        """The point is on the shape's surface, projects back to the hovered pixel through the fitted
        camera (kpengine's projection, independent of the page's ray), and carries the pixel's id."""
        assert seen["xyz"] is not None, seen
        assert fx.surface_distance(np.array(seen["xyz"])) < 1e-3, seen
        uv, _ = fx.camera.project(np.array([seen["xyz"]]))
        assert abs(uv[0, 0] - seen["u"]) < 1.0 and abs(uv[0, 1] - seen["v"]) < 1.0, (uv, seen)
        want = int(fx.semantic[round(seen["v"]), round(seen["u"])])
        assert seen["semantic_id"] == (want if want >= 0 else None), (seen, want)

    # pixels well inside the fitted silhouette
    interior = np.argwhere(binary_erosion(fx.mask, iterations=3))
    assert len(interior) > 100
    for i, j in interior[np.linspace(0, len(interior) - 1, 6).astype(int)]:
        check(_hover(page, float(j), float(i)))
    # a visible keypoint's pixel (not on the outline) sees that keypoint
    inside = [
        (int(s), k["uv"])
        for s, k in fx.keypoints.items()
        if k["visible"]
        and fx.mask[round(k["uv"][1]) - 1 : round(k["uv"][1]) + 2, round(k["uv"][0]) - 1 : round(k["uv"][0]) + 2].all()
    ]
    assert inside, fx.keypoints
    for sid, (u, v) in inside:
        seen = _hover(page, u, v)
        check(seen)
        assert np.linalg.norm(np.array(seen["xyz"]) - fx.xyz[sid]) < 0.01 + 2 * pixel, (sid, seen)
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "kpengine_photo_hover.png"))

    # a background pixel sees nothing
    bg = np.argwhere(~fx.mask)[0]
    assert _hover(page, float(bg[1]), float(bg[0]))["xyz"] is None
    page.click("#from-camera")
    page.wait_for_timeout(500)
    page.screenshot(path=str(SHOTS / "kpengine_photo_from_camera.png"))
    assert not errors, errors
    page.close()
