"""Anchor points of every pyramid level and their training targets (ActionFormer's label assignment,
the release's `PointGenerator` and `label_points_single_video`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Points:
    """All anchor points of a pyramid, concatenated over levels: position (feature-grid units),
    stride and regression range; `level_lengths` says how many points each level holds."""

    positions: Tensor   # [P]
    strides: Tensor     # [P]
    range_low: Tensor   # [P]
    range_high: Tensor  # [P]
    level_lengths: tuple[int, ...]


def make_points(level_lengths: list[int], strides: list[int], ranges: list[tuple[float, float]],
                device: torch.device) -> Points:
    """Points at `t * stride` for t < T_l on each level."""
    def per_level(values: list[float]) -> Tensor:
        return torch.cat([torch.full((length,), float(value), device=device) for length, value in zip(level_lengths, values)])

    positions = torch.cat([torch.arange(length, device=device, dtype=torch.float32) * stride
                           for length, stride in zip(level_lengths, strides)])
    return Points(positions, per_level(strides), per_level([low for low, _ in ranges]),
                  per_level([high for _, high in ranges]), tuple(level_lengths))


def assign_targets(points: Points, segments: Tensor, labels: Tensor, num_classes: int,
                   center_radius: float | None) -> tuple[Tensor, Tensor]:
    """Class targets `[P, K]` (0/1) and offsets `[P, 2]` (stride units) for one video's segments
    (grid units). A point is positive for a segment when it lies strictly inside the segment's centre
    region (centre +- radius * stride, clipped to the segment; the whole segment when `center_radius`
    is None) and the larger of its two distances lies in the level's range. Among several candidates
    the shortest segment wins, and every segment within 1e-3 of that length gives its class too.
    Offsets are those to the chosen segment; at negative points they belong to segment 0 and are
    never used.
    """
    num_points = points.positions.shape[0]
    if segments.shape[0] == 0:
        return segments.new_zeros(num_points, num_classes), segments.new_zeros(num_points, 2)
    pos, stride = points.positions[:, None], points.strides[:, None]
    starts, ends = segments[None, :, 0], segments[None, :, 1]
    left, right = pos - starts, ends - pos                                    # [P, N]
    if center_radius is None:
        inside = torch.minimum(left, right) > 0
    else:
        centre = 0.5 * (starts + ends)
        region_start = torch.maximum(centre - stride * center_radius, starts)
        region_end = torch.minimum(centre + stride * center_radius, ends)
        inside = torch.minimum(pos - region_start, region_end - pos) > 0
    reach = torch.maximum(left, right)
    in_range = (reach >= points.range_low[:, None]) & (reach <= points.range_high[:, None])
    lengths = (ends - starts).expand(num_points, -1).masked_fill(~(inside & in_range), math.inf)
    shortest, chosen = lengths.min(dim=1)
    winners = (lengths <= shortest[:, None] + 1e-3) & (lengths < math.inf)
    cls_targets = (winners.to(segments.dtype) @ F.one_hot(labels, num_classes).to(segments.dtype)).clamp(0.0, 1.0)
    index = torch.arange(num_points, device=pos.device)
    offsets = torch.stack([left[index, chosen], right[index, chosen]], dim=1) / stride
    return cls_targets, offsets
