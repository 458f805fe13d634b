"""ActionFormer's `convTransformer` backbone: conv embedding, a stem of transformer blocks at full
resolution, then a branch of blocks that each halve it; one pyramid level per branch block."""
from __future__ import annotations

from torch import Tensor, nn

from .blocks import MLP_RATIO, ChannelLayerNorm, MaskedConv1d, TransformerBlock, skip_connection


class ConvTransformerBackbone(nn.Module):
    """`arch` = (embedding convs, stem blocks, branch blocks); `windows` gives the attention window
    of the stem (first entry) and of each branch block (None: global attention).

    Stem and branch blocks sit in ModuleDicts keyed "0", "1", ... (the state-dict keys of the
    release's ModuleLists), so that deleting a block keeps the others' names. A deleted block is
    replaced by its shortcut (`skip_connection`): the identity in the stem, the max-pool in the
    branch, which keeps the pyramid's levels. `mlp_hidden` overrides a block's MLP hidden width
    (`MLP_RATIO * dim` otherwise), keyed `stem.{i}` / `branch.{i}`.
    """

    def __init__(self, in_dim: int, dim: int, num_heads: int, arch: tuple[int, int, int], windows: list[int | None],
                 scale_factor: int, embed_kernel: int, embed_with_ln: bool, dropout: float, droppath: float,
                 mlp_hidden: dict[str, int]) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.arch = arch
        self.embd = nn.ModuleList(MaskedConv1d(in_dim if i == 0 else dim, dim, embed_kernel, bias=not embed_with_ln)
                                  for i in range(arch[0]))
        self.embd_norm = nn.ModuleList(ChannelLayerNorm(dim) if embed_with_ln else nn.Identity() for _ in range(arch[0]))

        def block(name: str, window: int | None, stride: int) -> TransformerBlock:
            return TransformerBlock(dim, num_heads, window, stride, mlp_hidden.get(name, MLP_RATIO * dim), dropout, droppath)

        self.stem = nn.ModuleDict({str(i): block(f"stem.{i}", windows[0], 1) for i in range(arch[1])})
        self.branch = nn.ModuleDict({str(i): block(f"branch.{i}", windows[1 + i], scale_factor) for i in range(arch[2])})

    def block_names(self) -> list[str]:
        """The blocks still present, in order."""
        return [f"stem.{key}" for key in self.stem] + [f"branch.{key}" for key in self.branch]

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Features and masks of every pyramid level, finest first."""
        for conv, norm in zip(self.embd, self.embd_norm):
            x, mask = conv(x, mask)
            x = norm(x).relu()
        for index in range(self.arch[1]):
            x, mask = self._run("stem", index, 1, x, mask)
        features, masks = [x], [mask]
        for index in range(self.arch[2]):
            x, mask = self._run("branch", index, self.scale_factor, x, mask)
            features.append(x)
            masks.append(mask)
        return features, masks

    def _run(self, part: str, index: int, stride: int, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        blocks: nn.ModuleDict = getattr(self, part)
        key = str(index)
        return blocks[key](x, mask) if key in blocks else skip_connection(x, mask, stride)
