"""Sigmoid focal loss for classes and distance-IoU loss for 1D segments, element-wise (ActionFormer's)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal loss (Lin et al.): down-weights the many easy background points. Targets may be soft."""
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def diou_loss_1d(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Distance-IoU loss between segments given as non-negative (distance to start, distance to end)
    from one point: 1 - IoU + (centre distance / enclosing length)^2, over the leading dimension."""
    pred_left, pred_right = pred.float().unbind(-1)
    target_left, target_right = target.float().unbind(-1)
    intersection = torch.minimum(pred_right, target_right) + torch.minimum(pred_left, target_left)
    union = (pred_left + pred_right) + (target_left + target_right) - intersection
    iou = intersection / union.clamp(min=eps)
    enclosing = torch.maximum(pred_left, target_left) + torch.maximum(pred_right, target_right)
    centre_gap = 0.5 * (pred_right - pred_left - target_right + target_left)
    return 1.0 - iou + torch.square(centre_gap / enclosing.clamp(min=eps))
