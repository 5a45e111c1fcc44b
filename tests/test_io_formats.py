"""Format layer: the mesh registry, MTL, 3D predictions and the 2D benchmark's files (round trips,
messages that name the file, model or field)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kpengine.errors import DataError
from kpengine.io import layout, mesh
from kpengine.io.benchmark2d import (
    load_benchmark,
    load_predictions_2d,
    save_annotation,
    save_index,
    save_predictions_2d,
)
from kpengine.io.mtl import Material, load_mtl, save_mtl
from kpengine.io.predictions import (
    load_correspondence_predictions,
    load_saliency_predictions,
    save_correspondence_predictions,
    save_saliency_predictions,
)


def test_mesh_registry_reads_writes_and_locates_a_new_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mesh, "READERS", dict(mesh.READERS))
    monkeypatch.setattr(layout, "READERS", mesh.READERS)
    monkeypatch.setattr(mesh, "WRITERS", dict(mesh.WRITERS))

    def read_npz(path: Path) -> mesh.Mesh:
        with np.load(path) as z:
            return mesh.Mesh(z["v"], z["f"])

    def write_npz(path: Path, m: mesh.Mesh) -> None:
        np.savez(path, v=m.vertices, f=m.faces)

    tri = mesh.Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.5]], np.float64), np.array([[0, 1, 2]], np.int64))
    flat = tmp_path / "meshes" / "03001627" / "abc.npz"
    flat.parent.mkdir(parents=True)
    assert layout.mesh_path(tmp_path, "03001627", "abc") is None
    mesh.register_mesh_format("NPZ", read_npz, write_npz)
    mesh.save_mesh(flat, tri)
    assert layout.mesh_path(tmp_path, "03001627", "abc") == flat
    back = mesh.load_mesh(flat)
    assert np.array_equal(back.vertices, tri.vertices) and np.array_equal(back.faces, tri.faces)
    np.savez(flat, v=tri.vertices, f=tri.faces + 5)  # the registered reader's output is still validated
    with pytest.raises(DataError, match="face indices out of range"):
        mesh.load_mesh(flat)


def test_mtl_round_trip_with_texture_and_bad_kd(tmp_path: Path) -> None:
    tex = (np.arange(4 * 3 * 3).reshape(4, 3, 3) % 256).astype(np.float32) / 255.0
    mats = [Material("wood", np.array([0.25, 0.5, 1.0])), Material("skin tex", np.array([1.0, 0.0, 0.125]), tex)]
    save_mtl(tmp_path / "m.mtl", mats)
    back, missing = load_mtl(tmp_path / "m.mtl")
    assert missing == [] and [m.name for m in back] == ["wood", "skin tex"]
    assert np.array_equal(back[0].kd, mats[0].kd) and back[0].texture is None
    assert np.array_equal(back[1].kd, mats[1].kd) and np.array_equal(back[1].texture, tex)
    (tmp_path / "bad.mtl").write_text("newmtl a\nKd 1 x 0\nmap_Kd -s 1 1 1 gone.png\n")
    with pytest.raises(DataError) as err:
        load_mtl(tmp_path / "bad.mtl")
    assert "bad.mtl" in str(err.value) and "line 2" in str(err.value) and "'a'" in str(err.value)
    (tmp_path / "gone.mtl").write_text("newmtl a\nKd 2 0.5 -1\nmap_Kd -s 1 1 1 gone.png\n")
    back, missing = load_mtl(tmp_path / "gone.mtl")
    assert back[0].kd.tolist() == [1.0, 0.5, 0.0] and missing == [str(tmp_path / "gone.png")]


def test_3d_prediction_files_round_trip_and_name_model_and_entry(tmp_path: Path) -> None:
    n_points = {"m1": 10, "m2": 5}
    sal = {"m1": (np.array([3, 9]), np.array([0.9, 1 / 3])), "m2": (np.zeros(0, np.int64), np.zeros(0))}
    save_saliency_predictions(tmp_path / "s.json", sal)
    back, warnings = load_saliency_predictions(tmp_path / "s.json", n_points)
    assert warnings == [] and back.keys() == sal.keys()
    assert all(np.array_equal(back[m][0], sal[m][0]) and np.array_equal(back[m][1], sal[m][1]) for m in sal)
    cor = {"m1": {0: 4, 7: 9}, "ghost": {0: 1}}
    save_correspondence_predictions(tmp_path / "c.json", cor)
    back_c, warnings = load_correspondence_predictions(tmp_path / "c.json", n_points, n_classes=5)
    assert back_c == {"m1": {0: 4}} and "ghost" in warnings[0] and "semantic ids" in warnings[1] and "7" in warnings[1]
    (tmp_path / "bad.json").write_text(json.dumps({"m2": [[1, 0.5], [5, 0.1]]}))
    with pytest.raises(DataError) as err:
        load_saliency_predictions(tmp_path / "bad.json", n_points)
    assert "bad.json" in str(err.value) and "model m2" in str(err.value) and "entry 1" in str(err.value)


def test_2d_benchmark_files_round_trip_and_are_checked(tmp_path: Path) -> None:
    ann = {"category": "mug", "image_width": 8, "image_height": 8, "bndbox": [0, 0, 7, 7],
           "kps": [[1.0, 2.0]], "kps_ids": [3], "kps_visible": [1]}  # fmt: skip
    save_annotation(tmp_path, "m_0", ann)
    save_index(tmp_path, {"version": 2, "images": ["m_0"]})
    index, anns = load_benchmark(tmp_path)
    assert index["images"] == ["m_0"] and anns == {"m_0": ann}
    save_annotation(tmp_path, "m_0", {**ann, "kps_visible": [1, 0]})
    with pytest.raises(DataError) as err:
        load_benchmark(tmp_path)
    assert "m_0.json" in str(err.value) and "image m_0" in str(err.value) and "differ in length" in str(err.value)
    preds = {"m_0": {3: [1.5, float("nan")]}, "m_1": {}}
    save_predictions_2d(tmp_path / "P.json", preds)
    back = load_predictions_2d(tmp_path / "P.json")
    assert back["m_1"] == {} and back["m_0"]["3"][0] == 1.5 and np.isnan(back["m_0"]["3"][1])
    (tmp_path / "P.json").write_text(json.dumps({"m_0": {"3": [1.0]}}))
    with pytest.raises(DataError, match=r"image m_0: semantic id 3: expected \[u, v\]"):
        load_predictions_2d(tmp_path / "P.json")


def test_official_pcd_comes_back_byte_for_byte(keypointnet: Path, tmp_path: Path) -> None:
    from kpengine.io.pcd import load_pcd, save_pcd

    for path in sorted((keypointnet / "pcds" / "02808440").glob("*.pcd"))[:20]:
        save_pcd(tmp_path / "c.pcd", load_pcd(path))
        assert (tmp_path / "c.pcd").read_bytes() == path.read_bytes(), path


def test_pcd_ascii_float_rgb_is_the_packed_integer_and_one_point_files_read(tmp_path: Path) -> None:
    """PCL writes a TYPE F rgb in ASCII as its packed integer; a one-point file is still (1, 3)."""
    from kpengine.io.pcd import PointCloud, load_pcd, save_pcd

    head = "VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F F\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA ascii\n"
    path = tmp_path / "f.pcd"
    path.write_text(head.format(n=2) + "0 0 0 1056816\n0.1 0.2 0.3 16711680\n")
    cloud = load_pcd(path)
    assert cloud.colors.tolist() == [[0x10, 0x20, 0x30], [255, 0, 0]]
    assert cloud.points.tolist() == np.array([[0, 0, 0], [0.1, 0.2, 0.3]], np.float32).tolist()
    path.write_text(head.format(n=1) + "1 2 3 255\n")
    assert load_pcd(path).points.shape == (1, 3)
    odd = np.array([[1e-7, -0.0, 0.1], [1 / 3, 123.456789, -2.5e-5]], np.float32)  # not all exact in 6 decimals
    save_pcd(path, PointCloud(odd))
    assert load_pcd(path).points.view(np.uint32).tolist() == odd.view(np.uint32).tolist()
    assert path.read_text().splitlines()[-2].split()[:3] == ["0.0000001", "-0.000000", "0.100000"]
