"""Classification and regression heads (the release's `PtTransformerClsHead` / `PtTransformerRegHead`),
shared across pyramid levels."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ChannelLayerNorm, MaskedConv1d, Scale


@dataclass(frozen=True)
class JoinedLevels:
    """All pyramid levels side by side on one time axis with `gap` zero positions after each, so that
    a conv of kernel `2 * gap + 1` sees each level as if alone (the gaps are its zero padding): the
    shared heads run once over all levels, not once per level, with the same result."""

    features: Tensor  # [B, C, L]
    mask: Tensor      # [B, 1, L] bool, False in the gaps
    keep: Tensor      # [L] 1 on the levels, 0 in the gaps
    points: Tensor    # [P] the positions of the levels' points, in order (an index: no data-dependent
                      # boolean selection, so the heads also run on the meta device)
    level_lengths: tuple[int, ...]
    gap: int

    @staticmethod
    def join(features: list[Tensor], masks: list[Tensor], gap: int) -> "JoinedLevels":
        def with_gaps(tensors: list[Tensor]) -> Tensor:
            return torch.cat([F.pad(t, (0, gap)) for t in tensors], dim=-1)

        lengths = tuple(x.shape[-1] for x in features)
        keep = with_gaps([features[0].new_ones(length) for length in lengths])
        starts = [sum(lengths[:i]) + i * gap for i in range(len(lengths))]
        points = torch.cat([torch.arange(start, start + length, device=keep.device)
                            for start, length in zip(starts, lengths)])
        return JoinedLevels(with_gaps(features), with_gaps(masks), keep, points, lengths, gap)

    def per_level(self, values: list[Tensor]) -> Tensor:
        """One value per level spread over its positions (and gap), `[L]`."""
        return torch.cat([v.expand(length + self.gap) for v, length in zip(values, self.level_lengths)])

    def points_last(self, x: Tensor) -> Tensor:
        """`[B, C, L]` -> `[B, P, C]` over the levels' points, the gaps left out."""
        return x.index_select(-1, self.points).transpose(1, 2)


class ConvHead(nn.Module):
    """`layers - 1` x (masked conv -> LayerNorm or nothing -> ReLU), then the head's output conv.
    Padded positions are not re-masked between layers, as released, unless `mask_outputs` (OpenTAD's
    `ConvModule` zeroes them after the activation)."""

    def __init__(self, in_dim: int, dim: int, layers: int, kernel_size: int, with_ln: bool, norm_eps: float = 1e-5,
                 mask_outputs: bool = False) -> None:
        super().__init__()
        self.mask_outputs = mask_outputs
        self.head = nn.ModuleList(MaskedConv1d(in_dim if i == 0 else dim, dim, kernel_size, bias=not with_ln)
                                  for i in range(layers - 1))
        self.norm = nn.ModuleList(ChannelLayerNorm(dim, norm_eps) if with_ln else nn.Identity() for _ in range(layers - 1))

    def hidden(self, levels: JoinedLevels) -> Tensor:
        x = levels.features
        for conv, norm in zip(self.head, self.norm):
            # The gaps stay zero (the mask is zero there too).
            x = norm(conv(x, levels.mask)[0]).relu() * (levels.mask if self.mask_outputs else levels.keep)
        return x


def prior_logit(prob: float) -> float:
    """The logit whose sigmoid is `prob`."""
    return -math.log((1 - prob) / prob)


class ClassificationHead(ConvHead):
    """Per-point class logits. The bias starts at the logit of `prior_prob` so focal loss is stable
    from step one; classes listed in `empty_classes` start at a 1e-6 prior (the release's fix for
    classes without training data)."""

    def __init__(self, in_dim: int, dim: int, num_classes: int, layers: int, kernel_size: int, with_ln: bool,
                 prior_prob: float, empty_classes: list[int], norm_eps: float = 1e-5, mask_outputs: bool = False) -> None:
        super().__init__(in_dim, dim, layers, kernel_size, with_ln, norm_eps, mask_outputs)
        self.cls_head = MaskedConv1d(dim, num_classes, kernel_size)
        with torch.no_grad():
            if prior_prob > 0:
                self.cls_head.conv.bias.fill_(prior_logit(prior_prob))
            self.cls_head.conv.bias[empty_classes] = prior_logit(1e-6)

    def forward(self, levels: JoinedLevels) -> Tensor:
        """`[B, K, L]` logits."""
        return self.cls_head(self.hidden(levels), levels.mask)[0]


class RegressionHead(ConvHead):
    """Per-point distances to the action's start and end, in units of the level's stride: a ReLU
    over the output conv scaled by a learnable scalar per level."""

    def __init__(self, in_dim: int, dim: int, levels: int, layers: int, kernel_size: int, with_ln: bool,
                 norm_eps: float = 1e-5, mask_outputs: bool = False) -> None:
        super().__init__(in_dim, dim, layers, kernel_size, with_ln, norm_eps, mask_outputs)
        self.scale = nn.ModuleList(Scale() for _ in range(levels))
        self.offset_head = MaskedConv1d(dim, 2, kernel_size)

    def forward(self, levels: JoinedLevels) -> Tensor:
        """`[B, 2, L]` offsets."""
        offsets = self.offset_head(self.hidden(levels), levels.mask)[0]
        return (offsets * levels.per_level([scale.scale for scale in self.scale])).relu()
