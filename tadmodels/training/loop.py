"""The optimisation loop that training and alignment share.

AdamW (no decay on 1-D parameters), a per-step linear warm-up then cosine decay to zero, optional
autocast on CUDA (bf16, or fp16 with a gradient scaler), gradient clipping, a stop on a
non-finite loss, and an optional EMA of the weights that replaces them at the end.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from functools import partial
from typing import Any, Protocol

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class LoopSettings(Protocol):
    """What `fit` reads from a config (`TrainConfig` and `AlignmentConfig` both provide it)."""

    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: float
    grad_clip: float
    ema_decay: float | None
    precision: str


def lr_lambda(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to the base rate over `warmup_steps` (the first step at 1/warmup_steps of
    it), then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad, with no decay on biases and norm scales
    (1-D parameters), as ActionFormer trains."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `precision` asks for on CUDA; None (plain fp32) for `fp32` and on any
    other device, where the result is the same as asking for fp32."""
    return AUTOCAST_DTYPES.get(precision) if device.type == "cuda" else None


class PrecisionStep:
    """One optimiser step from a loss at the precision asked for: backward, gradient clipping
    (after unscaling, under fp16), step. Under fp16 a `GradScaler` scales the loss and skips
    steps whose gradients overflowed, as torch's AMP recipe does."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[nn.Parameter], settings: LoopSettings,
                 device: torch.device) -> None:
        self.optimizer, self.params, self.grad_clip = optimizer, params, settings.grad_clip
        self.device_type = device.type
        self.dtype = autocast_dtype(settings.precision, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype is torch.float16 else None

    def autocast(self):
        return nullcontext() if self.dtype is None else torch.autocast(self.device_type, dtype=self.dtype)

    def __call__(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()


def fit(model: nn.Module, loader: Iterable, loss_fn: Callable[[Any], Tensor], settings: LoopSettings,
        label: str, show_progress: bool = False) -> None:
    """Optimise the parameters of `model` that require grad, in place, `settings.epochs` times over
    `loader`; `loss_fn(batch)` gives the loss of a batch already moved to the model's device.

    With `settings.ema_decay`, an EMA of the weights and buffers (torch's `AveragedModel`, which
    starts at the weights after the first step) is kept and loaded into `model` at the end.
    """
    device = next(model.parameters()).device
    steps_per_epoch = len(loader)
    total = settings.epochs * steps_per_epoch
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
    warmup = round(settings.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_lambda, warmup_steps=warmup, total_steps=total))
    ema = None if settings.ema_decay is None else AveragedModel(
        model, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
    step = PrecisionStep(optimizer, [p for p in model.parameters() if p.requires_grad], settings, device)
    model.train()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        task = progress.add_task(label, total=total, loss=float("nan"))
        for epoch in range(1, settings.epochs + 1):
            for batch in loader:
                with step.autocast():
                    loss = loss_fn(batch.to(device))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{label} loss is {loss.item()} at epoch {epoch}")
                step(loss)
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                progress.update(task, advance=1, loss=loss.item(), description=f"{label} epoch {epoch}/{settings.epochs}")
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
