"""Structured channel pruning of a TAD model's droppable blocks, through torch-pruning.

Only the widths *inside* a residual block shrink: the embedding width a block reads and writes stays,
so pruned blocks still line up with the teacher's for feature distillation, and block drop and
channel pruning compose. What shrinks, per block type:

- VideoMAE block: the MLP hidden width (fc1 out, fc2 in) and whole attention heads (qkv out for
  q, k and v, q_bias, v_bias, proj in); the head width stays.
- ActionFormer backbone block (feature mode): the MLP hidden width (the 1x1 Conv1d pair). Its local
  attention keeps all heads.
- bLVNet-TAM bottleneck: the inner width (conv1 out, bn1, conv2 in and out, bn2, conv3 in). The
  last stage's TAM acts on the block input, which keeps its width.

Channels are ranked by L2 magnitude and the lowest go. Tensors are sliced by torch-pruning: the MLP
and bottleneck groups come from its DependencyGraph, traced over the MLP or the bottleneck (the
widths are block-local, so no whole-model trace is needed), the heads from
`AttentionHeadPruner`, a torch-pruning layer pruner (see there why heads need one). The pruned
widths are written into the model's architecture, so `TADModel(pruned.architecture)` builds the
same shapes and loads the pruned state dict.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import Tensor, nn

from tadmodels.models import TADModel
from tadmodels.models.actionformer.blocks import TransformerBlock
from tadmodels.models.blvnet import Bottleneck
from tadmodels.models.videomae import Attention, Block

WILDCARD = "*"

PruningFn = Callable[[nn.Module, Sequence[int]], nn.Module]

# Float products such as 0.29 * 100 = 28.999999999999996 must still round down to 29.
_ROUNDING_SLACK = 1e-6


class AttentionHeadPruner(tp.BasePruningFunc):
    """torch-pruning layer pruner for VideoMAE `Attention`, over its inner (heads x head_dim) channels.

    Index i is channel i of q, k and v alike: pruning it removes qkv output rows i, inner + i and
    2 * inner + i, q_bias[i], v_bias[i] and proj input column i. Indices must cover whole heads.

    Why a custom pruner: torch-pruning's tracer cannot follow `Attention.forward`. The q/v bias is a
    dim-0 `torch.cat` with an untraced zero tensor, which it neither maps (it maps cats on dim 1 only)
    nor sizes, and that wrong size then skews its offsets for the q/k/v unbind. So no dependency
    group exists for the heads, and this pruner couples qkv, the biases and proj itself, with
    torch-pruning's own Linear and Parameter pruning functions doing the slicing.
    """

    TARGET_MODULES = Attention

    def __init__(self) -> None:
        super().__init__()
        # Its own instance: the shared one in torch-pruning's registry has its pruning_dim
        # reassigned by every DependencyGraph that queries it.
        self._parameter_pruner = tp.pruner.function.ParameterPruner(pruning_dim=0)

    def prune_out_channels(self, layer: Attention, idxs: Sequence[int]) -> Attention:
        inner = self.get_out_channels(layer)
        head_dim = inner // layer.num_heads
        heads = sorted({i // head_dim for i in idxs})
        if len(idxs) != len(heads) * head_dim:
            raise ValueError(f"attention channels {list(idxs)} are not whole heads of width {head_dim}")
        tp.prune_linear_out_channels(layer.qkv, [part * inner + i for part in range(3) for i in idxs])
        layer.q_bias = self._parameter_pruner.prune_out_channels(layer.q_bias, idxs)
        layer.v_bias = self._parameter_pruner.prune_out_channels(layer.v_bias, idxs)
        tp.prune_linear_in_channels(layer.proj, idxs)
        layer.num_heads -= len(heads)
        return layer

    # The inner channels are both what the block computes (qkv out) and what it reads back (proj in).
    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: Attention) -> int:
        return layer.q_bias.numel()

    get_in_channels = get_out_channels


ATTENTION_HEAD_PRUNER = AttentionHeadPruner()


def prune_channels(model: TADModel, ratios: dict[str, float]) -> TADModel:
    """A copy of `model` with the channels inside the named droppable blocks pruned.

    `ratios` maps names from `model.droppable_blocks()`, or `"*"` for every block not named, to the
    fraction of channels to remove, in [0, 1); 0 leaves a block untouched. Per block the number
    removed rounds down (heads: whole heads), so at least one channel (head) always remains.
    The input model is not modified.
    """
    plan = _resolve_ratios(model, ratios)
    pruned = copy.deepcopy(model)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    before = _block_widths(pruned, list(plan))
    with _traceable(pruned):
        for name, ratio in plan.items():
            block = pruned.get_submodule(name)
            if isinstance(block, Block):
                _prune_videomae_block(block, ratio, importance)
            elif isinstance(block, TransformerBlock):
                _prune_detector_block(block, ratio, importance)
            else:  # `_block_widths` admitted only these three kinds
                _prune_bottleneck(block, ratio, importance)
    # Only widths that changed: a ratio too small to remove anything leaves the architecture as it was.
    after = _block_widths(pruned, list(plan))
    _record_widths(pruned, {field_key: width for field_key, width in after.items() if width != before[field_key]})
    return pruned


def _resolve_ratios(model: TADModel, ratios: dict[str, float]) -> dict[str, float]:
    """Validate `ratios` and expand the wildcard: remaining block name -> ratio, zeros left out."""
    valid = model.droppable_blocks()
    unknown = [name for name in ratios if name != WILDCARD and name not in valid]
    if unknown:
        raise ValueError(f"cannot prune channels of {unknown}: remaining droppable blocks are {valid} (or {WILDCARD!r})")
    for name, ratio in ratios.items():
        if not 0 <= ratio < 1:
            raise ValueError(f"channel pruning ratio {ratio!r} for {name!r} is outside [0, 1)")
    default = ratios.get(WILDCARD, 0.0)
    plan = {name: ratios.get(name, default) for name in valid}
    return {name: ratio for name, ratio in plan.items() if ratio > 0}


@contextmanager
def _traceable(model: nn.Module) -> Iterator[None]:
    """Inside, the model as torch-pruning's tracer needs it; on leaving, every module's training flag
    and parameter's requires_grad as they were.

    Eval mode, since tracing runs forwards and in training mode BatchNorm would update its statistics;
    every parameter trainable, since the tracer follows autograd and misses a frozen layer. Restoring
    requires_grad also matters because torch-pruning replaces a pruned parameter by a new one.
    """
    training = {name: module.training for name, module in model.named_modules()}
    frozen = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    model.eval().requires_grad_(True)
    try:
        yield
    finally:
        for name, module in model.named_modules():
            module.training = training[name]
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name not in frozen)


def _count_removed(width: int, ratio: float) -> int:
    """Channels (or heads) to remove out of `width`: rounded down, and at least one always stays."""
    return min(int(ratio * width + _ROUNDING_SLACK), width - 1)


def _dependency_graph(module: nn.Module, example_input: Tensor, **kwargs) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of `module`, traced on `example_input`."""
    with torch.enable_grad():  # the tracer follows autograd, even when the caller runs under no_grad
        return tp.DependencyGraph().build_dependency(module, example_inputs=example_input, **kwargs)


