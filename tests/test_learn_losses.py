"""Losses: absent ids ignored, minimum over symmetric relabellings, contrastive pulls and pushes."""

from __future__ import annotations

import math

import pytest
import torch

from kpengine.learn.losses import contrastive_loss, correspondence_loss, saliency_loss


def test_correspondence_loss_ignores_absent_ids_and_takes_min_over_relabellings() -> None:
    logits = torch.full((1, 4, 2), -10.0)
    logits[0, 2, 0] = 10.0  # id 0 confidently at point 2
    identity = torch.tensor([1, -1])  # id 0 at point 1 (wrong), id 1 absent
    rotated = torch.tensor([2, -1])  # id 0 at point 2 under the symmetric relabelling
    plain = correspondence_loss(logits, identity[None, None])
    best = correspondence_loss(logits, torch.stack([identity, rotated])[None])
    assert plain > 10 and best < 1e-3


def test_correspondence_loss_gradient_only_on_present_ids() -> None:
    logits = torch.zeros(2, 5, 3, requires_grad=True)
    lab = torch.tensor([[[0, -1, 4]], [[1, -1, -1]]])
    correspondence_loss(logits, lab).backward()
    assert logits.grad[:, :, 1].abs().sum() == 0
    assert logits.grad[:, :, 0].abs().sum() > 0


def test_saliency_loss_is_cross_entropy() -> None:
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    assert torch.isclose(saliency_loss(logits, torch.tensor([[0, 1]])), torch.log(torch.tensor(2.0)))


def test_soft_saliency_loss_equals_hard_on_binary_targets_and_prefers_near_misses() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 50, 2)
    hard = (torch.rand(2, 50) < 0.2).long()
    assert torch.isclose(saliency_loss(logits, hard.float()), saliency_loss(logits, hard), atol=1e-6)
    # a point near a keypoint (target 0.6) costs less when predicted salient than a far one (target 0)
    salient = torch.tensor([[[0.0, 3.0]]])
    assert saliency_loss(salient, torch.tensor([[0.6]])) < saliency_loss(salient, torch.tensor([[0.0]]))


def test_contrastive_loss_pulls_same_ids_and_pushes_hardest_negative() -> None:
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(2, 6, 4), dim=-1).requires_grad_(True)
    idx = torch.tensor([[0, 1], [2, 3]])  # ids 0 and 1 on both shapes
    loss = contrastive_loss(emb, idx, margin=1.0)
    loss.backward()
    assert loss > 0 and emb.grad[0, 0].abs().sum() > 0 and emb.grad[0, 4].abs().sum() == 0
    # perfect embedding: same id identical, different ids opposite -> zero loss
    good = torch.zeros(2, 6, 4)
    good[0, 0] = good[1, 2] = torch.tensor([1.0, 0, 0, 0])
    good[0, 1] = good[1, 3] = torch.tensor([-1.0, 0, 0, 0])
    assert contrastive_loss(good, idx, margin=1.0).item() < 1e-6


def test_contrastive_loss_hand_computed() -> None:
    """Four keypoints in the plane, eq. 5-6 worked by hand (margin 1).

    Shape 0: id 0 at a0 = (0, 0), id 1 at a1 = (0, 0.5). Shape 1: id 0 at b0 = (0.3, 0), id 1 at
    b1 = (0, 2). Positives (same id, other shape), both orders: d^2(a0, b0) = 0.09, d^2(a1, b1) = 2.25,
    mean 1.17. Hardest (closest) negative of each keypoint, any shape, other id: a0 -> a1 at 0.5,
    b0 -> a1 at sqrt(0.34), a1 -> a0 at 0.5, b1 -> a0 at 2. Squared hinge on the distance:
    (1 - 0.5)^2, (1 - sqrt(0.34))^2, (1 - 0.5)^2, 0; mean over the four keypoints.
    """
    emb = torch.zeros(2, 3, 2, dtype=torch.float64)
    emb[0, 0], emb[0, 2] = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.5])  # point 1 of shape 0 unused
    emb[1, 1], emb[1, 2] = torch.tensor([0.3, 0.0]), torch.tensor([0.0, 2.0])
    idx = torch.tensor([[0, 2], [1, 2]])
    positive = (0.09 + 2.25) / 2
    negative = (0.25 + (1 - 0.34**0.5) ** 2 + 0.25 + 0.0) / 4
    assert contrastive_loss(emb, idx, margin=1.0).item() == pytest.approx(positive + negative, rel=1e-7)
    # absent ids (-1) are ignored: a1 gone, the negatives of a0 and b0 are b1 (2 and sqrt(4.09), hinge 0),
    # b1's is a0 (2, hinge 0); the one positive pair a0-b0 remains
    assert contrastive_loss(emb, torch.tensor([[0, -1], [1, 2]]), margin=1.0).item() == pytest.approx(0.09, rel=1e-7)


