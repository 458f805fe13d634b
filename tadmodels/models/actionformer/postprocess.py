"""From per-point scores and offsets to a ranked, de-duplicated list of segments: the release's
inference (`inference_single_video`, `batched_nms`, its C++ 1D Soft-NMS and NMS, `seg_voting`),
with the same sorting, tie order, score decay and thresholds, vectorised over classes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from ...fields import added_field


class InferenceConfig(BaseModel):
    """The release's `test_cfg`; defaults are its THUMOS14 setting. Lengths are in grid positions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pre_nms_thresh: float = Field(default=0.001, ge=0, description="candidate score threshold")
    pre_nms_topk: int = Field(default=2000, ge=1, description="candidates kept per level (or per video, see pre_nms_scope)")
    pre_nms_scope: Literal["level", "video"] = added_field("level", description=(
        "the top-k is taken per pyramid level (the release) or over all levels together (OpenTAD)"))
    duration_thresh: float | None = Field(default=0.05, ge=0, description=(
        "segments must be longer than this; None: every length kept, zero included (OpenTAD)"))
    nms_method: Literal["soft", "hard", "none"] = "soft"
    iou_threshold: float = Field(default=0.1, ge=0, le=1, description="hard NMS suppression threshold")
    nms_sigma: float = Field(default=0.5, gt=0, description="Gaussian Soft-NMS: decay exp(-IoU^2 / sigma)")
    min_score: float = Field(default=0.001, ge=0)
    max_seg_num: int = Field(default=200, ge=1)
    multiclass_nms: bool = True
    voting_thresh: float = Field(default=0.7, description="score voting IoU (class-agnostic NMS only); <= 0: off")


@dataclass(frozen=True)
class Detections:
    """One video's detections in feature-grid units."""

    segments: Tensor  # [N, 2]
    scores: Tensor    # [N]
    labels: Tensor    # [N]

    def __getitem__(self, index: Tensor) -> "Detections":
        return Detections(self.segments[index], self.scores[index], self.labels[index])

    @staticmethod
    def cat(parts: list["Detections"]) -> "Detections":
        return Detections(*(torch.cat([getattr(p, field) for p in parts]) for field in ("segments", "scores", "labels")))


def level_candidates(probs: Tensor, offsets: Tensor, positions: Tensor, strides: Tensor,
                     config: InferenceConfig) -> Detections:
    """One level's top-k (point, class) pairs above the score threshold, decoded to segments longer
    than `duration_thresh`. `probs` [T, K] (zero at padded points), `offsets` [T, 2] in stride units."""
    num_classes = probs.shape[1]
    flat = probs.flatten()
    keep = flat > config.pre_nms_thresh
    ranked, order = flat[keep].sort(descending=True)
    top = torch.nonzero(keep, as_tuple=True)[0][order[:config.pre_nms_topk]]
    point = torch.div(top, num_classes, rounding_mode="floor")
    centre, stride = positions[point], strides[point]
    segments = torch.stack([centre - offsets[point, 0] * stride, centre + offsets[point, 1] * stride], dim=-1)
    candidates = Detections(segments, ranked[:config.pre_nms_topk], torch.fmod(top, num_classes))
    if config.duration_thresh is None:
        return candidates
    return candidates[(segments[:, 1] - segments[:, 0]) > config.duration_thresh]


def batched_nms(candidates: Detections, config: InferenceConfig) -> Detections:
    """NMS per class (or over all classes, then score voting), then the `max_seg_num` best by score."""
    if candidates.scores.numel() == 0 or config.nms_method == "none":
        return candidates
    if config.multiclass_nms:
        groups = [torch.where(candidates.labels == label)[0] for label in torch.unique(candidates.labels)]
    else:
        groups = [torch.arange(candidates.scores.shape[0])]
    if config.nms_method == "soft":
        picks, scores = soft_nms(candidates.segments, candidates.scores, groups, config.nms_sigma,
                                 config.min_score, config.max_seg_num)
    else:
        picks = [hard_nms(candidates.segments[g], candidates.scores[g], config.iou_threshold,
                          config.min_score, config.max_seg_num) for g in groups]
        picks = [g[p] for g, p in zip(groups, picks)]
        scores = [candidates.scores[p] for p in picks]
    kept = Detections(candidates.segments[torch.cat(picks)], torch.cat(scores), candidates.labels[torch.cat(picks)])
    if not config.multiclass_nms and config.voting_thresh > 0:
        kept = Detections(score_voting(kept.segments, candidates.segments, candidates.scores, config.voting_thresh),
                          kept.scores, kept.labels)
    order = kept.scores.sort(descending=True).indices
    return kept[order[:config.max_seg_num]]


