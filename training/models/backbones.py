"""Backbones: ordinary feature extractors [B, C_in, H, W] -> [B, F].

`width` multiplies every channel count (the capacity knob of the width x M grid); the MIMO
wrapper only changes `in_channels`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _ch(base: int, width: float) -> int:
    return max(1, round(base * width))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """Four 3x3 convs (32-32-64-64 at width 1) with BatchNorm, two max-pools, FC 128.

    Sized for 28x28 grayscale. The classifier reads the (H/4) x (W/4) map as it is: an adaptive
    pool there would not export to ONNX with a dynamic batch.
    """

    def __init__(
        self, in_channels: int, width: float = 1.0, input_hw: tuple[int, int] = (28, 28)
    ) -> None:
        super().__init__()
        c1, c2, fc = _ch(32, width), _ch(64, width), _ch(128, width)
        cells = (input_hw[0] // 4) * (input_hw[1] // 4)
        self.features = nn.Sequential(
            *_conv_bn(in_channels, c1),
            *_conv_bn(c1, c1),
            nn.MaxPool2d(2),
            *_conv_bn(c1, c2),
            *_conv_bn(c2, c2),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * cells, fc),
            nn.ReLU(),
        )
        self.out_features = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class BasicBlock(nn.Module):
    """Post-activation residual block (ResNet-18)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3x3 stem without max-pool, four stages of two blocks."""

    def __init__(self, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        widths = [_ch(c, width) for c in (64, 128, 256, 512)]
        layers: list[nn.Module] = [*_conv_bn(in_channels, widths[0])]
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class WideBlock(nn.Module):
    """Pre-activation wide residual block (Zagoruyko & Komodakis)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        # The projection shortcut reads the pre-activated input, as in the original WRN.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-k: depth = 6n + 4; WRN-28-10 is the paper's CIFAR network."""

    def __init__(self, in_channels: int, depth: int = 28, width: float = 10.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, _ch(16, width), _ch(32, width), _ch(64, width)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        c_in = widths[0]
        for stage, c_out in enumerate(widths[1:]):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(WideBlock(c_in, c_out, stride))
                c_in = c_out
        layers += [nn.BatchNorm2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.out_features = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _cnn(in_channels: int, width: float, depth: int, input_hw: tuple[int, int]) -> nn.Module:
    return SmallCNN(in_channels, width, input_hw)


def _resnet18(in_channels: int, width: float, depth: int, input_hw: tuple[int, int]) -> nn.Module:
    return ResNet18(in_channels, width)


def _wrn(in_channels: int, width: float, depth: int, input_hw: tuple[int, int]) -> nn.Module:
    return WideResNet(in_channels, depth, width)


BACKBONES: dict[str, Callable[[int, float, int, tuple[int, int]], nn.Module]] = {
    "cnn": _cnn,
    "resnet18": _resnet18,
    "wrn": _wrn,
}


def build_backbone(
    arch: str,
    in_channels: int,
    width: float = 1.0,
    depth: int = 28,
    input_hw: tuple[int, int] = (28, 28),
) -> tuple[nn.Module, int]:
    """The backbone and its feature dimension."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(BACKBONES)}")
    net = BACKBONES[arch](in_channels, width, depth, input_hw)
    return net, int(net.out_features)
