import struct

import numpy as np
import pytest

from conftest import require_module
from kpengine.errors import DataError
from kpengine.io.pcd import PointCloud, _lzf_decompress, load_pcd, save_pcd

HEADER = (
    "VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F {rgbtype}\nCOUNT 1 1 1 1\n"
    "WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {kind}\n"
)


def test_real_pcd_reads_points_and_packed_rgb(keypointnet):
    path = next((keypointnet / "pcds" / "02808440").glob("*.pcd"))
    cloud = load_pcd(path)
    assert cloud.points.shape == (2048, 3) and cloud.points.dtype == np.float32
    first = path.read_text().split("DATA ascii\n")[1].splitlines()[0].split()
    np.testing.assert_allclose(cloud.points[0], [float(v) for v in first[:3]], rtol=1e-6)
    packed = int(first[3])
    assert tuple(cloud.colors[0]) == ((packed >> 16) & 255, (packed >> 8) & 255, packed & 255)


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip_is_exact(tmp_path, binary):
    rng = np.random.default_rng(0)
    cloud = PointCloud(rng.normal(size=(100, 3)).astype(np.float32), rng.integers(0, 256, (100, 3)).astype(np.uint8))
    path = tmp_path / "c.pcd"
    save_pcd(path, cloud, binary=binary)
    back = load_pcd(path)
    np.testing.assert_array_equal(back.points, cloud.points)
    np.testing.assert_array_equal(back.colors, cloud.colors)


def test_rgb_stored_as_float_bits_is_unpacked(tmp_path):
    packed = np.array([0x102030], dtype=np.uint32)
    rec = struct.pack("<fffI", 1.0, 2.0, 3.0, packed[0])
    path = tmp_path / "f.pcd"
    path.write_bytes(HEADER.format(rgbtype="F", n=1, kind="binary").encode() + rec)
    cloud = load_pcd(path)
    assert tuple(cloud.colors[0]) == (0x10, 0x20, 0x30)


def test_binary_compressed_with_back_references(tmp_path):
    assert _lzf_decompress(bytes([2]) + b"abc" + bytes([4 << 5, 2]), 9) == b"abcabcabc"
    xyz = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    columns = xyz.T.astype("<f4").tobytes() + np.array([0xFF0000, 0x00FF00], "<u4").tobytes()
    literal = b"".join(bytes([len(c) - 1]) + c for c in (columns[i : i + 32] for i in range(0, len(columns), 32)))
    path = tmp_path / "c.pcd"
    path.write_bytes(
        HEADER.format(rgbtype="U", n=2, kind="binary_compressed").encode()
        + struct.pack("<II", len(literal), len(columns))
        + literal
    )
    cloud = load_pcd(path)
    np.testing.assert_array_equal(cloud.points, xyz)
    assert cloud.colors.tolist() == [[255, 0, 0], [0, 255, 0]]


@pytest.mark.parametrize(
    "body, message",
    [
        ("VERSION .7\nFIELDS x y z\n", "no DATA line"),
        (HEADER.format(rgbtype="U", n=3, kind="ascii") + "0 0 0 1\n", "expected 3 rows"),
        (HEADER.format(rgbtype="U", n=1, kind="ascii") + "0 nan 0 1\n", "NaN or infinite"),
        (HEADER.format(rgbtype="U", n=4, kind="binary") + "abc", "binary body"),
    ],
)
def test_bad_pcd_names_the_file(tmp_path, body, message):
    path = tmp_path / "bad.pcd"
    path.write_text(body)
    with pytest.raises(DataError) as err:
        load_pcd(path)
    assert str(path) in str(err.value) and message in str(err.value)