def soft_nms(segments: Tensor, scores: Tensor, groups: list[Tensor], sigma: float, min_score: float,
             max_picks: int) -> tuple[list[Tensor], list[Tensor]]:
    """Gaussian Soft-NMS within each group of candidate indices, all groups at once: the picks (indices
    into `segments`) in order and their scores at the time they were picked, at most `max_picks` each.

    Step i of the release's C++ loop, per group: pick the first maximum among the candidates left
    (positions [i, n)), swap it to position i, decay every later score by exp(-IoU^2 / sigma), and
    discard each that falls below `min_score` by moving the last remaining candidate into its place.
    Here the groups are rows of a padded table that holds positions [i, n) only; the discards are one
    permutation per step (the t-th discarded slot left of the new end receives the t-th surviving
    candidate right of it, counted from the end), so candidates keep the release's order and its ties
    resolve alike. Only the first `max_picks` steps run: later steps cannot change earlier picks.
    The loop runs in NumPy: hundreds of small steps, where torch's per-operation cost dominates.
    """
    index = pad_sequence(groups, batch_first=True).numpy()
    start, end = segments[:, 0].numpy()[index], segments[:, 1].numpy()[index]
    # start, end, area, score and the candidate's index (exact in float32 below 2**24), [5, G, N];
    # float32 arithmetic throughout, as the C++ loop's
    table = np.stack([start, end, end - start + np.float32(1e-6), scores.numpy()[index], index.astype(np.float32)])
    count = np.array([len(g) for g in groups])
    rows, positions = np.arange(len(groups)), np.arange(table.shape[2])
    sigma, min_score = np.float32(sigma), np.float32(min_score)
    picks: list[np.ndarray] = []
    for _ in range(max_picks):
        width = count.max()
        if width == 0:
            break
        table, cols = table[:, :, :width], positions[:width]
        left = cols < count[:, None]
        best = np.where(left, table[3], -np.inf).argmax(1)
        swap = np.repeat(cols[None], len(groups), axis=0)
        swap[rows, best] = 0
        swap[:, 0] = best
        table = np.take_along_axis(table, swap[None], axis=2)
        picks.append(np.where(count > 0, table[3:, :, 0], np.nan))  # [2, G]: score, index
        start, end, area, score = table[:4, :, 1:]
        inter = np.maximum(np.minimum(end, table[1, :, :1]) - np.maximum(start, table[0, :, :1]), np.float32(0))
        overlap = inter / (table[2, :, :1] + area - inter)
        # exp in float64, then rounded: agrees with the C library's float exp more often than float32 exp
        score = score * np.exp((-(overlap * overlap) / sigma).astype(np.float64)).astype(np.float32)
        later = left[:, 1:]
        discarded = later & (score < min_score)
        table = table[:, :, 1:].copy()
        table[3] = score
        count = (later & ~discarded).sum(1)
        if discarded.any():
            table = np.take_along_axis(table, _refill(discarded, later, count)[None], axis=2)
    picked = np.stack(picks, axis=-1) if picks else np.zeros((2, len(groups), 0), dtype=np.float32)
    taken = np.isfinite(picked[0])
    return ([torch.from_numpy(picked[1, g][taken[g]].astype(np.int64)) for g in range(len(groups))],
            [torch.from_numpy(picked[0, g][taken[g]]) for g in range(len(groups))])


def _refill(discarded: np.ndarray, present: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per row, the permutation that moves survivors from right of `count` into the discarded slots
    left of it: the t-th such slot from the left receives the t-th such survivor from the right."""
    rows, width = discarded.shape
    cols = np.arange(width)
    holes = discarded & (cols < count[:, None])
    movers = present & ~discarded & (cols >= count[:, None])
    mover_rank = movers[:, ::-1].cumsum(1)[:, ::-1] - 1
    by_rank = np.zeros((rows, width + 1), dtype=np.int64)
    np.put_along_axis(by_rank, np.where(movers, mover_rank, width), np.broadcast_to(cols, (rows, width)), axis=1)
    hole_rank = np.maximum(holes.cumsum(1) - 1, 0)
    return np.where(holes, np.take_along_axis(by_rank, hole_rank, axis=1), cols)


def hard_nms(segments: Tensor, scores: Tensor, iou_threshold: float, min_score: float, max_picks: int) -> Tensor:
    """Greedy NMS as the release's C++ one: candidates above `min_score` by descending score, each
    kept one removing the later ones it overlaps with IoU >= `iou_threshold`. Returns indices."""
    candidates = torch.nonzero(scores > min_score, as_tuple=True)[0] if min_score > 0 else torch.arange(len(scores))
    order = candidates[scores[candidates].sort(0, descending=True).indices]
    start, end = segments[order, 0].numpy(), segments[order, 1].numpy()
    area = end - start + np.float32(1e-6)
    alive = np.ones(len(order), dtype=bool)
    kept: list[int] = []
    while len(kept) < max_picks and alive.any():
        best = int(alive.argmax())
        kept.append(best)
        alive[best] = False
        inter = np.maximum(np.minimum(end[best], end) - np.maximum(start[best], start), np.float32(0))
        alive &= inter / (area[best] + area - inter) < np.float32(iou_threshold)
    return order[torch.tensor(kept, dtype=torch.long)]


def score_voting(kept: Tensor, candidates: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Each kept segment becomes the average of the candidates overlapping it by IoU >= the
    threshold, weighted by score times IoU (the release's `seg_voting`)."""
    inter = (torch.minimum(kept[:, None, 1], candidates[None, :, 1])
             - torch.maximum(kept[:, None, 0], candidates[None, :, 0])).clamp(min=0)
    lengths = (kept[:, 1] - kept[:, 0])[:, None] + (candidates[:, 1] - candidates[:, 0])[None, :]
    iou = inter / (lengths - inter)
    weights = (iou >= iou_threshold).to(scores.dtype) * scores[None, :] * iou
    return (weights / weights.sum(dim=1, keepdim=True)) @ candidates
