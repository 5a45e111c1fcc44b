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


# --------------------------------------------------------------------------- GLB structure, by hand


def _glb(gltf: object, binary: bytes, *, declared: int | None = None, trailing: bytes = b"") -> bytes:
    """A binary glTF built from the spec: 12-byte header (magic, version 2, total length), then
    chunks of (uint32 length, 4-byte type, payload)."""
    import struct

    body = json.dumps(gltf).encode()
    chunks = struct.pack("<I4s", len(body), b"JSON") + body + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    total = 12 + len(chunks) + len(trailing)
    return struct.pack("<4sII", b"glTF", 2, total if declared is None else declared) + chunks + trailing


def _problem(tmp_path, data: bytes):  # noqa: ANN001, ANN202
    from kpengine.io.mesh import _glb_problem

    path = tmp_path / "m.glb"
    path.write_bytes(data)
    return _glb_problem(path)


VIEWS = {"bufferViews": [{"buffer": 0, "byteOffset": 1000, "byteLength": 400}]}


def test_glb_problems_named_with_the_numbers(tmp_path):
    import struct

    ok = _glb(VIEWS, b"\0" * 1400)
    assert _problem(tmp_path, ok) is None  # the view ends exactly at the end of BIN
    assert _problem(tmp_path, b"glT") == "not a GLB file: it does not start with the 'glTF' header (3 bytes)"
    assert _problem(tmp_path, b"GLTF" + ok[4:]).startswith("not a GLB file")
    n = len(ok)
    assert _problem(tmp_path, _glb(VIEWS, b"\0" * 1400, declared=n + 2)) == (
        f"truncated GLB: the header declares {n + 2:,} bytes, the file has {n:,}"
    )
    # the BIN chunk declares 1,400 bytes but the file stops 2 short (header patched to the real length)
    cut = bytearray(ok[:-2])
    cut[8:12] = struct.pack("<I", n - 2)
    assert _problem(tmp_path, bytes(cut)) == "truncated GLB: the BIN chunk needs 1,400 bytes, 1,398 remain"
    # a JSON chunk that claims 5,000 bytes
    json_cut = bytearray(ok)
    json_cut[12:16] = struct.pack("<I", 5000)
    assert _problem(tmp_path, bytes(json_cut)) == f"truncated GLB: the JSON chunk needs 5,000 bytes, {n - 20:,} remain"
    short = _glb(VIEWS, b"\0" * 1399)
    assert _problem(tmp_path, short) == "truncated GLB: a buffer view needs 1,400 bytes, the BIN chunk has 1,399"
    no_offset = {"bufferViews": [{"byteLength": 1401}]}  # offset 0 and buffer 0 by default
    assert _problem(tmp_path, _glb(no_offset, b"\0" * 1400)).endswith("needs 1,401 bytes, the BIN chunk has 1,400")
    external = {"bufferViews": [{"buffer": 1, "byteOffset": 0, "byteLength": 9999}]}  # another buffer: not ours
    assert _problem(tmp_path, _glb(external, b"\0" * 8)) is None
    assert _problem(tmp_path, _glb([1, 2], b"")) is None  # JSON that is no object: no views to check
    assert _problem(tmp_path, _glb(VIEWS, b"\0" * 1400, trailing=b"\0" * 7)) is None  # < one chunk header: ignored
    # an empty chunk right at the end is a whole chunk header: read, and harmless
    assert _problem(tmp_path, _glb(VIEWS, b"\0" * 1400, trailing=struct.pack("<I4s", 0, b"XTRA"))) is None
    bad_json = bytearray(ok)
    at = 20 + bad_json[20:].index(b"{")
    bad_json[at] = ord("[")
    assert _problem(tmp_path, bytes(bad_json)).startswith("malformed GLB: its JSON chunk does not parse (")


