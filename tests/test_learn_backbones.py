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
    "pointconv": {"out_channels": 16, "k": 8, "widths": (16, 32, 32)},
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


def test_pointnet_feature_transform_regularizer_hand_computed_and_lowered_by_a_step() -> None:
    """The penalty is ||T T^T - I||_F^2 of the (64, 64) feature alignment T, averaged over the batch.

    T's last layer starts at zero (T = I, penalty 0). Setting its bias to the identity makes
    T = 2 I for every shape: T T^T - I = 3 I, so the penalty is 9 * 64 = 576. One SGD step on the
    penalty alone then lowers it (its gradient reaches the alignment network)."""
    torch.manual_seed(0)
    net = build_backbone("pointnet", out_channels=8, width=32)
    points = torch.rand(2, 64, 3)
    net(points)
    assert net.regularizer().item() == pytest.approx(0.0, abs=1e-10)
    last = net.feature_tnet.head[-1]
    with torch.no_grad():
        last.bias.copy_(torch.eye(64).flatten())
    net(points)
    assert net.regularizer().item() == pytest.approx(576.0, rel=1e-6)
    net(points)
    before = net.regularizer()
    before.backward()
    assert last.bias.grad is not None and last.bias.grad.abs().sum() > 0
    torch.optim.SGD(net.parameters(), lr=1e-4).step()
    net(points)
    assert net.regularizer().item() < before.item()
    assert build_backbone("pointnet", out_channels=8, width=32, feature_transform=False)(points).shape == (2, 64, 8)


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


def test_debiased_batchnorm_starts_from_the_data() -> None:
    from kpengine.learn.backbones.pointnet2 import DebiasedBatchNorm1d

    bn = DebiasedBatchNorm1d(3)
    x = torch.randn(4, 3, 50) * 0.01 + 5.0  # far from the prior (mean 0, variance 1)
    bn(x)
    assert torch.allclose(bn.running_mean, x.mean(dim=(0, 2)), atol=1e-6)
    assert torch.allclose(bn.running_var, x.var(dim=(0, 2)), rtol=1e-4)
    for _ in range(20):
        bn(x)
    assert bn.momentum == 0.1  # the usual moving average after the first 10 batches


