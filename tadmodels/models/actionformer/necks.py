"""ActionFormer's necks: `identity` (a LayerNorm per level, THUMOS14) and `fpn` (top-down feature
pyramid). Both use levels `start_level` onwards; padded positions are not re-masked (as released)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ChannelLayerNorm, MaskedConv1d


def _norm(channels: int, with_ln: bool, eps: float) -> nn.Module:
    return ChannelLayerNorm(channels, eps) if with_ln else nn.Identity()


class FPNIdentity(nn.Module):
    def __init__(self, levels: int, channels: int, start_level: int, with_ln: bool, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.start_level = start_level
        self.fpn_norms = nn.ModuleList(_norm(channels, with_ln, norm_eps) for _ in range(start_level, levels))

    def forward(self, features: list[Tensor], masks: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        used = range(self.start_level, len(features))
        return [norm(features[i]) for norm, i in zip(self.fpn_norms, used)], [masks[i] for i in used]


class FPN1D(nn.Module):
    """1x1 lateral convs, nearest-neighbour top-down sums, then a depthwise conv (k=3) and a norm per level."""

    def __init__(self, levels: int, in_channels: int, channels: int, scale_factor: int, start_level: int,
                 with_ln: bool, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.start_level = start_level
        self.scale_factor = scale_factor
        used = range(start_level, levels)
        self.lateral_convs = nn.ModuleList(MaskedConv1d(in_channels, channels, 1, bias=not with_ln) for _ in used)
        self.fpn_convs = nn.ModuleList(MaskedConv1d(channels, channels, 3, groups=channels, bias=not with_ln) for _ in used)
        self.fpn_norms = nn.ModuleList(_norm(channels, with_ln, norm_eps) for _ in used)

    def forward(self, features: list[Tensor], masks: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        masks = masks[self.start_level:]
        laterals = [conv(x, mask)[0] for conv, x, mask in zip(self.lateral_convs, features[self.start_level:], masks)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], scale_factor=float(self.scale_factor), mode="nearest")
        outputs = [norm(conv(x, mask)[0]) for conv, norm, x, mask in zip(self.fpn_convs, self.fpn_norms, laterals, masks)]
        return outputs, masks
