"""The shape space of joint shape-image retrieval: Sammon's stress, classical MDS, light-field HoG
distances and the shape-space file format."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from kpengine.errors import DataError
from kpengine.image.retrieval.sammon import classical_mds, floored, sammon, sammon_stress, sammon_stress_torch
from kpengine.io.shapespace import ShapeSpace, load_shape_space, save_shape_space


def _pairwise(y: np.ndarray) -> np.ndarray:
    return np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1))


# ---------------------------------------------------------------------------------------------- Sammon


def test_sammon_stress_hand_computed() -> None:
    # points (0,0), (1,0), (0,1): d12 = 1, d13 = 1, d23 = sqrt 2; targets D12 = 2, D13 = 1, D23 = sqrt 2.
    # Only pair (1,2) is off: E = (2 - 1)^2 / 2 / (2 + 1 + sqrt 2) = 0.5 / (3 + sqrt 2).
    # Its gradient: w = (D - d) / (D d) = 1/2; dE/dy1 = -2/c * w * (y1 - y2) = (1/c, 0), dE/dy2 = -(that).
    y = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    r2 = math.sqrt(2.0)
    target = np.array([[0, 2, 1], [2, 0, r2], [1, r2, 0]], np.float64)
    c = 3.0 + r2
    stress, grad = sammon_stress(y, target)
    assert stress == pytest.approx(0.5 / c, rel=1e-12)
    np.testing.assert_allclose(grad, [[1 / c, 0.0], [-1 / c, 0.0], [0.0, 0.0]], atol=1e-12)
    t = sammon_stress_torch(torch.tensor(y), floored(target))
    assert float(t) == pytest.approx(0.5 / c, rel=1e-12)


def test_sammon_gradient_matches_finite_differences_and_autograd() -> None:
    rng = np.random.default_rng(3)
    pts = rng.normal(size=(7, 4))
    target = _pairwise(pts) * rng.uniform(0.7, 1.3, (7, 7))
    target = (target + target.T) / 2
    np.fill_diagonal(target, 0)
    y = rng.normal(size=(7, 3))
    _, grad = sammon_stress(y, target)
    eps = 1e-6
    fd = np.zeros_like(y)
    for i in range(y.shape[0]):
        for k in range(y.shape[1]):
            up, dn = y.copy(), y.copy()
            up[i, k] += eps
            dn[i, k] -= eps
            fd[i, k] = (sammon_stress(up, target)[0] - sammon_stress(dn, target)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-9)
    yt = torch.tensor(y, requires_grad=True)
    sammon_stress_torch(yt, floored(target)).backward()
    np.testing.assert_allclose(yt.grad.numpy(), grad, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda c: sammon_stress_torch(c, floored(target)), (torch.tensor(y, requires_grad=True),)
    )


def test_zero_targets_and_coincident_points_stay_finite() -> None:
    target = np.array([[0, 0, 1], [0, 0, 1], [1, 1, 0]], np.float64)  # a duplicate pair
    y = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])  # placed on one point
    stress, grad = sammon_stress(y, target)
    assert np.isfinite(stress) and np.isfinite(grad).all()
    t = 1e-6 * 2 / 3  # the floor: 1e-6 x the mean target distance (0, 1, 1)
    assert stress == pytest.approx((t - 0) ** 2 / t / (t + 2), rel=1e-9)


def test_stress_at_a_small_scale_and_with_a_chosen_floor_by_hand() -> None:
    """Sammon's stress is scale-free: the hand case of test_sammon_stress_hand_computed shrunk 100x
    keeps its stress and its gradient grows 100x (every distance below 1, so no rule may treat
    distances under 1 differently). A floor of 0.75: the zero target of a duplicate pair (targets
    0, 2, 2; mean 4/3) is raised to 0.75 x 4/3 = 1; at (0,0), (1,0), (0,2) only the pair (2,3) is
    off: E = (2 - sqrt 5)^2 / 2 / (1 + 2 + 2)."""
    y = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    r2 = math.sqrt(2.0)
    target = np.array([[0, 2, 1], [2, 0, r2], [1, r2, 0]], np.float64)
    c = 3.0 + r2
    stress, grad = sammon_stress(0.01 * y, 0.01 * target)
    assert stress == pytest.approx(0.5 / c, rel=1e-9)
    np.testing.assert_allclose(grad, 100 * np.array([[1 / c, 0.0], [-1 / c, 0.0], [0.0, 0.0]]), rtol=1e-9, atol=1e-9)
    yt = torch.tensor(0.01 * y, requires_grad=True)
    sammon_stress_torch(yt, floored(0.01 * target)).backward()
    np.testing.assert_allclose(yt.grad.numpy(), grad, rtol=1e-9, atol=1e-9)
    dup = np.array([[0, 0, 2], [0, 0, 2], [2, 2, 0]], np.float64)
    assert floored(dup, 0.75)[0, 1].item() == pytest.approx(1.0, rel=1e-12)
    stress, _ = sammon_stress(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]), dup, floor=0.75)
    assert stress == pytest.approx((2 - math.sqrt(5)) ** 2 / 2 / 5, rel=1e-9)
    assert floored(np.zeros((1, 1)))[0, 0].item() == 1.0  # no pair: the floor is 1


def test_classical_mds_gives_zero_columns_for_negative_eigenvalues() -> None:
    """Four points at distance 1 from a centre and 2 from each other (a star): B has eigenvalues
    of both signs, and the directions of negative ones become zero columns, not NaN."""
    d = np.full((4, 4), 2.0)
    np.fill_diagonal(d, 0.0)
    d[0, 1:] = d[1:, 0] = 1.0  # point 0 is the centre: 1 + 1 = 2, a degenerate triangle inequality
    j = np.eye(4) - 0.25
    vals = np.linalg.eigvalsh(-0.5 * j @ (d**2) @ j)
    assert vals.min() < -1e-9  # not Euclidean
    y = classical_mds(d, 4)
    assert np.isfinite(y).all()
    negative = np.sum(vals < -1e-9)
    assert (np.abs(y).max(axis=0) < 1e-9).sum() >= negative


def test_start_coords_add_a_thousandth_of_the_spread() -> None:
    """Classical MDS plus Gaussian noise of standard deviation 1e-3 x the largest |coordinate|,
    drawn from the given seed: the same seed gives the same start."""
    from kpengine.image.retrieval.sammon import start_coords

    rng = np.random.default_rng(0)
    d = _pairwise(rng.normal(size=(40, 3)) * 50.0)
    mds = classical_mds(d, 3)
    spread = np.abs(mds).max()
    noise = start_coords(d, 3) - mds
    assert noise.shape == (40, 3) and abs(noise.mean()) < 3e-4 * spread
    assert 0.7e-3 * spread < noise.std() < 1.3e-3 * spread
    np.testing.assert_array_equal(start_coords(d, 3), start_coords(d, 3, seed=0))
    assert not np.array_equal(start_coords(d, 3, seed=0), start_coords(d, 3, seed=1))


def test_classical_mds_recovers_euclidean_configuration() -> None:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(12, 3))
    y = classical_mds(_pairwise(pts), 3)
    np.testing.assert_allclose(_pairwise(y), _pairwise(pts), atol=1e-9)
    y5 = classical_mds(_pairwise(pts), 5)  # more dimensions than the data: zero columns
    np.testing.assert_allclose(y5[:, 3:], 0.0, atol=1e-6)


def test_sammon_recovers_a_planar_configuration_from_a_perturbed_start() -> None:
    # a start far off (noise of 0.3 on points spread over [-1, 1]^2, stress ~0.05) but in the basin
    # (from a fully random 2-d start Sammon's stress has folded local minima)
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1, 1, size=(15, 2))
    d = _pairwise(pts)
    start = pts + rng.normal(0, 0.3, pts.shape)
    assert sammon_stress(start, d)[0] > 0.02
    y, stress = sammon(d, 2, steps=600, lr=0.05, start=start)
    assert stress < 1e-5
    np.testing.assert_allclose(_pairwise(y), d, atol=0.02)


def test_sammon_lowers_the_stress_of_classical_mds_on_non_euclidean_distances() -> None:
    # geodesic distances along a circle of 20 points: not Euclidean in 2-d
    ang = np.arange(20) * 2 * np.pi / 20
    gap = np.abs(ang[:, None] - ang[None])
    d = np.minimum(gap, 2 * np.pi - gap)
    start = classical_mds(d, 2)
    y, stress = sammon(d, 2, steps=300)
    assert stress < 0.8 * sammon_stress(start, d)[0]
    assert stress == pytest.approx(sammon_stress(y, d)[0], rel=1e-6)


# ---------------------------------------------------------------------------------------------- io


def _space(n: int = 4) -> ShapeSpace:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(n, 3))
    return ShapeSpace(
        "bathtub",
        [f"m{i}" for i in range(n)],
        ["train", "train", "val", "test"][:n],
        hog=rng.random((n, 2, 5)).astype(np.float32),
        distances=_pairwise(pts),
        coords=pts.astype(np.float32),
        meta={"distance": "sum", "stress": 0.01},
    )


def test_shape_space_round_trip(tmp_path) -> None:
    s = _space()
    save_shape_space(tmp_path / "s.npz", s)
    back = load_shape_space(tmp_path / "s.npz", need=("coords", "hog"))
    assert back.category == "bathtub" and back.model_ids == s.model_ids and back.splits == s.splits
    np.testing.assert_array_equal(back.hog, s.hog)
    np.testing.assert_array_equal(back.distances, s.distances)
    np.testing.assert_array_equal(back.coords, s.coords)
    assert back.meta == {"distance": "sum", "stress": 0.01}
    bare = ShapeSpace("bed", ["a", "b"], ["train", "test"])
    save_shape_space(tmp_path / "b.npz", bare)
    got = load_shape_space(tmp_path / "b.npz")
    assert got.coords is None and got.hog is None and got.model_ids == ["a", "b"]
    with pytest.raises(DataError, match="lacks coords"):
        load_shape_space(tmp_path / "b.npz", need=("coords",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.model_ids.__setitem__(1, "m0"), "model_ids repeat: m0"),
        (lambda s: s.splits.__setitem__(0, "training"), "splits holds"),
        (lambda s: s.coords.__setitem__((0, 0), np.nan), "coords holds NaN"),
        (lambda s: s.distances.__setitem__((0, 1), 5.0), "symmetric"),
        (lambda s: setattr(s, "coords", s.coords[:3]), "coords has shape"),
    ],
)
def test_shape_space_refuses_bad_content_and_writes_nothing(tmp_path, change, message) -> None:
    good = _space()
    save_shape_space(tmp_path / "s.npz", good)
    before = (tmp_path / "s.npz").read_bytes()
    bad = _space()
    change(bad)
    with pytest.raises(DataError, match=message) as err:
        save_shape_space(tmp_path / "s.npz", bad)
    assert "s.npz" in str(err.value)
    assert (tmp_path / "s.npz").read_bytes() == before  # the old file stands
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


def test_shape_space_bad_files(tmp_path) -> None:
    with pytest.raises(DataError, match="no shape space here"):
        load_shape_space(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="unreadable shape space"):
        load_shape_space(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="no 'meta' array"):
        load_shape_space(tmp_path / "other.npz")
    np.savez(
        tmp_path / "fmt.npz", meta=np.array('{"format": "x"}'), model_ids=np.array(["a"]), splits=np.array(["train"])
    )
    with pytest.raises(DataError, match="not a kpengine-shape-space file"):
        load_shape_space(tmp_path / "fmt.npz")
    np.savez(
        tmp_path / "ver.npz",
        meta=np.array('{"format": "kpengine-shape-space", "version": 9, "category": "bed"}'),
        model_ids=np.array(["a"]),
        splits=np.array(["train"]),
    )
    with pytest.raises(DataError, match="version 9"):
        load_shape_space(tmp_path / "ver.npz")


def _refusal(space: ShapeSpace, path) -> str:  # noqa: ANN001
    with pytest.raises(DataError) as err:
        save_shape_space(path, space)
    text = str(err.value)
    assert text.startswith(f"{path}: ")
    return text[len(f"{path}: ") :]


def test_shape_space_refusals_say_exactly_what_is_wrong(tmp_path) -> None:
    """Each rule of the format (module docstring) broken once, with the message it must give."""
    path = tmp_path / "s.npz"

    def bad(change) -> str:  # noqa: ANN001
        space = _space()
        change(space)
        return _refusal(space, path)

    assert bad(lambda s: s.splits.pop()) == "3 splits for 4 model_ids"
    assert bad(lambda s: setattr(s, "model_ids", ["m1", "m0", "m1", "m0"])) == "model_ids repeat: m0, m1"
    assert bad(lambda s: s.splits.__setitem__(0, "training")) == "splits holds ['training']; expected train, val, test"
    assert bad(lambda s: setattr(s, "category", "")) == "meta: category missing"
    assert bad(lambda s: setattr(s, "category", None)) == "meta: category missing"
    assert bad(lambda s: setattr(s, "hog", s.hog[:, 0])) == (
        "hog has shape (4, 5); expected 3 axes with 4 rows (one per model)"
    )
    assert bad(lambda s: setattr(s, "coords", np.ones((4, 3), np.int64))) == "coords of type int64; expected floats"
    assert bad(lambda s: s.hog.__setitem__((1, 1, 1), np.inf)) == "hog holds NaN or infinite values"
    assert bad(lambda s: setattr(s, "distances", s.distances[:, :3])) == "distances has shape (4, 3); expected (4, 4)"
    rule = "distances must be symmetric, non-negative, with a zero diagonal"
    assert bad(lambda s: s.distances.__setitem__((2, 2), 1e-3)) == rule
    assert bad(lambda s: s.distances.__setitem__((2, 2), -1e-3)) == rule
    assert bad(lambda s: setattr(s, "distances", -s.distances)) == rule
    assert not path.exists()
    near = _space()  # symmetric within round-off (1e-10 on a distance of ~1) is symmetric
    near.distances[0, 1] += 1e-10
    save_shape_space(path, near)
    wide = _space()
    wide.distances[0, 1] += 1e-5  # beyond rtol 1e-6 of any distance here (all below 10)
    assert _refusal(wide, path) == rule


def test_shape_space_stores_its_documented_types_and_reads_them_back(tmp_path) -> None:
    space = _space()
    space.hog, space.coords = space.hog.astype(np.float64), space.coords.astype(np.float64)
    space.distances = space.distances.astype(np.float32).astype(np.float64)
    save_shape_space(tmp_path / "s.npz", space)
    back = load_shape_space(tmp_path / "s.npz")
    assert (back.hog.dtype, back.distances.dtype, back.coords.dtype) == (np.float32, np.float64, np.float32)
    assert back.category == "bathtub" and set(back.meta) == {"distance", "stress"}
    with np.load(tmp_path / "s.npz") as z:
        assert sorted(z.files) == ["coords", "distances", "hog", "meta", "model_ids", "splits"]
        meta = json.loads(str(z["meta"]))
    assert meta == {
        "distance": "sum",
        "stress": 0.01,
        "format": "kpengine-shape-space",
        "version": 1,
        "category": "bathtub",
    }


def test_shape_space_unreadable_headers_are_named(tmp_path) -> None:
    def write(name: str, **arrays) -> object:  # noqa: ANN003
        path = tmp_path / name
        base = {"meta": np.array('{"format": "kpengine-shape-space", "version": 1, "category": "bed"}')}
        base |= {"model_ids": np.array(["a"]), "splits": np.array(["train"])}
        np.savez(path, **{k: v for k, v in (base | arrays).items() if v is not None})
        return path

    def refusal(path) -> str:  # noqa: ANN001
        with pytest.raises(DataError) as err:
            load_shape_space(path)
        return str(err.value)[len(f"{path}: ") :]

    assert load_shape_space(write("ok.npz")).model_ids == ["a"]
    assert refusal(write("ids.npz", model_ids=None)) == "not a shape space: no 'model_ids' array"
    assert refusal(write("spl.npz", splits=None)) == "not a shape space: no 'splits' array"
    assert refusal(write("json.npz", meta=np.array("{nope"))).startswith("meta is not JSON (")
    assert refusal(write("list.npz", meta=np.array("[1]"))) == "not a kpengine-shape-space file (format None)"
    assert refusal(write("fmt.npz", meta=np.array('{"format": "x"}'))) == "not a kpengine-shape-space file (format 'x')"
    no_version = np.array('{"format": "kpengine-shape-space", "category": "bed"}')
    assert refusal(write("ver.npz", meta=no_version)) == ("shape space version None; this kpengine reads version 1")
    no_category = np.array('{"format": "kpengine-shape-space", "version": 1}')
    assert refusal(write("cat.npz", meta=no_category)) == "meta: category missing"
    with pytest.raises(DataError) as err:
        load_shape_space(write("need.npz"), need=("coords", "hog"))
    assert str(err.value).endswith(": shape space lacks coords, hog")


# ---------------------------------------------------------------------------------------------- light field


@pytest.fixture(scope="module")
def _gl() -> None:
    from kpengine.render import gl

    if not gl.gl_available():
        message = f"no OpenGL context: {gl.INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must have it (scripts/setup_system.sh)")
        pytest.skip(message)


def test_hog_of_flat_and_edge_images() -> None:
    from kpengine.image.retrieval.lightfield import LightFieldSpec, hog_descriptor

    spec = LightFieldSpec(size=32)
    assert not hog_descriptor(np.full((32, 32), 0.4), spec).any()  # no gradient, no descriptor
    edge = np.zeros((32, 32))
    edge[:, 16:] = 1.0  # a vertical edge: horizontal gradients only, orientation bin 0 (0 degrees)
    h = hog_descriptor(edge, spec).reshape(-1, spec.orientations)
    assert h[:, 0].sum() > 0 and h[:, 1:].sum() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DataError, match="expected \\(32, 32\\)"):
        hog_descriptor(np.zeros((16, 16)), spec)


def test_light_field_distance_symmetric_zero_on_identical_shapes(_gl, sample_root) -> None:
    from kpengine.data.dataset import KeypointNetDataset
    from kpengine.image.retrieval.lightfield import LightFieldSpec, lfd_distances, light_field

    spec = LightFieldSpec(azimuths=6, elevations=(20.0,), size=48)
    chairs = list(KeypointNetDataset(sample_root, "chair", "train"))[:2]
    mug = next(iter(KeypointNetDataset(sample_root, "mug", "train")))

    class Turned:  # the first chair turned by one azimuth step (60 degrees) about the up axis
        model_id = "turned"
        a = np.deg2rad(60.0)
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        points = chairs[0].points @ rot.T

    class Copy:
        model_id = "copy"
        points = chairs[0].points.copy()

    lf = light_field([chairs[0], chairs[1], mug, Copy, Turned], spec)
    assert lf.hog.shape[:2] == (5, 6)
    for mode in ("sum", "rotation"):
        d = lfd_distances(lf.hog, mode=mode, azimuths=6)
        np.testing.assert_array_equal(d, d.T)
        assert d[0, 3] == 0.0  # identical clouds draw identical views
        assert (np.diag(d) == 0).all() and min(d[0, 1], d[0, 2], d[1, 2]) > 0
        assert d[0, 1] < d[0, 2]  # another chair is nearer than a mug
        cross = lfd_distances(lf.hog[:2], lf.hog[2:], mode=mode, azimuths=6)  # the two-set form agrees
        np.testing.assert_allclose(cross, d[:2, 2:], rtol=1e-9)
    plain = lfd_distances(lf.hog, mode="sum")
    turned = lfd_distances(lf.hog, mode="rotation", azimuths=6)
    # the rotation search finds the turned chair; corresponding views do not
    assert turned[0, 4] < 0.05 * plain[0, 4]
    assert (turned <= plain + 1e-9).all()
    with pytest.raises(DataError, match="views per ring"):
        lfd_distances(lf.hog, mode="rotation", azimuths=4)


def test_hog_baseline_finds_the_shape_whose_view_is_the_photo() -> None:
    from kpengine.image.retrieval.lightfield import LightFieldSpec, hog_descriptor
    from kpengine.image.retrieval.retrieve import hog_distances

    spec = LightFieldSpec(size=32)
    rng = np.random.default_rng(4)
    views = rng.integers(0, 256, (3, 2, 32, 32)).astype(np.uint8)  # 3 shapes x 2 views, grey
    hog = np.stack([[hog_descriptor(v / 255.0, spec) for v in shape] for shape in views])
    photo = np.repeat(views[1, 1][..., None], 3, axis=2)  # shape 1's second view, as an RGB photo
    d = hog_distances([photo], hog, spec)
    assert d.shape == (1, 3) and d[0].argmin() == 1
    assert d[0, 1] == pytest.approx(0.0, abs=1e-5)
    # a shape's distance is its nearest view's: the same as the smaller of the two per-view distances
    h = hog_descriptor(views[1, 1] / 255.0, spec)
    expected = min(np.linalg.norm(hog[2, k] - h) for k in range(2))
    assert d[0, 2] == pytest.approx(expected, rel=1e-5)