def _padded_cloud(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """A cloud as PCL writes one with a padding field: ``x y z _ rgb``, ``_`` of COUNT 3.

    The coordinates repeat a short pattern, so an LZF encoder finds long matches far back."""
    i = np.arange(n)
    xyz = np.stack([(i % 7) * 0.125, (i % 5) * 0.25, (i % 3) * 0.5], axis=1).astype("<f4")
    rgb = ((i % 4) * 0x3F0000 + 0x00AA11).astype("<u4")
    pad = np.full((n, 3), 0xEE, "u1")
    header = (
        "VERSION .7\nFIELDS x y z _ rgb\nSIZE 4 4 4 1 4\nTYPE F F F U U\nCOUNT 1 1 1 3 1\n"
        f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
    )
    return xyz, rgb, pad, header


def test_binary_with_a_padding_field_of_count_three(tmp_path):
    xyz, rgb, pad, header = _padded_cloud(50)
    records = b"".join(  # PCL's binary body: one packed record per point (array of structures)
        struct.pack("<fff", *p) + bytes(q) + struct.pack("<I", c) for p, q, c in zip(xyz.tolist(), pad, rgb.tolist())
    )
    path = tmp_path / "pad.pcd"
    path.write_bytes((header + "DATA binary\n").encode() + records)
    cloud = load_pcd(path)
    np.testing.assert_array_equal(cloud.points, xyz)
    np.testing.assert_array_equal(cloud.colors[:, 0], (rgb >> 16) & 255)
    np.testing.assert_array_equal(cloud.colors[:, 2], rgb & 255)


@pytest.mark.parametrize("kind", ["binary", "binary_compressed"])
def test_two_padding_fields_named_alike(tmp_path, kind):
    """PCL names every padding field ``_``; two of them (x _ y z _) must not break the reader."""
    n = 6
    xyz = np.arange(3 * n, dtype="<f4").reshape(n, 3) / 8
    pad1, pad2 = np.full(n, 0x11, "u1"), np.full(n, 0x22, "u1")
    header = (
        "VERSION .7\nFIELDS x _ y z _\nSIZE 4 1 4 4 1\nTYPE F U F F U\nCOUNT 1 1 1 1 1\n"
        f"WIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA {kind}\n"
    )
    if kind == "binary":
        body = b"".join(
            struct.pack("<f", p[0]) + bytes([a]) + struct.pack("<ff", p[1], p[2]) + bytes([b])
            for p, a, b in zip(xyz.tolist(), pad1, pad2)
        )
    else:  # field by field; stored as LZF literal runs of at most 32 bytes (control byte = length - 1)
        planes = xyz[:, 0].tobytes() + pad1.tobytes() + xyz[:, 1].tobytes() + xyz[:, 2].tobytes() + pad2.tobytes()
        lit = b"".join(bytes([len(c) - 1]) + c for c in (planes[k : k + 32] for k in range(0, len(planes), 32)))
        body = struct.pack("<II", len(lit), len(planes)) + lit
    path = tmp_path / "pads.pcd"
    path.write_bytes(header.encode() + body)
    np.testing.assert_array_equal(load_pcd(path).points, xyz)


@pytest.mark.parametrize("n", [64, 700])
def test_binary_compressed_written_by_liblzf(tmp_path, n):
    """The compressed body made by the reference LZF encoder (liblzf, through python-lzf), laid out
    field by field as PCL's writer does (all x, all y, all z, the padding, all rgb). At 700 points
    the encoder emits long back-references (length byte beyond 7, offsets past 256 bytes)."""
    lzf = require_module("lzf")
    xyz, rgb, pad, header = _padded_cloud(n)
    planes = xyz[:, 0].tobytes() + xyz[:, 1].tobytes() + xyz[:, 2].tobytes() + pad.tobytes() + rgb.tobytes()
    packed = lzf.compress(planes)
    assert len(packed) < len(planes) / 4  # long matches far back were used
    path = tmp_path / "c.pcd"
    path.write_bytes(
        (header + "DATA binary_compressed\n").encode() + struct.pack("<II", len(packed), len(planes)) + packed
    )
    cloud = load_pcd(path)
    np.testing.assert_array_equal(cloud.points, xyz)
    np.testing.assert_array_equal(cloud.colors[:, 0], (rgb >> 16) & 255)
    np.testing.assert_array_equal(cloud.colors[:, 1], (rgb >> 8) & 255)


def test_lzf_round_trips_the_reference_encoder_on_varied_data():
    lzf = require_module("lzf")
    rng = np.random.default_rng(0)
    samples = [
        b"a" * 5000,  # one run: back-reference of distance 1 overlapping itself
        bytes(range(256)) * 40,  # period 256: offsets with the high bits set
        rng.integers(0, 4, 20000, dtype=np.uint8).tobytes(),  # short random matches everywhere
        rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() * 3,  # matches 3,000 bytes back (LZF reaches 8,192)
        b"header" + rng.integers(0, 256, 100, dtype=np.uint8).tobytes() + b"header" * 50,
    ]
    for data in samples:
        packed = lzf.compress(data)
        assert _lzf_decompress(packed, len(data)) == data


def test_header_defaults_and_an_organised_cloud(tmp_path):
    """SIZE, TYPE and COUNT default to 4, F and 1 per field; without POINTS the count is WIDTH x
    HEIGHT (an organised 2 x 2 cloud); comments and blank lines are skipped."""
    path = tmp_path / "org.pcd"
    path.write_text("# .PCD v0.7\n\nFIELDS x y z\nWIDTH 2\nHEIGHT 2\nDATA ascii\n0 0 0\n1 0 0\n0 1 0\n0.5 0.25 -2\n")
    cloud = load_pcd(path)
    assert cloud.colors is None
    np.testing.assert_array_equal(cloud.points, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.5, 0.25, -2]])


def test_rgba_field_is_read_as_colour(tmp_path):
    path = tmp_path / "rgba.pcd"
    rec = struct.pack("<fffI", 0.0, 1.0, 2.0, 0xFF123456)
    head = "VERSION .7\nFIELDS x y z rgba\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nWIDTH 1\nPOINTS 1\nDATA binary\n"
    path.write_bytes(head.encode() + rec)
    assert load_pcd(path).colors.tolist() == [[0x12, 0x34, 0x56]]


