"""Sigmoid focal loss for classes and distance-IoU loss for 1D segments."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise focal loss (Lin et al.): down-weights the many easy background points."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def diou_loss_1d(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Distance-IoU loss between segments given as (distance to start, distance to end) from one point.

    1 - IoU + (centre distance / enclosing length)^2, element-wise over the leading dimension.
    """
    pred_left, pred_right = pred.unbind(-1)
    tgt_left, tgt_right = target.unbind(-1)
    intersection = (torch.minimum(pred_left, tgt_left) + torch.minimum(pred_right, tgt_right)).clamp(min=0)
    union = pred_left + pred_right + tgt_left + tgt_right - intersection
    iou = intersection / union.clamp(min=eps)
    enclosing = torch.maximum(pred_left, tgt_left) + torch.maximum(pred_right, tgt_right)
    centre_gap = 0.5 * ((pred_right - pred_left) - (tgt_right - tgt_left))
    return 1 - iou + (centre_gap / enclosing.clamp(min=eps)) ** 2

