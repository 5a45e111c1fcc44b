"""Reading photos and masks: conversions with warnings, refusals naming the file; atomic writes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpengine.errors import DataError
from kpengine.io.image import check_object_inside, load_image, load_mask, save_image


def test_rgb_grey_and_palette_load_without_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)
        g = load_image(tmp_path / "g.png")
        p = load_image(tmp_path / "p.png")
    assert g.shape == (5, 7, 3) and (g == rgb[..., :1]).all()
    assert p.shape == (5, 7, 3) and p.dtype == np.uint8
    assert not caplog.records


def test_cmyk_16bit_and_alpha_convert_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Image.new("CMYK", (4, 3), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red ink
    Image.fromarray(np.full((3, 4), 65535, np.uint16)).save(tmp_path / "d.png")
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 200, 0
    Image.fromarray(rgba).save(tmp_path / "e.png")
    with caplog.at_level(logging.WARNING):
        c = load_image(tmp_path / "c.jpg")
        d = load_image(tmp_path / "d.png")
        e = load_image(tmp_path / "e.png")
    assert c.shape == (3, 4, 3) and c[..., 0].min() > 200 and c[..., 1].max() < 60
    assert (d == 255).all()
    assert (e[..., 1] == 200).all()
    text = " ".join(r.getMessage() for r in caplog.records)
    assert (
        "c.jpg" in text
        and "CMYK" in text
        and "d.png" in text
        and "8 bits" in text
        and "e.png" in text
        and "alpha" in text
    )


def test_refusals_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"junk\.png.*not a readable image"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(DataError, match="not found"):
        load_image(tmp_path / "missing.png")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big\.png.*64x64.*at most"):
        load_image(tmp_path / "big.png", max_pixels=1000)
    data = (tmp_path / "big.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png"):
        load_image(tmp_path / "cut.png")
    Image.fromarray(np.zeros((3, 3), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif.*mode 'F'"):
        load_image(tmp_path / "f.tif")


def test_masks_size_empty_alpha_and_border(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = np.zeros((6, 8), np.uint8)
    m[2:4, 3:6] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png", expected_shape=(6, 8))
    assert mask.sum() == 6 and mask[2, 3]
    with pytest.raises(DataError, match=r"m\.png.*8x6 but its image is 9x6"):
        load_mask(tmp_path / "m.png", expected_shape=(6, 9))
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "z.png")
    with pytest.raises(DataError, match=r"z\.png.*empty"):
        load_mask(tmp_path / "z.png")
    rgba = np.full((6, 8, 4), 255, np.uint8)
    rgba[..., 3] = 0
    rgba[1, 1, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert load_mask(tmp_path / "a.png").sum() == 1  # alpha decides, not the (white) colour
    assert check_object_inside(mask)
    edge = mask.copy()
    edge[0, 0] = True
    with caplog.at_level(logging.WARNING):
        assert not check_object_inside(edge, "photo.jpg")
    assert "photo.jpg" in caplog.text and "border" in caplog.text
    with pytest.raises(DataError, match="border"):
        check_object_inside(edge, "photo.jpg", strict=True)


def test_save_image_round_trip_and_refusal(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    save_image(tmp_path / "x" / "a.png", rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "x" / "a.png"), rgb)
    depth = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    save_image(tmp_path / "d.png", depth)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d.png")), depth)
    save_image(tmp_path / "m.png", rgb[..., 0] > 100)
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), rgb[..., 0] > 100)
    with pytest.raises(DataError, match="shape"):
        save_image(tmp_path / "bad.png", np.zeros((4, 5, 2), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "m.png", "x"]  # no temporary left behind
