"""The detector's own feature pyramid: conv embedding, then transformer levels of falling resolution."""
from __future__ import annotations

from torch import Tensor, nn

from .blocks import MLP_RATIO, ChannelLayerNorm, Downsample, MaskedConv1d, TransformerBlock


class ConvEmbedding(nn.Module):
    """`layers` x (masked conv k=3 -> LayerNorm -> ReLU): projects input features to the detector width."""

    def __init__(self, in_dim: int, dim: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(MaskedConv1d(in_dim if i == 0 else dim, dim, 3, bias=False) for i in range(layers))
        self.norms = nn.ModuleList(ChannelLayerNorm(dim) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = norm(conv(x, mask)).relu() * mask
        return x


class PyramidLevel(nn.Module):
    """One pyramid level: optional 2x downsampling, then residual transformer blocks.

    `mlp_hidden` gives each block's MLP hidden width, and so the number of blocks. The blocks sit in
    a ModuleDict keyed by index so that dropping one keeps the others' names.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_hidden: list[int], downsample: bool) -> None:
        super().__init__()
        self.downsample = Downsample() if downsample else None
        self.blocks = nn.ModuleDict(
            {str(i): TransformerBlock(dim, num_heads, window, hidden) for i, hidden in enumerate(mlp_hidden)}
        )

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.downsample is not None:
            x, mask = self.downsample(x, mask)
        for block in self.blocks.values():
            x = block(x, mask)
        return x, mask


class ConvTransformerPyramid(nn.Module):
    """ActionFormer's backbone: embedding, `stem_blocks` blocks at stride 1, then `levels - 1` levels
    that each downsample by 2 and run one block. Returns the features and masks of every level.

    `mlp_hidden` overrides the MLP hidden width (`MLP_RATIO * dim` otherwise) of single blocks, keyed
    by their name relative to the pyramid (`levels.{i}.blocks.{j}`).
    """

    def __init__(self, in_dim: int, dim: int, num_heads: int, window: int, embed_layers: int,
                 stem_blocks: int, levels: int, mlp_hidden: dict[str, int]) -> None:
        super().__init__()
        self.embed = ConvEmbedding(in_dim, dim, embed_layers)

        def widths(level: int, num_blocks: int) -> list[int]:
            return [mlp_hidden.get(f"levels.{level}.blocks.{i}", MLP_RATIO * dim) for i in range(num_blocks)]

        self.levels = nn.ModuleList(
            [PyramidLevel(dim, num_heads, window, widths(0, stem_blocks), downsample=False)]
            + [PyramidLevel(dim, num_heads, window, widths(level, 1), downsample=True) for level in range(1, levels)]
        )
        self.out_norms = nn.ModuleList(ChannelLayerNorm(dim) for _ in range(levels))

    def forward(self, x: Tensor, mask: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        x = self.embed(x, mask)
        features, masks = [], []
        for level, norm in zip(self.levels, self.out_norms):
            x, mask = level(x, mask)
            features.append(norm(x) * mask)
            masks.append(mask)
        return features, masks
