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
