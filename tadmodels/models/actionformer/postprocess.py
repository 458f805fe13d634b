"""From per-point scores and offsets to a ranked, de-duplicated list of segments."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class InferenceConfig:
    pre_nms_threshold: float = 0.001
    pre_nms_topk: int = 2000
    min_duration: float = 0.05      # grid positions
    nms_sigma: float = 0.5          # Gaussian Soft-NMS
    min_score: float = 0.001
    max_segments: int = 200


@dataclass(frozen=True)
class Detections:
    """One video's detections in feature-grid units."""

    segments: Tensor  # [N, 2]
    scores: Tensor    # [N]
    labels: Tensor    # [N]


def decode_candidates(scores: Tensor, offsets: Tensor, positions: Tensor, strides: Tensor,
                      valid: Tensor, config: InferenceConfig) -> Detections:
    """Top-k (point, class) pairs above the score threshold, decoded to segments.

    `scores` [P, K] probabilities, `offsets` [P, 2] in stride units, `valid` [P] bool.
    """
    num_classes = scores.shape[1]
    flat = (scores * valid[:, None]).flatten()
    keep = torch.nonzero(flat > config.pre_nms_threshold).squeeze(1)
    if keep.numel() > config.pre_nms_topk:
        keep = keep[flat[keep].topk(config.pre_nms_topk).indices]
    point, label = keep // num_classes, keep % num_classes
    centre, stride = positions[point], strides[point]
    segments = torch.stack([centre - offsets[point, 0] * stride, centre + offsets[point, 1] * stride], dim=1)
    long_enough = (segments[:, 1] - segments[:, 0]) > config.min_duration
    return Detections(segments[long_enough], flat[keep][long_enough], label[long_enough])


def soft_nms(detections: Detections, config: InferenceConfig) -> Detections:
    """Class-aware Gaussian Soft-NMS: each pick decays the scores of same-class segments by exp(-IoU^2 / sigma)."""
    segments, scores, labels = detections.segments.clone(), detections.scores.clone(), detections.labels
    picked: list[int] = []
    picked_scores: list[Tensor] = []
    alive = scores >= config.min_score
    while alive.any() and len(picked) < config.max_segments:
        best = int(torch.where(alive, scores, -1.0).argmax())
        picked.append(best)
        picked_scores.append(scores[best].clone())
        alive[best] = False
        start = torch.maximum(segments[:, 0], segments[best, 0])
        end = torch.minimum(segments[:, 1], segments[best, 1])
        intersection = (end - start).clamp(min=0)
        union = (segments[:, 1] - segments[:, 0]) + (segments[best, 1] - segments[best, 0]) - intersection
        iou = intersection / union.clamp(min=1e-8)
        decay = torch.exp(-(iou ** 2) / config.nms_sigma)
        scores = torch.where(labels == labels[best], scores * decay, scores)
        alive &= scores >= config.min_score
    index = torch.tensor(picked, dtype=torch.long, device=segments.device)
    score_out = torch.stack(picked_scores) if picked_scores else scores.new_zeros(0)
    return Detections(segments[index], score_out, labels[index])
