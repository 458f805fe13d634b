"""Classification and regression heads, shared across pyramid levels."""
from __future__ import annotations

import math

from torch import Tensor, nn

from .blocks import ChannelLayerNorm, MaskedConv1d, Scale


class ConvHead(nn.Module):
    """`layers - 1` x (conv k=3 -> LayerNorm -> ReLU), then a conv k=3 to `out_dim` channels."""

    def __init__(self, dim: int, out_dim: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(MaskedConv1d(dim, dim, 3, bias=False) for _ in range(layers - 1))
        self.norms = nn.ModuleList(ChannelLayerNorm(dim) for _ in range(layers - 1))
        self.out = MaskedConv1d(dim, out_dim, 3)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = norm(conv(x, mask)).relu()
        return self.out(x, mask)


class ClassificationHead(ConvHead):
    """Per-point class logits; the bias starts at a 1% prior so focal loss is stable from step one."""

    def __init__(self, dim: int, num_classes: int, layers: int, prior_prob: float = 0.01) -> None:
        super().__init__(dim, num_classes, layers)
        nn.init.constant_(self.out.conv.bias, -math.log((1 - prior_prob) / prior_prob))


class RegressionHead(ConvHead):
    """Per-point distances to the action's start and end, in units of the level's stride."""

    def __init__(self, dim: int, layers: int, levels: int) -> None:
        super().__init__(dim, 2, layers)
        self.scales = nn.ModuleList(Scale() for _ in range(levels))
        # Offsets pass a ReLU: starting them at one stride keeps them off the flat side, where a
        # channel that starts negative at every positive point would never receive a gradient.
        nn.init.constant_(self.out.conv.bias, 1.0)

    def forward_level(self, x: Tensor, mask: Tensor, level: int) -> Tensor:
        return self.scales[level](self(x, mask)).relu()
