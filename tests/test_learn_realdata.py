"""Real KeypointNet bathtubs: symmetric relabellings reach the batches and lower the loss bound."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kpengine.data import KeypointNetDataset
from kpengine.learn.batches import KeypointBatches, collate_keypoint_batches
from kpengine.learn.losses import correspondence_loss

pytestmark = pytest.mark.realdata


def test_bathtub_relabellings_in_batches(keypointnet: Path) -> None:
    val = KeypointNetDataset(keypointnet, "bathtub", "val")
    batches = KeypointBatches(val, val.n_classes)
    sizes = [len(lab) for lab in batches.labellings]
    assert max(sizes) > 1  # some bathtubs are rotationally symmetric
    batch = collate_keypoint_batches([batches[i] for i in range(8)])
    assert batch["labellings"].shape[:2] == (8, max(sizes[:8]))
    # Logits that pick, for every id, the point of the shape's *last* relabelling: the loss taking
    # the minimum over relabellings is ~0 (log(1 + 2047 e^-30)); the identity labelling alone pays
    # ~30 per id that the relabelling moves, averaged over present ids, on the symmetric shapes.
    lab = batch["labellings"]  # (B, R, C): -1 for absent ids; padded by repeating the identity
    n_valid = [sizes[i] for i in range(8)]
    logits = torch.zeros(8, 2048, val.n_classes)
    for b in range(8):
        last = lab[b, n_valid[b] - 1]
        for c in range(val.n_classes):
            if last[c] >= 0:
                logits[b, last[c], c] = 30.0
    best = correspondence_loss(logits, lab)
    plain = correspondence_loss(logits, lab[:, :1])
    assert best.item() < 1e-6
    moved = [(lab[b, 0] != lab[b, n_valid[b] - 1]).sum().item() / (lab[b, 0] >= 0).sum().item() for b in range(8)]
    assert plain.item() == pytest.approx(30.0 * sum(moved) / 8, rel=1e-3)
    assert max(moved) > 0  # a symmetric bathtub is in the batch
    # uniform logits: every relabelling of every shape costs log(2048), padding included
    uniform = correspondence_loss(torch.zeros(8, 2048, val.n_classes), lab)
    assert uniform.item() == pytest.approx(math.log(2048), rel=1e-6)
