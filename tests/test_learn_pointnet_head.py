"""PointNet's head applies the global feature once per shape: it must equal the concatenation."""

import torch

from kpengine.learn.backbones import build_backbone


def test_head_equals_concatenating_the_global_feature_at_every_point():
    torch.manual_seed(0)
    net = build_backbone("pointnet", width=64, out_channels=16).eval()
    points = torch.rand(3, 200, 3)
    x = points.transpose(1, 2)
    x = torch.bmm(net.input_tnet(x).transpose(1, 2), x)
    x = net.conv1(x)
    x = torch.bmm(net.feature_tnet(x).transpose(1, 2), x)
    h128 = net.conv2[3:6](net.conv2[:3](x))
    g = net.conv2[6:](h128).amax(dim=2, keepdim=True)
    reference = net.seg(torch.cat([x, h128, g.expand(-1, -1, x.shape[2])], dim=1)).transpose(1, 2)
    torch.testing.assert_close(net(points), reference, atol=1e-5, rtol=1e-5)
