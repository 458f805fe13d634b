"""Counting multiply-accumulates and parameters."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def attention_flops(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args, **kwargs) -> int:
    """FLOPs of `softmax(q k^T) v` as torch's counter counts its CUDA attention kernels: the two
    products over every (query, key) pair, 2 FLOPs per multiply-accumulate; a mask or causality
    does not lower it (the kernels compute the products whole, as the math path does). Leading
    dimensions are the batch and the query heads (grouped-query attention broadcasts k and v)."""
    return 2 * math.prod(query_shape[:-1]) * key_shape[-2] * (query_shape[-1] + value_shape[-1])


# `F.scaled_dot_product_attention` picks a kernel by device and input. torch's counter has formulas
# for the CUDA ones (flash, efficient, cuDNN), and the math path it takes on the meta device is
# counted through its matrix products; these are the kernels it would count as 0.
MISSING_ATTENTION_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: attention_flops,
    aten._scaled_dot_product_fused_attention_overrideable: attention_flops,
    aten._scaled_dot_product_attention_math_for_mps: attention_flops,
}


class UncountedAttentionError(RuntimeError):
    """An attention kernel ran that the MAC counter has no formula for."""


class _RefuseUncountedAttention(TorchDispatchMode):
    """Sits below the flop counter, so it sees every op the counter lets run after its own
    decompositions; an attention kernel without a formula there would be counted as 0 (as CPU
    attention was, 17.46 instead of 23.36 GMACs per VideoMAE-S chunk), so it stops the count."""

    def __init__(self, formulas: dict) -> None:
        super().__init__()
        self.formulas = formulas

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "attention" in func.overloadpacket.__name__ and func.overloadpacket not in self.formulas:
            raise UncountedAttentionError(f"count_macs: {func} ran and has no MAC formula; "
                                          f"add one to tadmodels.profile.macs.MISSING_ATTENTION_FORMULAS")
        return func(*args, **(kwargs or {}))


def count_macs(run: Callable[[], object]) -> int:
    """MACs of one call of `run`, under `torch.utils.flop_counter`, the same on every device.

    The counter reports FLOPs of matrix products, convolutions and attention as 2 per
    multiply-accumulate, so MACs = FLOPs / 2. Element-wise work (norms, activations, pooling) is not
    counted, the same convention as the GMACs quoted for VideoMAE and bLVNet-TAM. Attention is
    counted on the kernel that actually runs, whichever device picked it (formulas added for the
    kernels torch's counter misses); one it cannot count raises `UncountedAttentionError` rather
    than counting 0.
    """
    return _counted(run).get_total_flops() // 2


def count_module_macs(run: Callable[[], object], root: nn.Module) -> dict[str, int]:
    """MACs of one call of `run` inside each submodule of `root` that ran, by its name in `root`
    (counted as `count_macs` counts; a module's count includes its children's)."""
    prefix = f"{type(root).__name__}."
    counts = _counted(run).get_flop_counts()
    return {name[len(prefix):]: sum(ops.values()) // 2 for name, ops in counts.items() if name.startswith(prefix)}


def _counted(run: Callable[[], object]) -> FlopCounterMode:
    counter = FlopCounterMode(display=False, custom_mapping=MISSING_ATTENTION_FORMULAS)
    with torch.inference_mode(), _RefuseUncountedAttention(counter.flop_registry), counter:
        run()
    return counter


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
