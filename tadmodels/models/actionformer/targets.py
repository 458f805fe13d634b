"""Anchor points of every pyramid level and their training targets (ActionFormer's label assignment)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Per-level regression ranges, in feature-grid positions (ActionFormer's THUMOS14 setting).
DEFAULT_REGRESSION_RANGES: tuple[tuple[float, float], ...] = (
    (0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, math.inf),
)


@dataclass(frozen=True)
class Points:
    """All anchor points of a pyramid, concatenated over levels: position, stride, regression range."""

    positions: Tensor  # [P] in feature-grid units
    strides: Tensor    # [P]
    range_low: Tensor  # [P]
    range_high: Tensor  # [P]


def make_points(level_lengths: list[int], ranges: tuple[tuple[float, float], ...], device: torch.device) -> Points:
    """Points at `t * stride` for each level `l` of length `T_l` and stride `2 ** l`."""
    positions, strides, lows, highs = [], [], [], []
    for level, length in enumerate(level_lengths):
        stride = 2 ** level
        positions.append(torch.arange(length, device=device, dtype=torch.float32) * stride)
        strides.append(torch.full((length,), float(stride), device=device))
        lows.append(torch.full((length,), float(ranges[level][0]), device=device))
        highs.append(torch.full((length,), float(ranges[level][1]), device=device))
    return Points(torch.cat(positions), torch.cat(strides), torch.cat(lows), torch.cat(highs))


def assign_targets(points: Points, segments: Tensor, labels: Tensor, num_classes: int,
                   center_radius: float) -> tuple[Tensor, Tensor]:
    """Class targets `[P, K]` (0/1) and normalised offsets `[P, 2]` for one video.

    A point is positive for a ground-truth segment (grid units) when it lies inside the segment's
    centre region (centre +- radius * stride, clipped to the segment) and the larger of its two
    distances falls in the level's range. Among several candidates the shortest segment wins; all
    segments tied at that length give their class.
    """
    num_points = points.positions.shape[0]
    if segments.numel() == 0:
        return segments.new_zeros(num_points, num_classes), segments.new_zeros(num_points, 2)
    pos = points.positions[:, None]
    starts, ends = segments[None, :, 0], segments[None, :, 1]
    left, right = pos - starts, ends - pos
    centre = 0.5 * (starts + ends)
    radius = center_radius * points.strides[:, None]
    in_centre = torch.minimum(pos - torch.maximum(centre - radius, starts),
                              torch.minimum(centre + radius, ends) - pos) >= 0
    reach = torch.maximum(left, right)
    in_range = (reach >= points.range_low[:, None]) & (reach <= points.range_high[:, None])
    lengths = (ends - starts).expand(num_points, -1).masked_fill(~(in_centre & in_range), math.inf)
    shortest, chosen = lengths.min(dim=1)
    positive = torch.isfinite(shortest)
    winners = (lengths <= shortest[:, None] + 1e-3) & positive[:, None]
    cls_targets = (winners.float() @ torch.nn.functional.one_hot(labels, num_classes).float()).clamp(max=1.0)
    idx = torch.arange(num_points, device=pos.device)
    offsets = torch.stack([left[idx, chosen], right[idx, chosen]], dim=1) / points.strides[:, None]
    return cls_targets, offsets * positive[:, None]
