"""Backbones: same call shape, gradients reach the input, clear errors on bad input."""

from __future__ import annotations

import pytest
import torch

from kpengine.learn.backbones import PointBackbone, build_backbone

torch.set_num_threads(1)  # shared 2-core machines: one thread is far faster under load

SMALL = {
    "pointnet": {"out_channels": 16, "width": 64},
    "pointnet2": {"out_channels": 16, "n_samples": (64, 16), "n_neighbours": (8, 8)},
    "dgcnn": {"out_channels": 16, "k": 8, "width": 64},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_backbone_shapes_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, **SMALL[name])
    assert isinstance(net, PointBackbone) and net.out_channels == 16
    points = torch.rand(2, 256, 3, requires_grad=True)
    feats = net(points)
    assert feats.shape == (2, 256, 16)
    (feats.pow(2).sum() + net.regularizer()).backward()
    assert points.grad is not None and points.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_pointnet_feature_transform_regularizer_is_positive_after_training_step() -> None:
    net = build_backbone("pointnet", out_channels=8, width=32)
    net(torch.rand(2, 64, 3))
    reg0 = net.regularizer()
    assert reg0.dim() == 0 and reg0.item() >= 0


def test_bad_input_messages() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet")
    net = build_backbone("dgcnn", **SMALL["dgcnn"])
    with pytest.raises(ValueError, match="at least 8 points"):
        net(torch.rand(1, 4, 3))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        net(torch.rand(4, 3))


def test_pointnet2_ops() -> None:
    from kpengine.learn.backbones.pointnet2 import ball_query, farthest_point_sample

    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.1, 0, 0], [0, 1, 0]]])
    assert farthest_point_sample(xyz, 3).tolist() == [[0, 1, 3]]
    nb = ball_query(xyz, xyz[:, :1], radius=0.2, n_neighbours=3)
    assert nb.tolist() == [[[0, 2, 0]]]