def test_contrastive_margin_scales_the_hinge() -> None:
    """With margin 3 every negative distance above is inside the margin: (3 - d)^2 for each keypoint."""
    emb = torch.zeros(2, 3, 2, dtype=torch.float64)
    emb[0, 0], emb[0, 2] = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.5])
    emb[1, 1], emb[1, 2] = torch.tensor([0.3, 0.0]), torch.tensor([0.0, 2.0])
    idx = torch.tensor([[0, 2], [1, 2]])
    hardest = [0.5, 0.34**0.5, 0.5, 2.0]
    expected = (0.09 + 2.25) / 2 + sum((3 - d) ** 2 for d in hardest) / 4
    assert contrastive_loss(emb, idx, margin=3.0).item() == pytest.approx(expected, rel=1e-7)


def test_contrastive_loss_edge_cases_by_hand() -> None:
    """Default margin 1; one keypoint: nothing to compare (0); two of one id on two shapes: only the
    pull d^2; two ids on one shape: only the push (1 - d)^2 for each."""
    emb = torch.zeros(2, 2, 2, dtype=torch.float64)
    emb[0, 0], emb[0, 1] = torch.tensor([0.0, 0.0]), torch.tensor([0.3, 0.4])  # 0.5 apart
    emb[1, 0] = torch.tensor([0.6, 0.8])  # 1.0 from emb[0, 0]
    assert contrastive_loss(emb, torch.tensor([[0, -1], [-1, -1]])).item() == 0.0
    assert contrastive_loss(emb, torch.tensor([[0], [0]])).item() == pytest.approx(1.0)  # d^2 = 1
    assert contrastive_loss(emb, torch.tensor([[0, 1], [-1, -1]])).item() == pytest.approx(0.25)
    # the default margin is 1: the hand-worked four-keypoint case again, without naming it
    emb4 = torch.zeros(2, 3, 2, dtype=torch.float64)
    emb4[0, 0], emb4[0, 2] = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.5])
    emb4[1, 1], emb4[1, 2] = torch.tensor([0.3, 0.0]), torch.tensor([0.0, 2.0])
    idx4 = torch.tensor([[0, 2], [1, 2]])
    assert contrastive_loss(emb4, idx4).item() == pytest.approx(contrastive_loss(emb4, idx4, margin=1.0).item())
    assert contrastive_loss(emb4, idx4).item() != pytest.approx(contrastive_loss(emb4, idx4, margin=2.0).item())


def test_correspondence_loss_hand_computed() -> None:
    """Two shapes, 3 points, 2 ids, 2 relabellings. With logits 0 except one value, the
    log-softmax over 3 points is known in closed form: a point with logit L among two zeros has
    log p = L - log(e^L + 2), the others -log(e^L + 2).

    Shape 0 (id 0 logit 2 at point 0; id 1 logit 0 everywhere): labelling (0, 2) costs
    ((log(e^2 + 2) - 2) + log 3) / 2, labelling (1, 0) costs (log(e^2 + 2) + log 3) / 2; min: the first.
    Shape 1: no ids present (all -1): left out of the mean."""
    logits = torch.zeros(2, 3, 2, dtype=torch.float64)
    logits[0, 0, 0] = 2.0
    logits[1, 1, 1] = 5.0  # must not count: shape 1 has no keypoints
    lab = torch.tensor([[[0, 2], [1, 0]], [[-1, -1], [-1, -1]]])
    z = math.log(math.exp(2) + 2)
    expected = ((z - 2) + math.log(3)) / 2
    assert correspondence_loss(logits, lab).item() == pytest.approx(expected, rel=1e-12)
    assert correspondence_loss(logits, lab[:, 1:]).item() == pytest.approx((z + math.log(3)) / 2, rel=1e-12)
    one_id = torch.tensor([[[0, -1]], [[-1, -1]]])  # a mean over present ids: one id, not halved
    assert correspondence_loss(logits, one_id).item() == pytest.approx(z - 2, rel=1e-12)
    nothing = correspondence_loss(logits.requires_grad_(True), torch.full((2, 1, 2), -1))
    assert nothing.item() == 0.0
    nothing.backward()
    assert logits.grad.abs().sum() == 0