def test_trimesh_formats_keep_vertices_colours_and_refuse_non_meshes(tmp_path):
    """PLY through trimesh with processing off: duplicated vertices stay (V 6, not 4) and in file
    order, vertex colours come back as (V, 3) uint8; a file of points only, or garbage, is a
    DataError naming it."""
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9], [200, 100, 50], [1, 2, 3]], np.uint8)
    path = tmp_path / "two.ply"
    save_mesh(path, Mesh(v, np.array([[0, 1, 2], [3, 5, 4]]), colors))
    back = load_mesh(path)
    assert back.vertices.tolist() == v.tolist() and back.faces.tolist() == [[0, 1, 2], [3, 5, 4]]
    assert back.vertex_colors is not None and back.vertex_colors.dtype == np.uint8
    assert back.vertex_colors.tolist() == colors.tolist()
    assert load_mesh(tmp_path / "two.ply").vertices.dtype == np.float64 and back.faces.dtype == np.int64
    plain = tmp_path / "plain.ply"
    save_mesh(plain, Mesh(v, np.array([[0, 1, 2]])))
    assert load_mesh(plain).vertex_colors is None
    points = tmp_path / "points.ply"
    points.write_bytes(trimesh.PointCloud(v).export(file_type="ply"))
    with pytest.raises(DataError, match="points.ply.*(no triangle mesh|0 faces)"):
        load_mesh(points)
    garbage = tmp_path / "garbage.ply"
    garbage.write_bytes(b"ply\nformat nonsense\n")
    with pytest.raises(DataError, match=r"garbage.ply: unreadable mesh \(") as err:
        load_mesh(garbage)
    assert "NoneType" not in str(err.value)  # the exception's own type is named
    short = tmp_path / "short.glb"
    short.write_bytes(_glb(VIEWS, b"\0" * 1399))
    with pytest.raises(DataError, match="short.glb: truncated GLB: a buffer view needs 1,400 bytes"):
        load_mesh(short)
    with pytest.raises(DataError, match="mesh file not found"):
        load_mesh(tmp_path / "nope.ply")


def test_mesh_refusals_name_the_file_and_say_what_is_wrong(tmp_path):
    """Each refusal is '<path>: <reason>' exactly: the path is what the user must go and fix."""
    cases = {
        "missing.obj": (None, "mesh file not found"),
        "empty.obj": ("", "mesh file is empty"),
        "one_byte.obj": ("\n", "mesh has 0 vertices and 0 faces"),
        "no_faces.obj": ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "mesh has 3 vertices and 0 faces"),
        "inf.obj": ("v 0 0 inf\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "mesh has NaN or infinite vertex coordinates"),
        "low.obj": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 -4\n", "face indices out of range [0, 3) (min -1, max 1)"),
    }
    for name, (text, reason) in cases.items():
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(DataError) as err:
            load_mesh(path)
        assert str(err.value) == f"{path}: {reason}", name
    one = tmp_path / "one.obj"
    one.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert load_mesh(one).faces.tolist() == [[0, 1, 2]]  # a single vertex row / face is enough


def test_obj_is_written_by_our_writer_in_file_order_whatever_the_suffix_case(tmp_path):
    mesh = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.5]]), np.array([[3, 1, 2], [0, 1, 2]]))
    for name in ("m.obj", "M.OBJ"):
        save_mesh(tmp_path / name, mesh)
        text = (tmp_path / name).read_text()
        assert text == "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0.5\nf 4 2 3\nf 1 2 3\n", name
        assert load_mesh(tmp_path / name).faces.tolist() == [[3, 1, 2], [0, 1, 2]]


