"""The MIMO wrapper: M input slots and M heads around one ordinary backbone.

Channel layout (member-major): the input `images` [B, M, C, H, W] is flattened to
[B, M*C, H, W], so input channel m*C + c is channel c of slot m. The head is one linear layer of
M*K outputs read as [B, M, K]: output m*K + k is class k of head m. Only the stem and the head
grow with M; everything between them is shared. With M = 1 this is exactly the backbone followed
by a linear classifier (a reshape of size 1 is the only difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from training.models.backbones import build_backbone


class MimoNetwork(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        ensemble_size: int,
        input_shape: tuple[int, int, int],
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.ensemble_size = ensemble_size
        self.input_shape = input_shape  # C, H, W of one slot
        in_channels = input_shape[0]
        self.num_classes = num_classes
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, ensemble_size * num_classes)
        # Normalisation lives in the graph so that the exported model takes raw [0, 1] pixels.
        shape = (1, 1, in_channels, 1, 1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, M, C, H, W] in [0, 1] -> logits [B, M, K]."""
        b = images.shape[0]
        x = (images - self.mean) / self.std
        x = x.flatten(1, 2)  # [B, M*C, H, W], member-major channels
        features = self.backbone(x)  # [B, F]
        return self.head(features).view(b, self.ensemble_size, self.num_classes)


def tile(images: torch.Tensor, ensemble_size: int) -> torch.Tensor:
    """Serve one image to every head: [B, C, H, W] -> [B, M, C, H, W]."""
    return images.unsqueeze(1).expand(-1, ensemble_size, -1, -1, -1)


def build_network(
    arch: str,
    ensemble_size: int,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: float = 1.0,
    depth: int = 28,
) -> MimoNetwork:
    backbone, feature_dim = build_backbone(
        arch,
        in_channels=input_shape[0] * ensemble_size,
        width=width,
        depth=depth,
        input_hw=(input_shape[1], input_shape[2]),
    )
    return MimoNetwork(backbone, feature_dim, ensemble_size, input_shape, num_classes, mean, std)
