import json

import numpy as np
import pytest
import trimesh

from kpengine.errors import DataError
from kpengine.geometry.sampling import barycentric_points
from kpengine.io.mesh import Mesh, load_mesh, save_mesh


def test_shapenet_obj_face_order_rebuilds_keypoints(keypointnet):
    """mesh_info.face_index indexes OBJ triangles in file order; barycentrics rebuild xyz."""
    annotations = {m["model_id"]: m for m in json.loads((keypointnet / "annotations" / "bathtub.json").read_text())}
    checked = 0
    for folder in sorted((keypointnet / "meshes" / "02808440").iterdir()):
        if folder.name not in annotations:
            continue
        mesh = load_mesh(folder / "models" / "model_normalized.obj")
        kps = annotations[folder.name]["keypoints"]
        xyz = barycentric_points(
            mesh,
            np.array([k["mesh_info"]["face_index"] for k in kps]),
            np.array([k["mesh_info"]["face_uv"] for k in kps]),
        )
        np.testing.assert_allclose(xyz, [k["xyz"] for k in kps], atol=1e-6)
        checked += 1
    assert checked == 9


@pytest.mark.parametrize("suffix", [".obj", ".ply", ".off", ".glb", ".stl"])
def test_round_trip_formats(tmp_path, suffix):
    box = trimesh.creation.box()
    mesh = Mesh(np.asarray(box.vertices), np.asarray(box.faces))
    path = tmp_path / f"box{suffix}"
    save_mesh(path, mesh)
    back = load_mesh(path)
    assert len(back.faces) == 12
    np.testing.assert_allclose(
        np.sort(back.vertices[back.faces].reshape(-1, 3), axis=0),
        np.sort(mesh.vertices[mesh.faces].reshape(-1, 3), axis=0),
        atol=1e-6,
    )


def test_obj_polygons_are_fanned_and_negative_indices_resolved(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf -4/1/1 -3/2/1 -2/3/1 -1/4/1\n")
    mesh = load_mesh(path)
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_truncated_glb_empty_and_nan_meshes_are_refused(tmp_path):
    glb = tmp_path / "mug.glb"
    save_mesh(
        glb, Mesh(np.asarray(trimesh.creation.icosphere().vertices), np.asarray(trimesh.creation.icosphere().faces))
    )
    data = glb.read_bytes()
    glb.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="mug.glb"):
        load_mesh(glb)
    empty = tmp_path / "empty.obj"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_mesh(empty)
    nan = tmp_path / "nan.obj"
    nan.write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(DataError, match="NaN"):
        load_mesh(nan)
    oob = tmp_path / "oob.obj"
    oob.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(DataError, match="out of range"):
        load_mesh(oob)
