"""Image data types: validation, and crops/resizes checked against rendering with the moved camera."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from kpengine.errors import DataError
from kpengine.image.types import (
    ImageSample,
    Keypoints2D,
    centre_on_object,
    crop,
    crop_and_resize,
    mask_box,
    resize,
    square_box,
)
from kpengine.io.mesh import Mesh
from kpengine.render.cameras import Intrinsics, Viewpoint, make_camera
from kpengine.render.project import project_points
from kpengine.render.raycast import MeshRenderer


@pytest.fixture(scope="module")
def scene():
    """A box off-centre in a 64x48 image, rendered with Embree, with its 8 corners as keypoints."""
    box = trimesh.creation.box(extents=(0.5, 0.3, 0.4))
    renderer = MeshRenderer(Mesh(box.vertices, box.faces))
    cam = make_camera(Viewpoint(30.0, 20.0, 2.2), Intrinsics(60.0, 60.0, 38.0, 20.0, 64, 48))
    r = renderer.render(cam)
    corners = np.asarray(box.vertices)
    proj = project_points(corners, cam, r.depth)
    kps = Keypoints2D(proj.uv, proj.visible, np.arange(8), tuple(f"c{i}" for i in range(8)))
    sample = ImageSample(r.color, r.mask, cam, kps, r.depth, r.normals, r.index, name="box")
    return renderer, corners, sample


def test_validation_names_what_is_wrong() -> None:
    img = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(DataError, match="uint8"):
        ImageSample(img.astype(np.float32))
    with pytest.raises(DataError, match=r"mask is \(5, 4\)"):
        ImageSample(img, mask=np.zeros((5, 4), bool))
    with pytest.raises(DataError, match="bool"):
        ImageSample(img, mask=np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError, match="camera is 6x4, the image 5x4"):
        ImageSample(img, camera=make_camera(Viewpoint(0, 0, 2), Intrinsics.from_fov(6, 4)))
    with pytest.raises(DataError, match="3 rows"):
        Keypoints2D(np.zeros((3, 2)), np.ones(2, bool), np.arange(3))
    with pytest.raises(DataError, match="integers"):
        Keypoints2D(np.zeros((1, 2)), np.ones(1, bool), np.array([0.5]))
    with pytest.raises(DataError, match="no object mask"):
        ImageSample(img, mask=np.zeros((4, 5), bool)).bbox()


def test_keypoints_without_projection_are_never_visible_and_survive_json() -> None:
    k = Keypoints2D(np.array([[1.0, 2.0], [np.nan, np.nan]]), np.array([True, True]), np.array([3, 7]), ("a", "b"))
    assert k.visible.tolist() == [True, False]
    back = Keypoints2D.from_json(k.to_json())
    np.testing.assert_array_equal(back.uv, k.uv)
    assert back.visible.tolist() == [True, False] and back.semantic_ids.tolist() == [3, 7] and back.names == ("a", "b")
    assert k.select(np.array([False, True])).names == ("b",)
    assert len(Keypoints2D(np.zeros((0, 2)), np.zeros(0, bool), np.zeros(0, np.int64))) == 0


def test_integer_crop_equals_rendering_the_cropped_camera(scene) -> None:
    renderer, corners, sample = scene
    box = (10, -5, 50, 30)  # reaches above the image: padded
    out = crop(sample, box, fill=(9, 9, 9))
    assert out.image.shape == (35, 40, 3) and out.camera.width == 40 and out.camera.height == 35
    direct = renderer.render(out.camera)
    # same rays for the same pixels: the mask is identical, depth too
    np.testing.assert_array_equal(out.mask, direct.mask)
    np.testing.assert_allclose(out.depth, direct.depth, atol=1e-6)
    np.testing.assert_array_equal(out.index, direct.index)
    assert (out.image[:5] == 9).all() and (out.index[:5] == -1).all()
    # keypoints move with the camera
    uv, _ = out.camera.project(corners)
    np.testing.assert_allclose(out.keypoints.uv, uv, atol=1e-9)
    np.testing.assert_allclose(out.keypoints.uv, sample.keypoints.uv - [10, -5], atol=1e-9)


def test_resize_keeps_camera_keypoints_and_mask_consistent(scene) -> None:
    renderer, corners, sample = scene
    for size in [(32, 24), (128, 96), (50, 70)]:
        out = resize(sample, size)
        assert out.image.shape == (size[1], size[0], 3)
        uv, _ = out.camera.project(corners)
        np.testing.assert_allclose(out.keypoints.uv, uv, atol=1e-9)
        direct = renderer.render(out.camera)
        iou = (out.mask & direct.mask).sum() / (out.mask | direct.mask).sum()
        assert iou > 0.9, (size, iou)
        both = out.mask & direct.mask
        assert np.median(np.abs(out.depth[both] - direct.depth[both])) < 0.02


def test_keypoints_leaving_the_image_become_not_visible(scene) -> None:
    _, _, sample = scene
    x0, y0, x1, y1 = sample.bbox()
    out = crop(sample, (x0 - 3, y0 - 3, (x0 + x1) // 2, y1 + 3))  # the left half of the object
    was = sample.keypoints.visible
    inside = out.keypoints.uv[:, 0] < out.width - 0.5
    assert (out.keypoints.uv[was, 0] > 0).all() and (out.keypoints.uv[was, 1] > 0).all()
    assert (out.keypoints.uv[was, 1] < out.height - 1).all()
    assert was.any() and (~inside & was).any()
    np.testing.assert_array_equal(out.keypoints.visible, was & inside)


def test_centre_on_object_centres_and_scales(scene) -> None:
    _, _, sample = scene
    out = centre_on_object(sample, 96, margin=0.1)
    assert out.image.shape == (96, 96, 3)
    x0, y0, x1, y1 = mask_box(out.mask)
    assert max(x1 - x0, y1 - y0) == pytest.approx(96 / 1.2, abs=2)
    assert (x0 + x1) / 2 == pytest.approx(48, abs=1.5) or (y0 + y1) / 2 == pytest.approx(48, abs=1.5)
    assert (x0 + x1) / 2 == pytest.approx(48, abs=(96 - (x1 - x0)) / 2 + 1)
    # the camera still looks at the object: keypoints projected with it match the moved ones
    uv, _ = out.camera.project(scene[1])
    np.testing.assert_allclose(out.keypoints.uv, uv, atol=1e-9)


def test_square_box_and_bad_crops() -> None:
    assert square_box((10, 20, 30, 60), margin=0.0) == (0, 20, 40, 60)
    x0, y0, x1, y1 = square_box((10, 20, 30, 60), margin=0.25)
    assert x1 - x0 == y1 - y0 == 60 and (x0 + x1) / 2 == 20 and (y0 + y1) / 2 == 40
    img = ImageSample(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="empty"):
        crop(img, (2, 2, 2, 3))
    with pytest.raises(DataError, match="positive"):
        crop_and_resize(img, (0, 0, 2, 2), (0, 3))