def _prune_group(graph: tp.DependencyGraph, root: nn.Module, pruning_fn: PruningFn, width: int, ratio: float,
                 importance: tp.importance.Importance) -> None:
    """Remove the `ratio` lowest-importance channels of the group `root` opens (with `pruning_fn`)."""
    count = _count_removed(width, ratio)
    if count == 0:
        return
    group = graph.get_pruning_group(root, pruning_fn, list(range(width)))
    lowest = torch.argsort(importance(group))[:count]
    group.prune(idxs=lowest.tolist())


def _prune_videomae_block(block: Block, ratio: float, importance: tp.importance.Importance) -> None:
    """MLP hidden width through the dependency graph of the MLP; whole heads through their pruner."""
    fc1 = block.mlp.fc1
    graph = _dependency_graph(block.mlp, fc1.weight.new_zeros(1, 1, fc1.in_features))
    _prune_group(graph, fc1, tp.prune_linear_out_channels, fc1.out_features, ratio, importance)

    attn = block.attn
    count = _count_removed(attn.num_heads, ratio)
    if count == 0:
        return
    lowest = torch.argsort(_head_importance(attn))[:count]
    head_dim = ATTENTION_HEAD_PRUNER.get_out_channels(attn) // attn.num_heads
    ATTENTION_HEAD_PRUNER(attn, [h * head_dim + i for h in lowest.tolist() for i in range(head_dim)])


