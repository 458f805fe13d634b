"""Counting multiply-accumulates and parameters."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(run: Callable[[], object]) -> int:
    """MACs of one call of `run`, under `torch.utils.flop_counter`.

    The counter reports FLOPs of matrix products, convolutions and attention as 2 per
    multiply-accumulate, so MACs = FLOPs / 2. Element-wise work (norms, activations, pooling) is not
    counted, the same convention as the GMACs quoted for VideoMAE and bLVNet-TAM.
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
