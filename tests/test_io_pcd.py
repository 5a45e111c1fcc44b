import struct

import numpy as np
import pytest

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
