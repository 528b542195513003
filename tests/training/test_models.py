"""MIMO networks: M = 1 is an ordinary network, the channel layout is member-major, only the
stem and the head grow with M."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.models import build_backbone, build_network
from training.models.mimo import MimoNetwork, tile

K = 10
# arch -> (input shape C, H, W; width; depth): small enough to run in milliseconds.
ARCHS = {
    "cnn": ((3, 16, 16), 0.25, 28),
    "resnet18": ((3, 16, 16), 0.125, 28),
    "wrn": ((3, 16, 16), 1.0, 10),
}
MEAN = [0.2, 0.5, 0.7]
STD = [0.3, 0.25, 0.1]


def make(arch: str, ensemble_size: int, seed: int = 0) -> MimoNetwork:
    shape, width, depth = ARCHS[arch]
    torch.manual_seed(seed)
    c = shape[0]
    return build_network(arch, ensemble_size, shape, K, MEAN[:c], STD[:c], width, depth)


def stem(net: MimoNetwork) -> nn.Conv2d:
    """The first convolution: the only layer that reads the M * C input channels."""
    return next(m for m in net.backbone.modules() if isinstance(m, nn.Conv2d))


def images(batch: int, ensemble_size: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, ensemble_size, *shape, generator=g)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_single_member_is_an_ordinary_network(arch: str, train_mode: bool) -> None:
    shape, width, depth = ARCHS[arch]
    c = shape[0]
    net = make(arch, 1)
    # An ordinary network: the backbone on C channels and a K-way linear classifier. Loading
    # the MIMO weights strictly proves that the two have exactly the same parameters.
    backbone, features = build_backbone(arch, c, width, depth, input_hw=shape[1:])
    head = nn.Linear(features, K)
    backbone.load_state_dict(net.backbone.state_dict())
    head.load_state_dict(net.head.state_dict())
    net.train(train_mode)
    backbone.train(train_mode)

    x = images(4, 1, shape, seed=1)
    mean = torch.tensor(MEAN[:c]).view(1, c, 1, 1)
    std = torch.tensor(STD[:c]).view(1, c, 1, 1)
    with torch.no_grad():
        out = net(x)
        expected = head(backbone((x[:, 0] - mean) / std))
    assert out.shape == (4, 1, K)
    torch.testing.assert_close(out[:, 0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("ensemble_size", [1, 2, 3])
def test_output_shape(arch: str, ensemble_size: int) -> None:
    net = make(arch, ensemble_size).eval()
    shape = ARCHS[arch][0]
    with torch.no_grad():
        out = net(images(5, ensemble_size, shape, seed=0))
    assert out.shape == (5, ensemble_size, K)
    assert torch.isfinite(out).all()
    assert stem(net).in_channels == ensemble_size * shape[0]


def test_cnn_on_mnist_shape() -> None:
    net = build_network("cnn", 3, (1, 28, 28), K, [0.13], [0.31]).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 1, 28, 28)).shape == (2, 3, K)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("slot", [0, 1, 2])
def test_input_channels_are_member_major(arch: str, slot: int) -> None:
    """Channels slot*C .. slot*C + C - 1 of the stem are what slot `slot` multiplies.

    With C = 3 this tells member-major (m*C + c) apart from interleaved (c*M + m).
    """
    M = 3
    shape = ARCHS[arch][0]
    c = shape[0]
    net = make(arch, M).eval()
    with torch.no_grad():
        keep = torch.zeros(M * c, dtype=torch.bool)
        keep[slot * c : (slot + 1) * c] = True
        stem(net).weight[:, ~keep] = 0.0

        x = images(4, M, shape, seed=2)
        before = net(x)
        for other in range(M):
            changed = x.clone()
            changed[:, other] = torch.rand(4, *shape, generator=torch.Generator().manual_seed(9))
            after = net(changed)
            if other == slot:
                assert (after - before).abs().max() > 1e-3, "slot's own image must matter"
            else:
                torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("head_index", [0, 2])
def test_head_outputs_are_member_major(head_index: int) -> None:
    """Head output m*K + k is class k of head m: rows of head m feed out[:, m] only."""
    M = 3
    net = make("cnn", M).eval()
    with torch.no_grad():
        rows = torch.zeros(M * K, dtype=torch.bool)
        rows[head_index * K : (head_index + 1) * K] = True
        net.head.weight[~rows] = 0.0
        net.head.bias[~rows] = 0.0
        out = net(images(4, M, ARCHS["cnn"][0], seed=3))
    for m in range(M):
        if m == head_index:
            assert out[:, m].abs().max() > 0
        else:
            assert torch.equal(out[:, m], torch.zeros_like(out[:, m]))


def test_tile_puts_the_image_in_every_slot() -> None:
    x = torch.rand(4, 3, 8, 8)
    tiled = tile(x, 3)
    assert tiled.shape == (4, 3, 3, 8, 8)
    for m in range(3):
        assert torch.equal(tiled[:, m], x)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_only_stem_and_head_grow_with_ensemble_size(arch: str) -> None:
    one, three = make(arch, 1), make(arch, 3)
    c = ARCHS[arch][0][0]
    s1, s3 = one.state_dict(), three.state_dict()
    assert s1.keys() == s3.keys()
    stem_name = next(n for n, m in one.named_modules() if m is stem(one)) + ".weight"
    grown = {k for k in s1 if s1[k].shape != s3[k].shape}
    assert grown == {stem_name, "head.weight", "head.bias"}

    conv = stem(one)
    features = one.head.in_features
    extra_stem = 2 * c * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    extra_head = 2 * K * (features + 1)
    assert parameter_count(three) - parameter_count(one) == extra_stem + extra_head


@pytest.mark.parametrize(
    ("arch", "shape"), [("cnn", (1, 28, 28)), ("resnet18", (3, 32, 32))], ids=["cnn", "resnet18"]
)
def test_parameter_growth_is_about_one_percent_at_full_width(
    arch: str, shape: tuple[int, int, int]
) -> None:
    c = shape[0]
    one = build_network(arch, 1, shape, K, [0.5] * c, [0.25] * c)
    three = build_network(arch, 3, shape, K, [0.5] * c, [0.25] * c)
    growth = parameter_count(three) / parameter_count(one) - 1
    assert 0 < growth < 0.01


@pytest.mark.parametrize("depth", [11, 12, 27])
def test_wrn_rejects_a_depth_that_is_not_6n_plus_4(depth: int) -> None:
    with pytest.raises(ValueError, match=rf"6n\+4.*got {depth}"):
        build_network("wrn", 3, (3, 16, 16), K, MEAN, STD, width=1.0, depth=depth)


def test_wrn_accepts_valid_depths() -> None:
    for depth, blocks in [(10, 3), (16, 6)]:
        net = build_network("wrn", 1, (3, 16, 16), K, MEAN, STD, width=1.0, depth=depth)
        assert sum(type(m).__name__ == "WideBlock" for m in net.modules()) == blocks


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'vit'.*cnn.*resnet18.*wrn"):
        build_network("vit", 3, (3, 16, 16), K, MEAN, STD)