@torch.no_grad()
def _head_importance(attn: Attention) -> Tensor:
    """Per head, the squared L2 norm of its weights: q, k and v rows of qkv and proj input columns.

    This ranks heads as GroupMagnitudeImportance(p=2) ranks a group's channels (squared L2 of the
    weights, biases left out), summed over each head's channels; it cannot score them itself, since
    the tracer yields no group for the heads (see `AttentionHeadPruner`).
    """
    inner = ATTENTION_HEAD_PRUNER.get_out_channels(attn)
    per_channel = attn.qkv.weight.pow(2).sum(1).view(3, inner).sum(0) + attn.proj.weight.pow(2).sum(0)
    return per_channel.view(attn.num_heads, -1).sum(1)


def _prune_detector_block(block: TransformerBlock, ratio: float, importance: tp.importance.Importance) -> None:
    """MLP hidden width, the 1x1 Conv1d pair, through the dependency graph of the MLP."""
    fc1 = block.mlp[0]
    graph = _dependency_graph(block.mlp, fc1.weight.new_zeros(1, fc1.in_channels, 2))
    _prune_group(graph, fc1, tp.prune_conv_out_channels, fc1.out_channels, ratio, importance)


def _prune_bottleneck(block: Bottleneck, ratio: float, importance: tp.importance.Importance) -> None:
    """Inner width: the group conv1 opens (bn1, conv2 in) and the one conv2 opens (bn2, conv3 in)."""
    conv1 = block.conv1
    # A TAM splits its batch into clips of `num_steps` frames, so the example is one whole clip.
    frames = block.tam.num_steps if block.tam is not None else 1
    example = conv1.weight.new_zeros(frames, conv1.in_channels, 4, 4)
    # The TAM weight is [offsets, channels] over the block input, which is never pruned here.
    unwrapped = [(block.tam.weight, 1)] if block.tam is not None else None
    graph = _dependency_graph(block, example, unwrapped_parameters=unwrapped)
    _prune_group(graph, conv1, tp.prune_conv_out_channels, conv1.out_channels, ratio, importance)
    _prune_group(graph, block.conv2, tp.prune_conv_out_channels, block.conv2.out_channels, ratio, importance)


def _block_widths(model: TADModel, names: list[str]) -> dict[tuple[str, str], int]:
    """The named blocks' prunable widths, read from the modules, by (config field, key in that field).

    The config is the backbone's end to end and the detector's in feature mode; keys are block names
    relative to the backbone (VideoMAE: the block index) or the detector's backbone (`stem.0`).
    """
    widths: dict[tuple[str, str], int] = {}
    for name in names:
        block = model.get_submodule(name)
        if isinstance(block, Block):
            key = name.removeprefix("backbone.blocks.")
            widths[("mlp_hidden", key)] = block.mlp.fc1.out_features
            widths[("heads", key)] = block.attn.num_heads
        elif isinstance(block, TransformerBlock):
            widths[("mlp_hidden", name.removeprefix("detector.backbone."))] = block.mlp[0].out_channels
        elif isinstance(block, Bottleneck):
            widths[("inner_widths", name.removeprefix("backbone."))] = block.conv1.out_channels
        else:
            raise TypeError(f"{name}: channel pruning does not know blocks of type {type(block).__name__}")
    return widths


def _record_widths(model: TADModel, widths: dict[tuple[str, str], int]) -> None:
    """Write width overrides into the architecture (and the config its module keeps)."""
    part = "detector" if model.backbone is None else "backbone"
    config = getattr(model.architecture, part)
    update: dict[str, dict[str, int]] = {}
    for (field, key), width in widths.items():
        update.setdefault(field, dict(getattr(config, field) or {}))[key] = width
    config = config.model_copy(update=update)
    getattr(model, part).config = config
    model.architecture = model.architecture.model_copy(update={part: config})