def test_glb_edge_cases_of_the_header_and_chunk_walk(tmp_path):
    """Boundaries of the walk, each worked out from the layout: a bare 12-byte header is a GLB
    with nothing in it; lengths are unsigned (a huge one is a truncation, not a negative); a
    chunk header that ends exactly at the end of the file is read; a chunk type that is not text
    is shown with a replacement character, and a name is stripped only of NULs and spaces."""
    import struct

    assert _problem(tmp_path, struct.pack("<4sII", b"glTF", 2, 12)) is None
    assert _problem(tmp_path, struct.pack("<4sII", b"glTF", 2, 0xFFFFFFF0)).startswith(
        "truncated GLB: the header declares 4,294,967,280 bytes, the file has 12"
    )
    ok = _glb(VIEWS, b"\0" * 1400)
    huge = bytearray(ok)
    huge[12:16] = struct.pack("<I", 0xFFFFFFFF)
    assert "the JSON chunk needs 4,294,967,295 bytes" in _problem(tmp_path, bytes(huge))
    for kind, name in ((b"XTRA", "XTRA"), (b"\xff\0\0\0", "\ufffd")):
        last = ok + struct.pack("<I4s", 5, kind)  # the last 8 bytes: a chunk header whose payload is missing
        patched = bytearray(last)
        patched[8:12] = struct.pack("<I", len(last))
        assert _problem(tmp_path, bytes(patched)) == f"truncated GLB: the {name} chunk needs 5 bytes, 0 remain"
    bin_only = struct.pack("<I4s", 8, b"BIN\0") + b"\0" * 8
    assert _problem(tmp_path, struct.pack("<4sII", b"glTF", 2, 12 + len(bin_only)) + bin_only) is None  # no JSON
    assert _problem(tmp_path, _glb({"asset": {"version": "2.0"}}, b"")) is None  # no buffer views
    no_length = {"bufferViews": [{"byteOffset": 8}]}  # byteLength missing: the view ends at its offset
    assert _problem(tmp_path, _glb(no_length, b"\0" * 8)) is None
    assert _problem(tmp_path, _glb(no_length, b"\0" * 7)).endswith("needs 8 bytes, the BIN chunk has 7")


def test_registered_mesh_formats_are_read_and_written_by_suffix(tmp_path):
    """A format added at run time: the suffix is matched without case and with or without its
    dot; a reader alone leaves the writer as it was."""
    from kpengine.io import mesh as io_mesh

    def write(path, m):  # noqa: ANN001, ANN202 - a toy format: the arrays as JSON
        path.write_text(json.dumps({"v": m.vertices.tolist(), "f": m.faces.tolist()}))

    def read(path):  # noqa: ANN001, ANN202
        d = json.loads(path.read_text())
        return Mesh(np.array(d["v"], float), np.array(d["f"], np.int64))

    saved = dict(io_mesh.READERS), dict(io_mesh.WRITERS)
    try:
        io_mesh.register_mesh_format("KPM", read, write)
        assert ".kpm" in io_mesh.READERS and ".kpm" in io_mesh.WRITERS
        mesh = Mesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float), np.array([[0, 1, 2]]))
        save_mesh(tmp_path / "a.Kpm", mesh)
        assert json.loads((tmp_path / "a.Kpm").read_text())["f"] == [[0, 1, 2]]
        assert load_mesh(tmp_path / "a.Kpm").vertices.tolist() == mesh.vertices.tolist()
        io_mesh.register_mesh_format(".KPM", reader=read)  # a reader only: the writer stays
        assert io_mesh.WRITERS[".kpm"] is write and io_mesh.READERS[".kpm"] is read
        io_mesh.register_mesh_format("kpx", writer=write)
        assert ".kpx" in io_mesh.WRITERS and ".kpx" not in io_mesh.READERS
    finally:
        io_mesh.READERS.clear(), io_mesh.READERS.update(saved[0])
        io_mesh.WRITERS.clear(), io_mesh.WRITERS.update(saved[1])


def test_obj_vertex_w_out_of_range_by_one_and_malformed_vertices(tmp_path):
    """A vertex's optional 4th (w) coordinate is not a coordinate; a face naming vertex V of V
    (1-based V + 1) is out of range by one; a vertex line with two numbers is malformed."""
    w = tmp_path / "w.obj"
    w.write_text("v 0 0 0 1\nv 1 0 0 1\nv 0 1 0 1\nf 1 2 3\n")
    assert load_mesh(w).vertices.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    one_over = tmp_path / "over.obj"
    one_over.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n")
    with pytest.raises(DataError) as err:
        load_mesh(one_over)
    assert str(err.value) == f"{one_over}: face indices out of range [0, 3) (min 0, max 3)"
    short = tmp_path / "short.obj"
    short.write_text("v 0 0 0\nv 1 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(DataError) as err:
        load_mesh(short)
    assert str(err.value).startswith(f"{short}: malformed vertex line in OBJ (")
