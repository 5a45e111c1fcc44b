"""Training augmentation of the official protocol: clipped Gaussian jitter, random translation,
the optional surface noise of the embedding task, and an optional random anisotropic scaling
(off in the official protocol; it widens a small category's training shapes, e.g. 102 beds).
Works on numpy clouds (N, 3) with a per-item generator, so that every epoch is reproducible
from the seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augment:
    jitter_sigma: float = 0.004
    jitter_clip: float = 0.01
    translate: float = 0.02
    surface_noise: float = 0.0
    #: each axis scaled by a factor drawn from U(1 - scale, 1 + scale) about the origin; 0 = off
    scale: float = 0.0

    def __call__(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = points.astype(np.float32, copy=True)
        if self.scale > 0:
            out *= rng.uniform(1.0 - self.scale, 1.0 + self.scale, (1, 3)).astype(np.float32)
        if self.jitter_sigma > 0:
            noise = rng.normal(0.0, self.jitter_sigma, out.shape)
            out += np.clip(noise, -self.jitter_clip, self.jitter_clip).astype(np.float32)
        if self.surface_noise > 0:  # unclipped: points off the surface, as on reconstructed shapes
            out += rng.normal(0.0, self.surface_noise, out.shape).astype(np.float32)
        if self.translate > 0:
            out += rng.uniform(-self.translate, self.translate, (1, 3)).astype(np.float32)
        return out