def test_relabel_margin_hand_computed() -> None:
    """One shape, 3 points, one id; uniform logits except the id's logit L at point 1, so
    -log p(point 1) = log(e^L + 2) - L = a and -log p(point 0) = log(e^L + 2) = b.
    Labellings: identity puts the id at point 0 (cost b), the relabelling at point 1 (cost a < b).
    The shape's loss is min(b, a + margin): the relabelling wins only by more than the margin."""
    logits = torch.zeros(1, 3, 1, dtype=torch.float64)
    big = 1.5
    logits[0, 1, 0] = big
    z = math.log(math.exp(big) + 2)
    a, b = z - big, z  # b - a = 1.5 nats
    lab = torch.tensor([[[0], [1]]])
    assert correspondence_loss(logits, lab).item() == pytest.approx(a, rel=1e-12)  # official: the min
    assert correspondence_loss(logits, lab, relabel_margin=1.0).item() == pytest.approx(a + 1.0, rel=1e-12)
    assert correspondence_loss(logits, lab, relabel_margin=2.0).item() == pytest.approx(b, rel=1e-12)
    # the collate pads with copies of the identity: a margin never picks a copy over the identity
    padded = torch.tensor([[[0], [0]]])
    assert correspondence_loss(logits, padded, relabel_margin=0.5).item() == pytest.approx(b, rel=1e-12)


def _frame_learned(relabel_margin: float) -> tuple[float, float]:
    """A miniature of the few-shot failure (docs/mvdecor.md, "Relabelled ids"). Two ids, left
    (x = -1) and right (x = +1), on shapes symmetric under a half turn about y: their rotational
    relabelling swaps the ids. A linear net shared by all shapes (logit of id c at point x:
    w_c . x) starts a hair towards the swapped frame, as noise may start it. Trained on the two
    symmetric shapes, then asked for an asymmetric shape whose only labelling is the identity.
    Returns (fraction of the asymmetric shape's ids right, w_right's x weight)."""
    pts = torch.tensor(
        [
            [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]],
            [[0.8, 0.2, 0.0], [-0.8, 0.2, 0.0], [0.0, 0.2, 0.6], [0.0, 0.2, -0.6]],
        ]
    )
    # ids: 0 = right (point 0), 1 = left (point 1); the half turn swaps them
    lab = torch.tensor([[[0, 1], [1, 0]], [[0, 1], [1, 0]]])
    w = torch.tensor([[-0.01, 0.0, 0.0], [0.01, 0.0, 0.0]], requires_grad=True)  # (C, 3)
    opt = torch.optim.SGD([w], lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        correspondence_loss(pts @ w.T, lab, relabel_margin).backward()
        opt.step()
    # asymmetric test shape: right is at x = +0.9, left at x = -0.7, plus two other points
    test = torch.tensor([[0.9, 0.0, 0.1], [-0.7, 0.1, 0.0], [0.1, 0.3, 0.5], [0.0, 0.0, -0.4]])
    pred = (test @ w.detach().T).argmax(dim=0)  # (C,) point of each id
    return float((pred == torch.tensor([0, 1])).float().mean()), float(w.detach()[0, 0])


def test_relabel_margin_breaks_the_tie_towards_the_frame_the_asymmetric_shapes_use() -> None:
    # the official minimum keeps the swapped frame it started in: the symmetric training shapes
    # are fitted (under their relabelling), the asymmetric shape is wrong on every id
    right, w_right = _frame_learned(0.0)
    assert right == 0.0 and w_right < -1.0
    # with the margin the identity wins the early near-tie and the net learns the identity frame
    right, w_right = _frame_learned(1.0)
    assert right == 1.0 and w_right > 1.0


def test_correspondence_task_passes_its_relabel_margin_to_the_loss() -> None:
    from kpengine.learn.config import TrainConfig
    from kpengine.learn.tasks.correspondence import CorrespondenceTask

    logits = torch.zeros(1, 3, 1, dtype=torch.float64)
    logits[0, 1, 0] = 1.5
    batch = {"points": torch.zeros(1, 3, 3), "labellings": torch.tensor([[[0], [1]]])}
    for margin in (0.0, 1.0):
        cfg = TrainConfig(task="correspondence", data="unused", category="bathtub", relabel_margin=margin)
        got = CorrespondenceTask(cfg).loss(lambda _points: logits, batch)
        assert got.item() == pytest.approx(correspondence_loss(logits, batch["labellings"], margin).item())
    assert (
        CorrespondenceTask(cfg).loss(lambda _p: logits, batch).item()
        > correspondence_loss(logits, batch["labellings"]).item()
    )
    with pytest.raises(ValueError, match="relabel margin"):
        TrainConfig(task="correspondence", data="unused", category="bathtub", relabel_margin=-1.0)