def test_pointnet2_eval_mode_matches_train_mode_after_a_few_steps(sample_root) -> None:
    """Regression: PointNet++'s first layer sees offsets of variance ~1e-4 (model units), and batch
    norm's initial running variance 1 still dominated after tens of steps, so eval-mode losses were
    at chance (log N) while train-mode ones had dropped. Eval must follow train closely."""
    import math

    from kpengine.data import KeypointNetDataset
    from kpengine.learn.batches import KeypointBatches, collate_keypoint_batches
    from kpengine.learn.heads import KeypointModel
    from kpengine.learn.losses import correspondence_loss

    shapes = KeypointNetDataset(sample_root, "chair", "train")
    data = KeypointBatches(shapes, shapes.n_classes)
    batch = collate_keypoint_batches([data[i] for i in range(4)])
    torch.manual_seed(0)
    model = KeypointModel(
        "correspondence", "pointnet2", shapes.n_classes, out_channels=16, n_samples=(64, 32), n_neighbours=(16, 16)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(25):
        loss = correspondence_loss(model(batch["points"]), batch["labellings"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_loss = correspondence_loss(model(batch["points"]), batch["labellings"]).item()
        model.eval()
        eval_loss = correspondence_loss(model(batch["points"]), batch["labellings"]).item()
        chance = math.log(batch["points"].shape[1])
        assert train_loss < 0.6 * chance  # it learnt something
        assert eval_loss < train_loss + 0.25 * (chance - train_loss), (train_loss, eval_loss)
        # and eval outputs do not depend on the rest of the batch
        alone = model(batch["points"][:1])
        together = model(batch["points"])[:1]
        assert torch.allclose(alone, together, atol=1e-4)


@pytest.mark.parametrize("train", [True, False])
def test_edgeconv_split_weights_equal_the_edge_tensor_convolution(train: bool) -> None:
    from kpengine.learn.backbones.dgcnn import EdgeConv

    torch.manual_seed(0)
    conv = EdgeConv(16, 32, 8).train(train)
    x = torch.randn(2, 16, 300, requires_grad=True)
    fast, slow = conv(x), conv.reference(x)
    assert torch.allclose(fast, slow, atol=1e-5)
    (g_fast,) = torch.autograd.grad(fast.pow(2).sum(), x)
    (g_slow,) = torch.autograd.grad(slow.pow(2).sum(), x)
    assert torch.allclose(g_fast, g_slow, atol=1e-4)


def test_local_shape_features_tell_corners_from_faces() -> None:
    from kpengine.learn.backbones.pointnet import local_shape_features

    g = torch.linspace(0, 1, 12)
    u, v = torch.meshgrid(g, g, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    zero, one = torch.zeros_like(u), torch.ones_like(u)
    faces = [torch.stack(f, dim=1) for f in ((u, v, zero), (u, v, one), (u, zero, v), (u, one, v), (zero, u, v))]
    cube = torch.unique(torch.cat(faces), dim=0)[None]  # an open box sampled on a grid
    feats = local_shape_features(cube, 9)[0]  # (9, N); 9 = a grid point and its 8 neighbours
    pts = cube[0]
    face_centre = int(torch.argmin((pts - torch.tensor([0.5, 0.5, 0.0])).norm(dim=1)))
    corner = int(torch.argmin((pts - torch.tensor([0.0, 0.0, 0.0])).norm(dim=1)))
    assert torch.allclose(feats[3:6, face_centre], torch.tensor([0.0, 0.0, 1.0]), atol=1e-4)  # |normal|
    assert feats[:3, face_centre].norm() < 1e-3  # centred in its neighbourhood
    assert feats[:3, corner].norm() > 1.0  # a corner's neighbours lie to one side
    assert feats[6, corner] > 10 * feats[6, face_centre] + 0.05  # surface variation


def test_pointnet_with_local_features_trains() -> None:
    torch.manual_seed(0)
    net = build_backbone("pointnet", out_channels=8, width=64, local_features=8)
    points = torch.rand(2, 128, 3, requires_grad=True)
    out = net(points)
    assert out.shape == (2, 128, 8) and net.min_points == 8
    out.pow(2).sum().backward()
    assert points.grad is not None and net.conv1[0].weight.grad.abs()[:, 3:].sum() > 0


def test_fps_on_cpu_picks_the_points_of_the_torch_loop() -> None:
    """fpsample (CPU) and the vectorised torch loop are the same algorithm from point 0: the same
    indices on random clouds at PointNet++'s sizes; S > N falls back to the torch loop."""
    import numpy as np

    from kpengine.learn.backbones.pointnet2 import farthest_point_sample, farthest_point_sample_torch

    xyz = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (3, 512, 3)).astype(np.float32))
    assert torch.equal(farthest_point_sample(xyz, 128), farthest_point_sample_torch(xyz, 128))
    grid = torch.from_numpy(np.stack(np.meshgrid(*[np.arange(6.0)] * 3), -1).reshape(1, -1, 3).astype(np.float32))
    assert torch.equal(farthest_point_sample(grid, 40), farthest_point_sample_torch(grid, 40))  # ties: first index
    small = xyz[:, :4]
    assert torch.equal(farthest_point_sample(small, 6), farthest_point_sample_torch(small, 6))


def test_pointconv_knn_equals_the_all_pairs_search_and_the_network_ignores_translation_and_scale() -> None:
    from kpengine.learn.backbones.pointconv import knn
    from kpengine.learn.backbones.pointnet2 import square_distance

    torch.manual_seed(0)
    x = torch.rand(2, 300, 3)
    d, i = knn(x, x[:, :50], 8)
    d_ref, i_ref = square_distance(x[:, :50], x).topk(8, dim=-1, largest=False)
    assert torch.equal(i, i_ref) and torch.allclose(d, d_ref, atol=1e-6)
    # every layer sees neighbour offsets divided by their neighbourhood's mean distance, and a density
    # with that bandwidth: the output cannot change when the cloud is moved or uniformly scaled
    net = build_backbone("pointconv", **SMALL["pointconv"])
    net.train()
    net(torch.rand(4, 256, 3))  # running statistics from a batch, then eval mode
    net.eval()
    with torch.no_grad():
        ref = net(x)
        assert torch.allclose(net(x + torch.tensor([0.3, -0.2, 0.5])), ref, atol=1e-4)
        assert torch.allclose(net(2.5 * x), ref, atol=1e-4)
        assert not torch.allclose(net(x * torch.tensor([1.0, 1.0, 2.0])), ref, atol=1e-2)  # not a shape invariant
