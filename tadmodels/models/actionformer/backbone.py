"""ActionFormer's `convTransformer` backbone: conv embedding, a stem of transformer blocks at full
resolution, then a branch of blocks that each halve it; one pyramid level per branch block."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import MLP_RATIO, ChannelLayerNorm, MaskedConv1d, TransformerBlock, skip_connection


class ConvTransformerBackbone(nn.Module):
    """`arch` = (embedding convs, stem blocks, branch blocks); `windows` gives the attention window
    of the stem (first entry) and of each branch block (None: global attention).

    Stem and branch blocks sit in ModuleDicts keyed "0", "1", ... (the state-dict keys of the
    release's ModuleLists), so that deleting a block keeps the others' names. A deleted block is
    replaced by its shortcut (`skip_connection`): the identity in the stem, the max-pool in the
    branch, which keeps the pyramid's levels. `mlp_hidden` overrides a block's MLP hidden width
    (`MLP_RATIO * dim` otherwise), keyed `stem.{i}` / `branch.{i}`. With `abs_pe_length`, a fixed
    sinusoid position table of that many positions is added after the embedding (the release's
    `use_abs_pe`); in eval, sequences of that length or longer get it stretched to their length.
    `norm_eps` is the embedding LayerNorms' epsilon; with `mask_outputs` each embedding layer zeroes
    the padded positions after its activation (OpenTAD's `ConvModule`; the release does not).
    """

    def __init__(self, in_dim: int, dim: int, num_heads: int, arch: tuple[int, int, int], windows: list[int | None],
                 scale_factor: int, embed_kernel: int, embed_with_ln: bool, dropout: float, droppath: float,
                 mlp_hidden: dict[str, int], abs_pe_length: int | None = None, norm_eps: float = 1e-5,
                 mask_outputs: bool = False) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.arch = arch
        self.mask_outputs = mask_outputs
        self.embd = nn.ModuleList(MaskedConv1d(in_dim if i == 0 else dim, dim, embed_kernel, bias=not embed_with_ln)
                                  for i in range(arch[0]))
        self.embd_norm = nn.ModuleList(ChannelLayerNorm(dim, norm_eps) if embed_with_ln else nn.Identity() for _ in range(arch[0]))

        def block(name: str, window: int | None, stride: int) -> TransformerBlock:
            return TransformerBlock(dim, num_heads, window, stride, mlp_hidden.get(name, MLP_RATIO * dim), dropout, droppath)

        self.stem = nn.ModuleDict({str(i): block(f"stem.{i}", windows[0], 1) for i in range(arch[1])})
        self.branch = nn.ModuleDict({str(i): block(f"branch.{i}", windows[1 + i], scale_factor) for i in range(arch[2])})
        table = sinusoid_positions(abs_pe_length, dim) if abs_pe_length else None
        self.register_buffer("pos_embd", table, persistent=False)  # not in the release's checkpoints either

    def block_names(self) -> list[str]:
        """The blocks still present, in order."""
        return [f"stem.{key}" for key in self.stem] + [f"branch.{key}" for key in self.branch]

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Features and masks of every pyramid level, finest first."""
        for conv, norm in zip(self.embd, self.embd_norm):
            x, mask = conv(x, mask)
            x = norm(x).relu()
            if self.mask_outputs:
                x = x * mask
        if self.pos_embd is not None:
            x = x + self._positions(x.shape[-1]) * mask
        for index in range(self.arch[1]):
            x, mask = self._run("stem", index, 1, x, mask)
        features, masks = [x], [mask]
        for index in range(self.arch[2]):
            x, mask = self._run("branch", index, self.scale_factor, x, mask)
            features.append(x)
            masks.append(mask)
        return features, masks

    def _positions(self, length: int) -> Tensor:
        table = self.pos_embd
        if self.training and length > table.shape[-1]:
            raise ValueError(f"sequence length {length} exceeds the position table's {table.shape[-1]} in training")
        if not self.training and length >= table.shape[-1]:
            table = F.interpolate(table, length, mode="linear", align_corners=False)
        return table[:, :, :length]

    def _run(self, part: str, index: int, stride: int, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        blocks: nn.ModuleDict = getattr(self, part)
        key = str(index)
        return blocks[key](x, mask) if key in blocks else skip_connection(x, mask, stride)


def sinusoid_positions(length: int, channels: int) -> Tensor:
    """`[1, C, length]`: position t, channel c -> sin (even c) or cos (odd c) of t / 10000^(2 (c // 2) / C),
    computed in float64, divided by sqrt(C) in float32, as the release's table."""
    positions = torch.arange(length, dtype=torch.float64)[:, None]
    channel = torch.arange(channels)
    angles = positions / torch.pow(10000.0, (2 * (channel // 2) / channels).double())
    table = torch.where(channel % 2 == 0, angles.sin(), angles.cos()).float()
    return table.T[None].contiguous() / channels ** 0.5
