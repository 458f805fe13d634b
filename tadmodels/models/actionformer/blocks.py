"""Building blocks of the ActionFormer-style detector. Tensors are `[B, C, T]`, masks `[B, 1, T]` bool."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedConv1d(nn.Module):
    """1D convolution that zeroes the padded positions of its output (stride 1 keeps the mask)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.conv(x) * mask


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a `[B, C, T]` tensor."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class LocalAttention(nn.Module):
    """Multi-head self-attention restricted to a window of `window` positions around each query.

    A banded mask over full attention: exact local attention, and on the sequence lengths of
    THUMOS14 (<= 2304) cheap enough that a sliding-window kernel is not worth its complexity.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"detector dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window = window
        self.qkv = nn.Conv1d(dim, 3 * dim, 1)
        self.proj = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, dim, length = x.shape
        q, k, v = self.qkv(x).view(batch, 3, self.num_heads, dim // self.num_heads, length).transpose(-1, -2).unbind(1)
        positions = torch.arange(length, device=x.device)
        band = (positions[:, None] - positions[None, :]).abs() <= self.window // 2
        allowed = band[None, None] & mask[:, None, :, :]
        # A padded query sees nothing; let it attend to itself so softmax stays finite (its output is masked).
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=x.device)[None, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.proj(out.transpose(-1, -2).reshape(batch, dim, length)) * mask


MLP_RATIO = 4  # ActionFormer's MLP hidden width / model width, where no per-block width is given


class TransformerBlock(nn.Module):
    """Pre-LN local-attention transformer block; residual, so dropping it leaves the identity.

    The MLP hidden width is explicit (not a ratio) so that a channel-pruned block can be rebuilt.
    """

    def __init__(self, dim: int, num_heads: int, window: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = LocalAttention(dim, num_heads, window)
        self.norm2 = ChannelLayerNorm(dim)
        self.mlp = nn.Sequential(nn.Conv1d(dim, mlp_hidden, 1), nn.GELU(), nn.Conv1d(mlp_hidden, dim, 1))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x)) * mask


class Downsample(nn.Module):
    """Halve the temporal resolution: max-pool the features, keep every other mask position."""

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        mask = mask[:, :, ::2]
        return F.max_pool1d(x, kernel_size=3, stride=2, padding=1) * mask, mask


class Scale(nn.Module):
    """A learnable scalar: lets the shared regression head match each level's range."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale
