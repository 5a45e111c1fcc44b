"""Silhouette training batches: colour-channel swaps and grey images change the photo, never the mask."""

from __future__ import annotations

import torch

from kpengine.image.crops import MEAN, STD
from kpengine.image.datasets import MaskSet, silhouette_batch


def _set(n: int = 16, s: int = 24) -> MaskSet:
    """Flat images whose three channels differ (R 50, G 128, B 205) and a square mask in each."""
    images = torch.empty(n, 3, s, s, dtype=torch.uint8)
    for c, v in enumerate((50, 128, 205)):
        images[:, c] = v
    masks = torch.zeros(n, s, s, dtype=torch.uint8)
    masks[:, 6:18, 8:20] = 255
    return MaskSet(images, masks, [f"im{i}" for i in range(n)])


def _batch(data: MaskSet, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)  # the same zoom, shift, mirror and colour draws for every call
    x, m = silhouette_batch(data, list(range(len(data))), 24, 0.1, 0.05, **kw)
    return x * STD + MEAN, m  # back to [0, 1] pixels


def test_grey_images_have_equal_channels_and_the_same_masks():
    data = _set()
    plain, m0 = _batch(data)
    grey, m1 = _batch(data, grey=1.0)
    assert torch.equal(m0, m1)
    centre = (slice(None), slice(None), slice(8, 16), slice(8, 16))  # away from the resampled border
    assert (plain[centre].amax(1) - plain[centre].amin(1)).min() > 0.1  # colour jitter keeps the channels apart
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-5) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-5)


def test_channel_swaps_permute_the_same_pixels():
    data = _set()
    plain, m0 = _batch(data)
    swapped, m1 = _batch(data, swap=1.0)
    assert torch.equal(m0, m1)
    # each image's channels are a permutation of the unswapped ones, and not all the identity
    assert torch.allclose(swapped.sort(1).values, plain.sort(1).values, atol=1e-5)
    moved = [not torch.allclose(swapped[i], plain[i], atol=1e-5) for i in range(len(data))]
    assert sum(moved) >= 8  # 5 of 6 permutations move: P(< 8 of 16 moved) < 1e-4
