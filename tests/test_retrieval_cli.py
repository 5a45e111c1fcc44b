"""Retrieval by the joint embedding: the photo crop, the retrieve command and its refusals, the
understand hook, the two tasks' guards, the shape-embedding run end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from kpengine.cli.main import main
from kpengine.errors import DataError
from kpengine.image.crops import normalise, to_tensor
from kpengine.image.retrieval.embedding import ImageEmbeddingNet, photo_input, ranks_of
from kpengine.io.image import save_image
from kpengine.learn.checkpoint import save_checkpoint


def _fake_run(run, ids, category="chair", task="image_embedding", dim=3):
    """An image-embedding checkpoint made by hand: a tiny random network and a random shape space."""
    from kpengine.image.tasks.image_embedding import ImageEmbeddingConfig

    cfg = ImageEmbeddingConfig(task=task, data="unused", category=category, size=32, widths=[4, 8])
    torch.manual_seed(0)
    net = ImageEmbeddingNet(dim, (4, 8), 32)
    coords = np.random.default_rng(0).normal(size=(len(ids), dim))
    state = {
        "config": cfg.to_json(),
        "model": net.state_dict(),
        "shape_space": {
            "category": category,
            "model_ids": list(ids),
            "splits": ["train"] * len(ids),
            "coords": torch.tensor(coords, dtype=torch.float32),
            "meta": {},
            "path": "",
        },
    }
    run.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run / "last.pt", state)
    return net.eval(), coords


def _chair_ids(sample_root):
    from kpengine.image.retrieval.retrieve import annotated_ids

    return annotated_ids(sample_root, "chair")


def test_photo_input_whole_frame_and_mask_crop() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    # a square photo at the network's size is the input itself
    torch.testing.assert_close(photo_input(img, 32), normalise(to_tensor(img[None])))
    # a wide photo: the longer side kept, the rows above and below repeat the border
    wide = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    x = photo_input(wide, 32)
    torch.testing.assert_close(x[0, :, 8:24], normalise(to_tensor(wide[None]))[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(x[0, :, 0], normalise(to_tensor(wide[None]))[0, :, 0])
    # a mask crops to its box: an object alone on grey gives the same input wherever it sits
    a = np.full((64, 64, 3), 128, np.uint8)
    b = a.copy()
    a[10:20, 10:20] = 255
    b[30:40, 40:50] = 255
    ma, mb = a[..., 0] == 255, b[..., 0] == 255
    torch.testing.assert_close(photo_input(a, 32, ma), photo_input(b, 32, mb))


def test_ranks_of_counts_ties_against_the_truth() -> None:
    d = np.array([[0.5, 0.1, 0.5, 0.9], [0.2, 0.3, 0.1, 0.0]])
    np.testing.assert_array_equal(ranks_of(d, np.array([0, 0])), [2, 3])


def test_retrieve_ranks_knowledge_shapes_by_distance(tmp_path, sample_root) -> None:
    ids = _chair_ids(sample_root)[:6] + ["not-annotated-here"]
    net, coords = _fake_run(tmp_path / "run", ids)
    img = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    save_image(tmp_path / "p.png", img)
    out = tmp_path / "R.json"
    code = main(["retrieve", "--run", str(tmp_path / "run"), "--image", str(tmp_path / "p.png"),
                 "--knowledge", str(sample_root), "--top", "4", "--out", str(out)])  # fmt: skip
    assert code == 0
    r = json.loads(out.read_text())
    assert r["category"] == "chair" and r["candidates"] == 6
    # independent: the network's point for the photo, Euclidean distances to the six annotated shapes
    with torch.no_grad():
        p = net(photo_input(img, 32))[0].double().numpy()
    d = np.linalg.norm(coords[:6] - p, axis=1)
    order = np.argsort(d)[:4]
    assert [s["model_id"] for s in r["shapes"]] == [ids[k] for k in order]
    np.testing.assert_allclose([s["distance"] for s in r["shapes"]], d[order], atol=1e-5)
    assert [s["rank"] for s in r["shapes"]] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("task", "category", "flag", "message"),
    [
        ("viewpoint", "chair", [], "trained for task 'viewpoint', not 'image_embedding'"),
        ("image_embedding", "table", ["--category", "chair"], "trained on category 'table'; it cannot predict 'chair'"),
        ("image_embedding", "table", [], "none of the .* annotated table shapes here is in the run's shape space"),
    ],
)
def test_retrieve_refuses_and_writes_nothing(tmp_path, sample_root, capsys, task, category, flag, message) -> None:
    _fake_run(tmp_path / "run", _chair_ids(sample_root)[:3], category=category, task=task)
    save_image(tmp_path / "p.png", np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "R.json"
    code = main(["retrieve", "--run", str(tmp_path / "run"), "--image", str(tmp_path / "p.png"),
                 "--knowledge", str(sample_root), "--out", str(out), *flag])  # fmt: skip
    assert code == 1
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_retrieve_refuses_a_bad_photo(tmp_path, sample_root, capsys) -> None:
    _fake_run(tmp_path / "run", _chair_ids(sample_root)[:3])
    (tmp_path / "p.png").write_bytes(b"not an image")
    out = tmp_path / "R.json"
    code = main(["retrieve", "--run", str(tmp_path / "run"), "--image", str(tmp_path / "p.png"),
                 "--knowledge", str(sample_root), "--out", str(out)])  # fmt: skip
    assert code == 1 and "p.png" in capsys.readouterr().err and not out.exists()


def test_image_embedding_refuses_test_split_views(tmp_path) -> None:
    from kpengine.image.tasks.image_embedding import embedding_views
    from kpengine.io.renderset import save_index
    from kpengine.io.shapespace import ShapeSpace

    view = {
        "id": "a_0", "category": "chair", "model_id": "a", "split": "test", "source": "mesh",
        "image": "images/chair/a_0.png", "azimuth": 0.0, "elevation": 0.0, "theta": 0.0, "distance": 2.0,
        "camera": {}, "keypoints": {"uv": [], "visible": [], "semantic_ids": []},
    }  # fmt: skip
    save_index(tmp_path, {}, [view], "")
    space = ShapeSpace("chair", ["a", "b"], ["test", "train"], coords=np.zeros((2, 3), np.float32))
    with pytest.raises(DataError, match="test-split shape a: test shapes are never trained on"):
        embedding_views(tmp_path, space, 32)


def test_understand_embedding_retrieval_needs_a_run(sample_root) -> None:
    from kpengine.image.pipeline import KnowledgeBase, Networks, _embedding_pool

    kb = KnowledgeBase.load(sample_root, "chair")
    with pytest.raises(DataError, match="needs an image-embedding run"):
        _embedding_pool(Networks(viewpoint=None), np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), bool), kb, 3)


def test_understand_embedding_pool_follows_the_embedding(tmp_path, sample_root) -> None:
    from kpengine.image.pipeline import KnowledgeBase, Networks, _embedding_pool
    from kpengine.image.retrieval.retrieve import Retriever

    kb = KnowledgeBase.load(sample_root, "chair")
    ids = [s.model_id for s in kb.shapes]
    _fake_run(tmp_path / "run", ids)
    retriever = Retriever.from_run(tmp_path / "run", "chair")
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    pool, dist = _embedding_pool(Networks(viewpoint=None, retriever=retriever), img, mask, kb, 3)
    expected = retriever.rank(img, mask)[:3]
    assert [s.model_id for s in pool] == [m for m, _ in expected]
    assert list(dist.values()) == sorted(dist.values())


def test_shape_embedding_run_writes_its_shape_space(tmp_path, sample_root) -> None:
    from kpengine.image.retrieval.sammon import classical_mds, sammon_stress
    from kpengine.image.tasks.shape_embedding import ShapeEmbeddingConfig, ShapeEmbeddingTask
    from kpengine.io.shapespace import load_shape_space
    from kpengine.learn.runs import train_run
    from kpengine.render import gl

    if not gl.gl_available():
        if os.environ.get("CI"):
            pytest.fail(f"no OpenGL context: {gl.INSTALL_HINT}; CI must have it")
        pytest.skip("no OpenGL context")
    cfg = ShapeEmbeddingConfig(
        task="shape_embedding", data=str(sample_root), category="chair", dim=3, azimuths=4, elevations=[20.0],
        view_size=32, epochs=2, steps_per_epoch=30, lr=0.02, cache=str(tmp_path / "lf.npz"),
    )  # fmt: skip
    summary = train_run(ShapeEmbeddingTask(cfg), tmp_path / "run", progress=False)
    space = load_shape_space(tmp_path / "run" / "shape_space.npz", need=("coords", "hog", "distances"))
    assert summary["shapes"] == len(space) and space.coords.shape == (len(space), 3)
    assert set(space.splits) <= {"train", "val", "test"} and "test" in space.splits
    assert space.hog.shape[:2] == (len(space), 4)
    np.testing.assert_allclose(space.distances[np.triu_indices(len(space), 1)].mean(), 1.0, rtol=1e-9)
    start = sammon_stress(classical_mds(space.distances, 3), space.distances)[0]
    final = sammon_stress(space.coords, space.distances)[0]
    assert final < start and space.meta["stress"] == pytest.approx(final, rel=1e-5)
    cached = load_shape_space(tmp_path / "lf.npz")
    assert cached.coords is None and cached.model_ids == space.model_ids
