"""Point backbones behind one interface: points (B, N, 3) -> per-point features (B, N, C).

Every backbone is a :class:`PointBackbone`; ``build_backbone(name, **kwargs)`` makes one by
name so that tasks, training and the aggregation code never depend on a concrete network.
Each module of this package is one backbone, named after the module and registered with
``@register_backbone(name)`` (:data:`kpengine.learn.registry.BACKBONES`): adding a backbone is
adding a file; the CLI lists them from the registry without importing torch.
Backbones that carry a regulariser (PointNet's feature-transform orthogonality) expose it
through :meth:`PointBackbone.regularizer` after each forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kpengine.learn.registry import BACKBONES


class PointBackbone(nn.Module):
    """Base class: ``forward(points (B, N, 3) float) -> (B, N, out_channels)`` per-point features."""

    out_channels: int
    #: smallest number of points the network accepts (k-NN, sampling sizes)
    min_points: int = 1

    def __init__(self) -> None:
        super().__init__()
        self._regularizer: torch.Tensor | None = None

    def regularizer(self) -> torch.Tensor:
        """A scalar to add to the loss (0 unless the backbone defines one), from the last forward."""
        if self._regularizer is None:
            return torch.zeros(())
        return self._regularizer

    def check_input(self, points: torch.Tensor) -> None:
        """Validate at the boundary: shape (B, N, 3), enough points, finite values."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"expected points of shape (B, N, 3), got {tuple(points.shape)}")
        if points.shape[1] < self.min_points:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_points} points per shape, got {points.shape[1]}"
            )


def register_backbone(name: str) -> Callable[[type[PointBackbone]], type[PointBackbone]]:
    """Class decorator of a backbone module; ``name`` must be the module's name."""
    return BACKBONES.register(name)


def build_backbone(name: str, **kwargs) -> PointBackbone:
    """Make a backbone by name, one of ``BACKBONES.names()`` (kwargs go to its constructor)."""
    cls = BACKBONES.get(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # an unknown or misspelt keyword
        raise ValueError(f"bad arguments for backbone {name!r}: {exc}") from None


__all__ = ["BACKBONES", "PointBackbone", "build_backbone", "register_backbone"]
