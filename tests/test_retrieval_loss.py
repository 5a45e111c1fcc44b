"""The image-embedding loss (L2 into the shape space plus the distance-softmax rank term) and the
network's standardised output, against hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import torch

from kpengine.image.retrieval.embedding import ImageEmbeddingNet, embedding_loss, standardisation


def _two_points() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A prediction at the origin, shape 0 at (1, 0) (the truth), shape 1 at (0, 2)."""
    pred = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    points = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    return pred, points, torch.tensor([0])


def test_plain_l2_is_the_squared_distance_over_the_spread() -> None:
    pred, points, rows = _two_points()
    # |(0,0) - (1,0)|^2 = 1; over spread2 = 4: 0.25
    assert embedding_loss(pred, rows, points, spread2=4.0).item() == 0.25
    # the truth being shape 1: |(0,0) - (0,2)|^2 = 4
    assert embedding_loss(pred, torch.tensor([1]), points).item() == 4.0


def test_rank_term_hand_computed() -> None:
    pred, points, rows = _two_points()
    # squared distances 1 and 4; temperature 1: logits -1, -4; CE = log(1 + e^-3)
    loss = embedding_loss(pred, rows, points, rank_weight=1.0, temperature=1.0)
    assert math.isclose(loss.item(), 1.0 + math.log1p(math.exp(-3.0)), rel_tol=1e-12)
    # temperature 0.5 doubles the logits: CE = log(1 + e^-6); weight 2 doubles the term
    loss = embedding_loss(pred, rows, points, rank_weight=2.0, temperature=0.5)
    assert math.isclose(loss.item(), 1.0 + 2.0 * math.log1p(math.exp(-6.0)), rel_tol=1e-12)


def test_rank_term_gradient_hand_derived() -> None:
    pred, points, rows = _two_points()
    embedding_loss(pred, rows, points, rank_weight=1.0, temperature=1.0).backward()
    # d/dp of -log softmax_0(-|p - c_j|^2) = sum_j (s_j - y_j) * (-2 (p - c_j)); at p = 0 with
    # s_1 = e^-3 / (1 + e^-3): (s_0 - 1) * (2, 0) + s_1 * (0, 4) = (-2 s_1, 4 s_1); the L2 part adds
    # 2 (p - c_0) = (-2, 0)
    s1 = math.exp(-3.0) / (1.0 + math.exp(-3.0))
    expected = torch.tensor([[-2.0 - 2.0 * s1, 4.0 * s1]], dtype=torch.float64)
    torch.testing.assert_close(pred.grad, expected, rtol=1e-12, atol=1e-12)


def test_loss_does_not_depend_on_the_units_of_the_space() -> None:
    # the same configuration scaled by k, with spread2 scaled by k^2, gives the same loss (both terms)
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(5, 3, generator=g, dtype=torch.float64)
    points = torch.randn(7, 3, generator=g, dtype=torch.float64)
    rows = torch.tensor([0, 3, 6, 2, 2])
    a = embedding_loss(pred, rows, points, spread2=1.5, rank_weight=0.7, temperature=0.2)
    b = embedding_loss(10 * pred, rows, 10 * points, spread2=150.0, rank_weight=0.7, temperature=0.2)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_rank_term_is_lowest_when_the_truth_is_nearest() -> None:
    pred, points, _ = _two_points()
    near = embedding_loss(pred + torch.tensor([[0.9, 0.0]]), torch.tensor([0]), points, rank_weight=1.0)
    far = embedding_loss(pred + torch.tensor([[0.0, 1.9]]), torch.tensor([0]), points, rank_weight=1.0)
    assert near.item() < far.item()


def test_standardisation_hand_computed() -> None:
    centre, scale = standardisation(np.array([[0.0, 0.0], [2.0, 0.0]]))
    # centred: (-1, 0), (1, 0); mean of the four squared coordinates 0.5
    torch.testing.assert_close(centre, torch.tensor([1.0, 0.0]))
    assert math.isclose(scale, math.sqrt(0.5))


def test_network_maps_its_head_back_into_the_space() -> None:
    torch.manual_seed(0)
    centre = torch.tensor([1.0, -2.0, 0.5])
    net = ImageEmbeddingNet(3, (4, 8), 32, centre, 3.0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        head = net.head(net.encoder(x).mean(dim=(2, 3)))
        torch.testing.assert_close(net(x), centre + 3.0 * head)
        net.head[-1].weight.zero_()  # a head that says nothing lands on the centre
        torch.testing.assert_close(net(x), centre.expand(2, 3))


def test_runs_from_before_the_standardisation_still_load() -> None:
    from kpengine.image.tasks.image_embedding import ImageEmbeddingConfig, ImageEmbeddingTask

    torch.manual_seed(0)
    old = ImageEmbeddingNet(3, (4, 8), 32).eval()
    weights = {k: v for k, v in old.state_dict().items() if k not in ("centre", "scale")}
    cfg = ImageEmbeddingConfig(task="image_embedding", data="unused", category="chair", size=32, widths=[4, 8])
    state = {"config": cfg.to_json(), "model": weights, "shape_space": {"coords": torch.zeros(5, 3)}}
    loaded = ImageEmbeddingTask.load_model(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), old(x))
