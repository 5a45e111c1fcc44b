"""Real KeypointNet bathtubs: symmetric relabellings reach the batches and lower the loss bound."""

from __future__ import annotations

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
    logits = torch.randn(8, 2048, val.n_classes)
    best = correspondence_loss(logits, batch["labellings"])
    plain = correspondence_loss(logits, batch["labellings"][:, :1])
    assert best <= plain
