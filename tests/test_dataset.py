import json
import shutil

import numpy as np
import pytest

from kpengine.categories import resolve_category
from kpengine.data import KeypointNetDataset
from kpengine.errors import DataError


@pytest.mark.parametrize("category, counts", [("bathtub", (344, 49, 99)), ("bed", (102, 14, 30))])
def test_real_splits_load_completely(keypointnet, category, counts):
    for split, n in zip(("train", "val", "test"), counts):
        ds = KeypointNetDataset(keypointnet, category, split)
        assert len(ds) == n and ds.problems == []
    shape = ds[0]
    assert shape.points.shape == (2048, 3) and shape.points.dtype == np.float32
    assert shape.source == "pcd"
    # the official PCD point named by pcd_info equals xyz
    for s in ds:
        np.testing.assert_allclose(s.points[s.point_indices], s.keypoints, atol=1e-6)


def test_category_by_synset_and_unknown_category(keypointnet):
    assert len(KeypointNetDataset(keypointnet, "02818832", "test")) == 30
    with pytest.raises(DataError, match="unknown category 'sofa'.*chair \\(03001627\\)"):
        resolve_category("sofa")


def test_missing_geometry_is_reported_not_dropped(keypointnet):
    ds = KeypointNetDataset(keypointnet, "airplane", "all")
    assert len(ds) + len(ds.problems) == 1022
    assert len(ds) == 14  # 13 PCDs + 1 model with only a mesh
    assert all("no geometry" in p.reason for p in ds.problems)
    assert "1008 models skipped" in ds.problem_summary()


def test_mesh_only_models_are_sampled_and_snapped(keypointnet):
    ds = KeypointNetDataset(keypointnet, "chair", "all")
    meshed = [s for s in ds if s.source == "mesh"]
    assert len(meshed) == 4 and len(ds) == 5  # 5 annotated chairs have a mesh, one of them a PCD too
    for s in meshed:
        assert s.points.shape == (2048, 3)
        d = np.linalg.norm(s.points[s.point_indices] - s.keypoints, axis=1)
        np.testing.assert_allclose(d, s.snap_distance, atol=1e-6)
        assert s.snap_distance.max() < 0.06
    again = KeypointNetDataset(keypointnet, "chair", "all")
    np.testing.assert_array_equal(again.by_id(meshed[0].model_id).points, meshed[0].points)  # deterministic


def test_broken_models_are_reported_and_the_rest_load(keypointnet, tmp_path):
    root = tmp_path / "kpn"
    (root / "annotations").mkdir(parents=True)
    models = json.loads((keypointnet / "annotations" / "bed.json").read_text())[:6]
    (root / "annotations" / "bed.json").write_text(json.dumps(models))
    shutil.copytree(keypointnet / "splits", root / "splits")
    pcd_dir = root / "pcds" / "02818832"
    pcd_dir.mkdir(parents=True)
    for m in models:
        shutil.copy(keypointnet / "pcds" / "02818832" / f"{m['model_id']}.pcd", pcd_dir)
    ids = [m["model_id"] for m in models]
    # 0: keypoint index out of range; 1: NaN coordinate; 2: truncated PCD; 3: PCD removed
    models[0]["keypoints"][0]["pcd_info"]["point_index"] = 5000
    (root / "annotations" / "bed.json").write_text(json.dumps(models))
    lines = (pcd_dir / f"{ids[1]}.pcd").read_text().splitlines()
    lines[20] = "nan 0 0 0"
    (pcd_dir / f"{ids[1]}.pcd").write_text("\n".join(lines))
    (pcd_dir / f"{ids[2]}.pcd").write_text("\n".join(lines[:500]))
    (pcd_dir / f"{ids[3]}.pcd").unlink()
    ds = KeypointNetDataset(root, "bed", "all")
    assert sorted(ds.model_ids) == sorted(ids[4:])
    reasons = {p.model_id: p.reason for p in ds.problems}
    assert "5000 out of range" in reasons[ids[0]].replace("[", "").replace("]", "")
    assert "NaN" in reasons[ids[1]]
    assert "expected 2048 rows" in reasons[ids[2]]
    assert "no geometry" in reasons[ids[3]]


def test_torch_loader_batches_shapes(keypointnet):
    import torch  # a dependency of kpengine: a missing torch is an error, never a skip

    from kpengine.data.torch import ShapeTensorDataset, collate_shapes

    ds = KeypointNetDataset(keypointnet, "bed", "val")
    loader = torch.utils.data.DataLoader(ShapeTensorDataset(ds), batch_size=4, collate_fn=collate_shapes)
    batch = next(iter(loader))
    assert batch["points"].shape == (4, 2048, 3)
    assert batch["keypoint_index"].shape == (4, ds.n_classes)
    assert batch["saliency"].shape == (4, 2048) and batch["saliency"].sum() > 0
    for b in range(4):
        idx = batch["keypoint_index"][b]
        assert (batch["saliency"][b, idx[idx >= 0]] == 1).all()


def test_model_ids_restrict_loading(keypointnet):
    ds = KeypointNetDataset(keypointnet, "chair", "all", model_ids=["341a2d3df9800314fa260f4362cac599"])
    assert ds.model_ids == ["341a2d3df9800314fa260f4362cac599"] and ds.problems == []
    with pytest.raises(DataError, match="models not in chair/all: nope"):
        KeypointNetDataset(keypointnet, "chair", "all", model_ids=["nope"])