@pytest.mark.parametrize(
    "head, message",
    [
        ("FIELDS x y\nSIZE 4 4\nTYPE F F\nCOUNT 1 1\nWIDTH 1\nPOINTS 1\nDATA ascii\n", "no x y z fields"),
        (
            "FIELDS x y z\nSIZE 4 4 2\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nPOINTS 1\nDATA ascii\n",
            "unsupported PCD field type F2",
        ),
        ("FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nPOINTS 1\nDATA packed\n", "unknown DATA kind"),
        ("FIELDS x y z\nSIZE four 4 4\nWIDTH 1\nPOINTS 1\nDATA ascii\n", "malformed PCD header"),
        ("SIZE 4 4 4\nWIDTH 1\nPOINTS 1\nDATA ascii\n", "malformed PCD header"),  # no FIELDS
    ],
)
def test_bad_headers_name_the_file(tmp_path, head, message):
    path = tmp_path / "bad.pcd"
    path.write_text(head + "0 0 0\n")
    with pytest.raises(DataError) as err:
        load_pcd(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_pcd(tmp_path / "nope.pcd")


def test_saved_header_and_body_written_out_by_hand(tmp_path):
    """The exact bytes PCL's ASCII and binary layouts give for two points, written out here:
    coordinates with six decimals where that reads back to the same float32 (0.1 does), the
    shortest exact text where it does not (1e-7 is not 0.000000); no colours = white, packed
    as the unsigned int 0xFFFFFF; given colours packed r << 16 | g << 8 | b."""
    pts = np.array([[0.5, -1.25, 2.0], [0.1, 0.0, 1e-7]], np.float32)
    head = (
        "VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\n"
        "WIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA {}\n"
    )
    save_pcd(tmp_path / "a.pcd", PointCloud(pts, None))
    assert (tmp_path / "a.pcd").read_text() == head.format("ascii") + (
        "0.500000 -1.250000 2.000000 16777215\n0.100000 0.000000 0.0000001 16777215\n"
    )
    colors = np.array([[1, 2, 3], [255, 0, 128]], np.uint8)
    save_pcd(tmp_path / "b.pcd", PointCloud(pts, colors), binary=True)
    body = b"".join(
        struct.pack("<fffI", *map(float, p), (int(c[0]) << 16) | (int(c[1]) << 8) | int(c[2]))
        for p, c in zip(pts, colors)
    )
    assert (tmp_path / "b.pcd").read_bytes() == head.format("binary").encode() + body
    assert struct.unpack("<I", body[12:16])[0] == 66051  # 1 * 65536 + 2 * 256 + 3


def _ascii_pcd(tmp_path, head: str, rows: str, name: str = "h.pcd"):  # noqa: ANN001, ANN202
    path = tmp_path / name
    path.write_text(head + rows)
    return path


def test_header_defaults_and_refusals_by_hand(tmp_path):
    """Header rules from the PCD spec, each on a file written here: a blank first line and
    comments are skipped; TYPE defaults to F; POINTS wins over WIDTH x HEIGHT; POINTS 0 is an
    empty cloud; the refusals name the file and say what is wrong."""
    fields = "FIELDS x y z\nSIZE 4 4 4\nCOUNT 1 1 1\n"
    cloud = load_pcd(_ascii_pcd(tmp_path, "\n# a comment\n" + fields + "WIDTH 3\nHEIGHT 1\nPOINTS 2\nDATA ascii\n",
                                "1 2 3\n4 5 6.5\n"))  # fmt: skip
    assert cloud.points.tolist() == [[1, 2, 3], [4, 5, 6.5]] and cloud.points.dtype == np.float32
    empty = load_pcd(_ascii_pcd(tmp_path, fields + "TYPE F F F\nWIDTH 0\nHEIGHT 1\nPOINTS 0\nDATA ascii\n", ""))
    assert empty.points.shape == (0, 3)
    path = _ascii_pcd(
        tmp_path, "FIELDS a b c\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 1\nPOINTS 1\nDATA ascii\n", "1 2 3\n"
    )
    with pytest.raises(DataError) as err:
        load_pcd(path)
    assert str(err.value) == f"{path}: PCD has no x y z fields (fields: a b c)"
    path = _ascii_pcd(tmp_path, fields + "TYPE F F F\nWIDTH 3\nPOINTS 3\nDATA ascii\n", "1 2 3\nnan 0 0\n0 inf 1\n")
    with pytest.raises(DataError) as err:
        load_pcd(path)
    assert str(err.value) == f"{path}: 2 points have NaN or infinite coordinates"
    path = _ascii_pcd(tmp_path, fields + "TYPE F F F\nWIDTH 1\nPOINTS 1\n", "")
    with pytest.raises(DataError) as err:
        load_pcd(path)
    assert str(err.value) == f"{path}: PCD header has no DATA line (file truncated?)"
    with pytest.raises(DataError) as err:
        load_pcd(tmp_path / "none.pcd")
    assert str(err.value) == f"{tmp_path / 'none.pcd'}: PCD file not found"
