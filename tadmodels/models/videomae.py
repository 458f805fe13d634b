"""VideoMAE-style ViT backbone: tubelet patch embedding, fixed sinusoidal positions, pre-LN blocks.

Parameter names follow the released VideoMAE checkpoints (`patch_embed.proj`, `blocks.{i}.norm1`,
`blocks.{i}.attn.qkv`, `blocks.{i}.attn.q_bias`, `blocks.{i}.attn.v_bias`, `blocks.{i}.attn.proj`,
`blocks.{i}.norm2`, `blocks.{i}.mlp.fc1`, `blocks.{i}.mlp.fc2`, `norm`) so that real checkpoints load.
Blocks live in an `nn.ModuleDict` keyed by their original index: a dropped block is deleted from it
and every other block keeps its name (and so its checkpoint keys).
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn


class VideoMAEConfig(BaseModel):
    """Architecture of a VideoMAE-style backbone; `preset` fills the fields not given.

    `mlp_hidden` and `heads` override the width of single blocks (keyed by block index) so that a
    channel-pruned model can be rebuilt from its config.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["videomae"] = "videomae"
    preset: str | None = None
    depth: int = Field(ge=1)
    dim: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    mlp_ratio: float = Field(default=4.0, gt=0)
    patch_size: int = Field(default=16, ge=1)
    tubelet_size: int = Field(default=2, ge=1)
    img_size: int = Field(default=224, ge=1)
    num_frames: int = Field(default=16, ge=1, description="frames per chunk")
    mlp_hidden: dict[str, int] = Field(default_factory=dict)
    heads: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            name = data["preset"]
            if name not in VIDEOMAE_PRESETS:
                raise ValueError(f"preset: unknown {name!r}, expected one of {sorted(VIDEOMAE_PRESETS)}")
            data = {**VIDEOMAE_PRESETS[name], **data}
        return data

    @model_validator(mode="after")
    def _check_shapes(self) -> "VideoMAEConfig":
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.num_frames % self.tubelet_size:
            raise ValueError(f"num_frames {self.num_frames} is not divisible by tubelet_size {self.tubelet_size}")
        for key in (*self.mlp_hidden, *self.heads):
            if not key.isdigit() or int(key) >= self.depth:
                raise ValueError(f"width override for block {key!r}: expected a block index below {self.depth}")
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_tokens(self) -> int:
        grid = self.img_size // self.patch_size
        return (self.num_frames // self.tubelet_size) * grid * grid


VIDEOMAE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(depth=8, dim=64, num_heads=4, patch_size=8, img_size=32, num_frames=16),
    "S": dict(depth=12, dim=384, num_heads=6, patch_size=16, img_size=160, num_frames=16),
    "B": dict(depth=12, dim=768, num_heads=12, patch_size=16, img_size=160, num_frames=16),
    "L": dict(depth=24, dim=1024, num_heads=16, patch_size=16, img_size=160, num_frames=16),
}


def sinusoid_position_table(num_positions: int, dim: int) -> Tensor:
    """The fixed sine/cosine table of "Attention is all you need", as VideoMAE uses it."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2) / dim
    angles = position / torch.pow(10000.0, exponent.to(torch.float64))[None, :]
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.to(torch.float32)


class PatchEmbed(nn.Module):
    """Tubelets of `tubelet x patch x patch` pixels -> tokens, by one strided Conv3d."""

    def __init__(self, dim: int, patch_size: int, tubelet_size: int, in_chans: int = 3) -> None:
        super().__init__()
        size = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=size, stride=size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with VideoMAE's bias layout: q and v biased, k not."""

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(inner))
        self.v_bias = nn.Parameter(torch.zeros(inner))
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        # Calling the qkv module (not F.linear on its weight) keeps adapters wrapped around it in the path.
        qkv = self.qkv(x) + torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        q, k, v = qkv.view(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: residual, so dropping it leaves the identity."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VideoMAEBackbone(nn.Module):
    """Chunks of frames -> per-tubelet features averaged over space.

    Input `[N, 3, F, H, W]` (normalised floats, F = `num_frames`), output `[N, F / tubelet, dim]`:
    one feature per tubelet step, which is the temporal grid the detector sees.
    """

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.dim
        self.temporal_stride = config.tubelet_size
        self.chunk_frames = config.num_frames
        self.patch_embed = PatchEmbed(config.dim, config.patch_size, config.tubelet_size)
        self.register_buffer("pos_embed", sinusoid_position_table(config.num_tokens, config.dim), persistent=False)
        default_hidden = int(config.dim * config.mlp_ratio)
        self.blocks = nn.ModuleDict(
            {
                str(i): Block(
                    config.dim,
                    config.heads.get(str(i), config.num_heads),
                    config.head_dim,
                    config.mlp_hidden.get(str(i), default_hidden),
                )
                for i in range(config.depth)
            }
        )
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.apply(_init_weights)

    def droppable_blocks(self) -> list[str]:
        return [f"blocks.{key}" for key in self.blocks]

    def embed(self, x: Tensor) -> Tensor:
        """Chunks -> tokens with positions: the input of the first block."""
        return self.patch_embed(x) + self.pos_embed

    def pool(self, tokens: Tensor) -> Tensor:
        """Tokens after the last block -> one feature per tubelet step (mean over space)."""
        tokens = self.norm(tokens)
        steps = self.config.num_frames // self.config.tubelet_size
        return tokens.view(tokens.shape[0], steps, -1, tokens.shape[-1]).mean(dim=2)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x)
        for block in self.blocks.values():
            tokens = block(tokens)
        return self.pool(tokens)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# Keys that real VideoMAE checkpoints carry but this backbone does not use: the classifier head,
# the pooled-feature norm, the mask token / decoder of pre-training, and the fixed position table
# (recomputed here for the configured input size).
_IGNORED_CHECKPOINT_KEYS = ("head.", "fc_norm.", "decoder", "mask_token", "encoder_to_decoder", "pos_embed")
_CHECKPOINT_PREFIXES = ("module.", "model.", "encoder.", "backbone.")


def convert_videomae_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip the wrapper prefixes real checkpoints carry and drop the keys this backbone has no use for."""
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _CHECKPOINT_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        if not key.startswith(_IGNORED_CHECKPOINT_KEYS):
            converted[key] = value
    return converted


def load_videomae_checkpoint(backbone: VideoMAEBackbone, state: dict[str, Tensor]) -> None:
    """Load a VideoMAE-format state dict, refusing missing or unexpected keys and shape mismatches.

    Keys of dropped blocks are ignored, so a full checkpoint loads into a model with blocks dropped.
    """
    converted = convert_videomae_state_dict(state)
    own = backbone.state_dict()
    dropped = {key for key in converted if key.startswith("blocks.") and key not in own
               and key.split(".")[1] not in backbone.blocks and int(key.split(".")[1]) < backbone.config.depth}
    converted = {key: value for key, value in converted.items() if key not in dropped}
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if missing or unexpected:
        raise ValueError(f"VideoMAE checkpoint does not fit: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    for key, value in converted.items():
        if value.shape != own[key].shape:
            raise ValueError(f"VideoMAE checkpoint key {key}: shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
    backbone.load_state_dict(converted)


def videomae_macs_per_block(config: VideoMAEConfig) -> float:
    """Analytic MACs of one full-width block on one chunk (linears + attention products), for checks."""
    tokens, dim = config.num_tokens, config.dim
    hidden = int(dim * config.mlp_ratio)
    return tokens * (4 * dim * dim + 2 * dim * hidden) + 2 * tokens * tokens * dim
