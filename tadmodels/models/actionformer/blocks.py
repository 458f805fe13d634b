"""Building blocks of ActionFormer's detector, with the release's module and parameter names
(happyharrycn/actionformer_release, `libs/modeling/blocks.py`) so that its checkpoints load as they are.

Tensors are `[B, C, T]`, masks `[B, 1, T]` bool. A stride-s module keeps every s-th mask position
(what the release's nearest-neighbour mask interpolation picks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedConv1d(nn.Module):
    """Conv1d ('same' padding, odd kernel) whose output is zeroed at padded positions; returns it
    with the mask at the output's resolution. The bias starts at zero, as in the release."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel size {kernel_size} must be odd")
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] % self.stride:
            raise ValueError(f"sequence length {x.shape[-1]} is not a multiple of the stride {self.stride}")
        mask = mask[:, :, ::self.stride]
        return self.conv(x) * mask, mask


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of `[B, C, T]`, weight and bias stored `[1, C, 1]` as the release does."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        # torch's fused LayerNorm over channels-last, not the release's op-by-op formula: the same
        # function to float rounding, and several times fewer operations to run and differentiate.
        normed = F.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight.view(-1), self.bias.view(-1), self.eps)
        return normed.transpose(1, 2)


def skip_connection(x: Tensor, mask: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """A block's shortcut, masked: the identity at stride 1; at stride s > 1 a max-pool (kernel
    s + 1) with every s-th mask position kept. All that is left of a block once it is dropped."""
    mask = mask[:, :, ::stride]
    if stride > 1:
        x = F.max_pool1d(x, stride + 1, stride, (stride + 1) // 2)
    return x * mask, mask


# Above this many positions local attention runs block by block, below it as one banded product.
_BANDED_MAX_LENGTH = 256
_QUERY_BLOCK = 64


def masked_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, radius: int | None) -> Tensor:
    """Softmax attention of `q` over `k`/`v` (`[B, H, L, D]`), each query over the valid keys
    within `radius` positions of it (all valid keys when `radius` is None).

    The release computes local attention over overlapping chunks (Longformer's trick); this is the
    same band, either as one masked product or, on long sequences, per block of queries against
    the keys their band reaches. Padded queries attend to everything (no empty softmax row): their
    outputs are masked by the caller.
    """
    length = q.shape[2]
    if radius is None or length <= _BANDED_MAX_LENGTH:
        allowed = valid[:, None, None, :]
        if radius is not None:
            positions = torch.arange(length, device=q.device)
            band = (positions[None, :] - positions[:, None]).abs() <= radius
            allowed = (band & allowed) | ~valid[:, None, :, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return _blocked_local_attention(q, k, v, valid, radius)


def _blocked_local_attention(q: Tensor, k: Tensor, v: Tensor, valid: Tensor, radius: int) -> Tensor:
    """Queries in blocks of `_QUERY_BLOCK`; block b sees keys [b * size - radius, (b + 1) * size + radius)."""
    batch, heads, length, dim = q.shape
    size = _QUERY_BLOCK
    blocks = -(-length // size)
    pad = blocks * size - length
    span = size + 2 * radius

    def key_blocks(t: Tensor) -> Tensor:  # [B, H, L, D] -> [B, H * blocks, span, D]
        t = F.pad(t, (0, 0, radius, radius + pad)).unfold(2, span, size)
        return t.transpose(-1, -2).reshape(batch, heads * blocks, span, dim)

    key_valid = F.pad(valid, (radius, radius + pad)).unfold(1, span, size)        # [B, blocks, span]
    query_valid = F.pad(valid, (0, pad)).view(batch, blocks, size)
    offset = torch.arange(span, device=q.device)[None, :] - torch.arange(size, device=q.device)[:, None]
    band = (offset >= 0) & (offset <= 2 * radius)
    allowed = (band & key_valid[:, :, None, :]) | ~query_valid[..., None]          # [B, blocks, size, span]
    allowed = allowed[:, None].expand(batch, heads, blocks, size, span).reshape(batch, heads * blocks, size, span)
    queries = F.pad(q, (0, 0, 0, pad)).reshape(batch, heads * blocks, size, dim)
    out = F.scaled_dot_product_attention(queries, key_blocks(k), key_blocks(v), attn_mask=allowed)
    return out.view(batch, heads, blocks * size, dim)[:, :, :length]


class MaskedMHCA(nn.Module):
    """Multi-head conv attention (the release's `LocalMaskedMHCA`, or `MaskedMHCA` when `window` is
    None): a depthwise conv and a LayerNorm on each of q, k and v before their 1x1 projections.
    With `stride` > 1 those convs downsample (kernel stride + 1), so the block's output is coarser.
    `window` is the local window (`window // 2` positions each side) or None for global attention.
    """

    def __init__(self, dim: int, num_heads: int, window: int | None, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"detector dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.radius = None if window is None else window // 2
        kernel = stride + 1 if stride > 1 else 3
        self.query_conv = MaskedConv1d(dim, dim, kernel, stride, groups=dim, bias=False)
        self.query_norm = ChannelLayerNorm(dim)
        self.key_conv = MaskedConv1d(dim, dim, kernel, stride, groups=dim, bias=False)
        self.key_norm = ChannelLayerNorm(dim)
        self.value_conv = MaskedConv1d(dim, dim, kernel, stride, groups=dim, bias=False)
        self.value_norm = ChannelLayerNorm(dim)
        self.key = nn.Conv1d(dim, dim, 1)
        self.query = nn.Conv1d(dim, dim, 1)
        self.value = nn.Conv1d(dim, dim, 1)
        self.proj_drop = nn.Dropout(dropout)
        self.proj = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        q, mask_out = self.query_conv(x, mask)
        k, _ = self.key_conv(x, mask)
        v, _ = self.value_conv(x, mask)
        q, k, v = (self.query(self.query_norm(q)), self.key(self.key_norm(k)), self.value(self.value_norm(v)))
        batch, dim, length = q.shape
        q, k, v = (t.view(batch, self.num_heads, dim // self.num_heads, length).transpose(2, 3) for t in (q, k, v))
        out = masked_attention(q, k, v, mask_out[:, 0], self.radius)
        out = out.transpose(2, 3).reshape(batch, dim, length)
        return self.proj_drop(self.proj(out)) * mask_out, mask_out


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch of a sample with probability `drop_prob`."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1 - drop_prob
    sample_mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor_()
    return x.div(keep) * sample_mask


class AffineDropPath(nn.Module):
    """Per-channel scaling of a residual branch (LayerScale, starting at 1e-4) with stochastic depth."""

    def __init__(self, channels: int, drop_prob: float, init_scale: float = 1e-4) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale = nn.Parameter(torch.full((1, channels, 1), init_scale))

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(self.scale * x, self.drop_prob, self.training)


MLP_RATIO = 4  # ActionFormer's MLP hidden width / model width, where no per-block width is given


class TransformerBlock(nn.Module):
    """Pre-LN transformer block of the release. Residual around attention and MLP; with `stride` > 1
    it downsamples inside (the attention's strided convs; the shortcut max-pooled), so dropping it
    leaves that max-pool (`skip_connection`); with stride 1 it leaves the identity.

    The MLP hidden width is explicit (not a ratio) so that a channel-pruned block can be rebuilt.
    The residual branches are scaled per channel (`AffineDropPath`) when `droppath` > 0, as in the
    release, whose state dict then holds those scales.
    """

    def __init__(self, dim: int, num_heads: int, window: int | None, stride: int, mlp_hidden: int,
                 dropout: float = 0.0, droppath: float = 0.0) -> None:
        super().__init__()
        self.stride = stride
        self.ln1 = ChannelLayerNorm(dim)
        self.ln2 = ChannelLayerNorm(dim)
        self.attn = MaskedMHCA(dim, num_heads, window, stride, dropout)
        self.mlp = nn.Sequential(nn.Conv1d(dim, mlp_hidden, 1), nn.GELU(), nn.Dropout(dropout, inplace=True),
                                 nn.Conv1d(mlp_hidden, dim, 1), nn.Dropout(dropout, inplace=True))
        self.drop_path_attn = AffineDropPath(dim, droppath) if droppath > 0 else nn.Identity()
        self.drop_path_mlp = AffineDropPath(dim, droppath) if droppath > 0 else nn.Identity()

    def shortcut(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """What the block passes on without its residual branches: what is left when it is dropped."""
        return skip_connection(x, mask, self.stride)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out, mask_out = self.attn(self.ln1(x), mask)
        out = self.shortcut(x, mask)[0] + self.drop_path_attn(out)
        return out + self.drop_path_mlp(self.mlp(self.ln2(out)) * mask_out), mask_out


class Scale(nn.Module):
    """A learnable scalar: lets the shared regression head match each level's range."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale
