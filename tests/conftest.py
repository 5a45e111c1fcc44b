"""Shared fixtures. Real data lives beside the project at ../shared/data (see its README)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KPENGINE_SHARED_DATA", REPO.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"real data not found at {path} (set KPENGINE_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    return path


def require_module(name: str):  # noqa: ANN201 - a module
    """Import a test-only dependency; skip without it, but fail under CI, which installs it."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def keypointnet(shared_data: Path) -> Path:
    return _require(shared_data / "keypointnet")


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kpengine's generated sample dataset, made once per test session."""
    from kpengine.data.sample import generate_sample_dataset

    root = tmp_path_factory.mktemp("sample") / "sample"
    generate_sample_dataset(root, shapes_per_category=12, seed=0)
    return root


@pytest.fixture(scope="session")
def sample_chair_knowledge(sample_root: Path):
    """The sample chairs as a knowledge base (every split), for the photo-understanding tests."""
    from kpengine.image.pipeline import KnowledgeBase

    return KnowledgeBase.load(sample_root, "chair", "all")


@pytest.fixture(scope="session")
def sample_chair_render(sample_chair_knowledge):
    """The first sample chair rendered at azimuth 210°, elevation 20° (160 px, 30° field of view, the
    chair filling 0.8 of the frame): (image (H, W, 3) uint8, mask (H, W) bool, camera, viewpoint, shape)."""
    import numpy as np

    from kpengine.render.cameras import Intrinsics, Viewpoint, fit_distance, make_camera

    shape = sample_chair_knowledge.shapes[0]
    _, renderer, center = sample_chair_knowledge.mesh(shape)
    k = Intrinsics.from_fov(160, 160, 30.0)
    radius = float(np.linalg.norm(shape.points - center, axis=1).max())
    view = Viewpoint(210.0, 20.0, fit_distance(radius, k, 0.8), 0.0)
    cam = make_camera(view, k, center)
    r = renderer.render(cam, background=(0.4, 0.5, 0.6))
    image = (r.color * 255).astype(np.uint8) if r.color.dtype != np.uint8 else r.color
    return image, r.mask, cam, view, shape
