"""The training losses. Shapes: B shapes, N points, C semantic ids, D embedding size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def saliency_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Two-class cross-entropy per point, as the official benchmark: logits (B, N, 2), target (B, N).

    An integer target in {0, 1} is the official hard label; a float target in [0, 1] is the
    keypoint probability of a soft label (cross-entropy against the distribution (1 - t, t)).
    """
    if target.is_floating_point():
        logp = logits.log_softmax(dim=-1)
        return -(target * logp[..., 1] + (1.0 - target) * logp[..., 0]).mean()
    return F.cross_entropy(logits.reshape(-1, 2), target.reshape(-1))


def correspondence_loss(logits: torch.Tensor, labellings: torch.Tensor, relabel_margin: float = 0.0) -> torch.Tensor:
    """Softmax over points per semantic id; min over symmetric relabellings; mean over shapes.

    logits (B, N, C); labellings (B, R, C) point index per id, -1 where the shape lacks the id
    (absent ids are ignored), the identity first (r = 0). For each shape and labelling r the loss
    is the mean over its present ids of -log softmax_N(logits[:, :, id])[index]; the shape's loss
    is the minimum over r, every r > 0 first raised by ``relabel_margin`` nats.

    ``relabel_margin`` 0 is the official loss. With it, a net starts with near-uniform logits, so
    every relabelling of a symmetric shape ties and the frame the net learns is decided by noise:
    a few-shot draw of mostly symmetric shapes can learn all of them half-turned, which the
    official PCK forgives on symmetric test shapes only (docs/mvdecor.md, "Relabelled ids"). A
    margin > 0 breaks that tie for the identity while a labelling that fits better by more than
    the margin (an annotation rotated against the category's frame) is still taken. The collate's
    padding repeats the identity, which the margin then never picks.
    """
    logp = logits.log_softmax(dim=1)  # (B, N, C)
    present = labellings >= 0  # (B, R, C)
    idx = labellings.clamp_min(0)
    b, r, c = labellings.shape
    # logp[b, idx[b, r, c], c]
    picked = torch.gather(logp.unsqueeze(1).expand(-1, r, -1, -1), 2, idx.unsqueeze(2)).squeeze(2)  # (B, R, C)
    nll = -(picked * present).sum(-1) / present.sum(-1).clamp_min(1)  # (B, R)
    if relabel_margin:
        nll = torch.cat([nll[:, :1], nll[:, 1:] + relabel_margin], dim=1)
    has = present[:, 0].any(-1)
    if not has.any():
        return logits.sum() * 0.0
    return nll.min(dim=1).values[has].mean()


def contrastive_loss(embeddings: torch.Tensor, keypoint_index: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The paper's contrastive loss (eq. 5-6) on keypoint embeddings, with online hardest negatives.

    embeddings (B, N, D), unit-normalised; keypoint_index (B, C) point index per id or -1.
    Positives: every pair of keypoints with the same id on different shapes of the batch, pulled
    together (squared distance). Negatives: for each keypoint, the closest keypoint of another id
    in the batch, pushed beyond ``margin`` (squared hinge). Returns positive + negative means.
    """
    b, c = keypoint_index.shape
    shape_of, id_of = torch.nonzero(keypoint_index >= 0, as_tuple=True)
    if len(shape_of) < 2:
        return embeddings.sum() * 0.0
    f = embeddings[shape_of, keypoint_index[shape_of, id_of]]  # (K, D)
    d2 = torch.cdist(f, f).pow(2)
    same_id = id_of[:, None] == id_of[None, :]
    other_shape = shape_of[:, None] != shape_of[None, :]
    pos = same_id & other_shape
    pos_loss = d2[pos].mean() if pos.any() else d2.sum() * 0.0
    neg_d = torch.where(same_id, torch.full_like(d2, float("inf")), d2)
    hardest = neg_d.min(dim=1).values
    ok = torch.isfinite(hardest)
    neg_loss = F.relu(margin - hardest[ok].clamp_min(1e-12).sqrt()).pow(2).mean() if ok.any() else d2.sum() * 0.0
    return pos_loss + neg_loss


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Dense InfoNCE (MvDeCor eq. 1, as in PointContrast): anchors (M, D) and positives (M, D),
    row i of each the same surface point; every other row of ``positives`` is a negative of
    anchor i. Both are unit-normalised here; the loss is the mean over i of
    ``-log( exp(a_i.p_i / T) / sum_j exp(a_i.p_j / T) )``."""
    if len(anchors) == 0:
        return anchors.sum() * 0.0
    a = F.normalize(anchors, dim=1)
    p = F.normalize(positives, dim=1)
    logits = a @ p.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def point_info_nce(
    features_a: torch.Tensor, features_b: torch.Tensor, pairs: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """PointInfoNCE (Xie et al. 2020, eq. 2) of B shapes at once: features_a (B, Na, D) and
    features_b (B, Nb, D) of two augmented copies, pairs (B, P, 2) long: row ``(i, j)`` says point
    ``i`` of copy a is point ``j`` of copy b. Per shape this is :func:`info_nce` on the P matched
    rows: the positive of a point is its match, the negatives are the other P - 1 matched points
    of copy b of the *same* shape (PointContrast's negatives come from the same scene pair, not
    from other scenes). Mean over shapes and matches."""
    b, p, _ = pairs.shape
    if p == 0:
        return features_a.sum() * 0.0
    d = features_a.shape[-1]
    a = torch.gather(features_a, 1, pairs[..., :1].expand(-1, -1, d))  # (B, P, D)
    k = torch.gather(features_b, 1, pairs[..., 1:].expand(-1, -1, d))
    logits = F.normalize(a, dim=-1) @ F.normalize(k, dim=-1).transpose(1, 2) / temperature  # (B, P, P)
    target = torch.arange(p, device=pairs.device).expand(b, -1)
    return F.cross_entropy(logits.reshape(b * p, p), target.reshape(-1))
