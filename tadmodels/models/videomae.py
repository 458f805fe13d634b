"""VideoMAE-style ViT backbone: tubelet patch embedding, positions, pre-LN blocks, a per-step pooled feature.

Parameter names follow the MCG-NJU VideoMAE checkpoints (`patch_embed.proj`, `blocks.{i}.norm1`,
`blocks.{i}.attn.qkv`, `blocks.{i}.attn.q_bias`, `blocks.{i}.attn.v_bias`, `blocks.{i}.attn.proj`,
`blocks.{i}.norm2`, `blocks.{i}.mlp.fc1`, `blocks.{i}.mlp.fc2`, `blocks.{i}.gamma_1/2`, `norm`,
`fc_norm`, `pos_embed`); `tadmodels.checkpoints` maps the other layouts (Hugging Face, OpenTAD) onto them.
Blocks live in an `nn.ModuleDict` keyed by their original index: a dropped block is deleted from it
and every other block keeps its name (and so its checkpoint keys).

The released checkpoints differ in four ways, each a config field:

- where the last LayerNorm sits (`final_norm`): `norm` on every token (pre-training, or fine-tuning
  with `use_mean_pooling=False`), `fc_norm` on the pooled feature (fine-tuning with mean pooling,
  the default of MCG-NJU's fine-tuned checkpoints; applied here to each tubelet step's spatial mean,
  which is what their head computes on a one-step clip), or none (OpenTAD and PBD take the last
  block's tokens as they are);
- LayerScale (`layer_scale`: `gamma_1`, `gamma_2` scale each residual branch);
- positions (`pos_embed`): the fixed sine table, or a learned table; and for the fixed table
  the image size it was made for (`pos_table_img_size`), resized bicubically to `img_size` as
  OpenTAD does when its 224-px ViT runs on 160-px frames;
- LayerNorm epsilon (`norm_eps`, `fc_norm_eps`): 1e-6 in MCG-NJU and OpenTAD; Hugging Face
  configs set 1e-12 for the blocks and keep PyTorch's 1e-5 for `fc_norm`.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from torch import Tensor, nn

from ..presets import fill_from_preset


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
    final_norm: Literal["norm", "fc_norm", "none"] = Field(
        default="norm", description="norm: on every token before the spatial mean; fc_norm: on each step's mean; none")
    layer_scale: bool = Field(default=False, description="per-channel gamma_1/gamma_2 on the residual branches")
    pos_embed: Literal["sinusoid", "learned"] = "sinusoid"
    pos_table_img_size: int | None = Field(
        default=None, ge=1, description="the fixed table is made for this image size and resized (bicubic) to img_size")
    norm_eps: float = Field(default=1e-6, gt=0, description="epsilon of the blocks' LayerNorms and `norm`")
    fc_norm_eps: float = Field(default=1e-6, gt=0, description="epsilon of `fc_norm`")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        return fill_from_preset(data, VIDEOMAE_PRESETS)

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
        if self.pos_table_img_size is not None:
            if self.pos_embed == "learned":
                raise ValueError("pos_table_img_size applies to the fixed sine table; a learned table is stored at img_size")
            if self.pos_table_img_size % self.patch_size:
                raise ValueError(f"pos_table_img_size {self.pos_table_img_size} is not divisible by patch_size {self.patch_size}")
        return self

    @model_serializer(mode="wrap")
    def _omit_default_variant(self, handler: Any) -> dict[str, Any]:
        """Variant fields at their defaults are left out, so that the configs, fingerprints and stored
        study specs of models made before these fields existed stay as they were."""
        data = handler(self)
        for name in VARIANT_FIELDS:
            if getattr(self, name) == type(self).model_fields[name].default:
                data.pop(name, None)
        return data

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def steps(self) -> int:
        """Tubelet steps per chunk: the features one chunk gives."""
        return self.num_frames // self.tubelet_size

    @property
    def grid(self) -> int:
        """Patches along each side of a frame."""
        return self.img_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.steps * self.grid * self.grid


VARIANT_FIELDS = ("final_norm", "layer_scale", "pos_embed", "pos_table_img_size", "norm_eps", "fc_norm_eps")


VIDEOMAE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(depth=8, dim=64, num_heads=4, patch_size=8, img_size=32, num_frames=16),
    "S": dict(depth=12, dim=384, num_heads=6, patch_size=16, img_size=160, num_frames=16),
    "B": dict(depth=12, dim=768, num_heads=12, patch_size=16, img_size=160, num_frames=16),
    "L": dict(depth=24, dim=1024, num_heads=16, patch_size=16, img_size=160, num_frames=16),
}


def sinusoid_position_table(num_positions: int, dim: int) -> Tensor:
    """The fixed sine/cosine table of "Attention is all you need", as VideoMAE uses it."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim  # in float64, as the references compute it
    angles = position / torch.pow(10000.0, exponent)[None, :]
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.to(torch.float32)


def resize_position_table(table: Tensor, steps: int, size: int) -> Tensor:
    """`[steps * g * g, dim]` -> `[steps * size * size, dim]`: each step's g x g grid resized by
    bicubic interpolation (align_corners=False), as MCG-NJU's fine-tuning and OpenTAD's ViT do."""
    grid = round((table.shape[0] // steps) ** 0.5)
    if steps * grid * grid != table.shape[0]:
        raise ValueError(f"position table of {table.shape[0]} rows is not {steps} square grids")
    if grid == size:
        return table
    dim = table.shape[1]
    grids = table.reshape(steps, grid, grid, dim).permute(0, 3, 1, 2)
    resized = F.interpolate(grids, size=(size, size), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(steps * size * size, dim)


def fixed_position_table(config: VideoMAEConfig) -> Tensor:
    """The sine table for the configured tokens, or for `pos_table_img_size` resized to `img_size`."""
    if config.pos_table_img_size is None:
        return sinusoid_position_table(config.num_tokens, config.dim)
    source_grid = config.pos_table_img_size // config.patch_size
    table = sinusoid_position_table(config.steps * source_grid * source_grid, config.dim)
    return resize_position_table(table, config.steps, config.grid)


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
    """Pre-LN transformer block: residual, so dropping it leaves the identity.

    With `layer_scale`, `gamma_1` and `gamma_2` scale the attention and MLP branches per channel;
    a fresh block has them at 1, so it computes as one without.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_hidden: int, eps: float = 1e-6,
                 layer_scale: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)
        self.gamma_1 = nn.Parameter(torch.ones(dim)) if layer_scale else None
        self.gamma_2 = nn.Parameter(torch.ones(dim)) if layer_scale else None

    def forward(self, x: Tensor) -> Tensor:
        if self.gamma_1 is None:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class VideoMAEBackbone(nn.Module):
    """Chunks of frames -> per-tubelet features averaged over space.

    Input `[N, 3, F, H, W]` (normalised floats, F = `num_frames`), output `[N, F / tubelet, dim]`:
    one feature per tubelet step, which is the temporal grid the detector sees. The step's feature
    is the spatial mean of the last block's tokens, after `norm` or before `fc_norm` as
    `config.final_norm` says.
    """

    def __init__(self, config: VideoMAEConfig) -> None:
        super().__init__()
        self.config = config
        self.out_dim = config.dim
        self.temporal_stride = config.tubelet_size
        self.chunk_frames = config.num_frames
        self.patch_embed = PatchEmbed(config.dim, config.patch_size, config.tubelet_size)
        if config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(config.num_tokens, config.dim), std=0.02))
        else:
            self.register_buffer("pos_embed", fixed_position_table(config), persistent=False)
        default_hidden = int(config.dim * config.mlp_ratio)
        self.blocks = nn.ModuleDict(
            {
                str(i): Block(
                    config.dim,
                    config.heads.get(str(i), config.num_heads),
                    config.head_dim,
                    config.mlp_hidden.get(str(i), default_hidden),
                    eps=config.norm_eps,
                    layer_scale=config.layer_scale,
                )
                for i in range(config.depth)
            }
        )
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps) if config.final_norm == "norm" else None
        self.fc_norm = nn.LayerNorm(config.dim, eps=config.fc_norm_eps) if config.final_norm == "fc_norm" else None
        self.apply(_init_weights)

    def droppable_blocks(self) -> list[str]:
        return [f"blocks.{key}" for key in self.blocks]

    def embed(self, x: Tensor) -> Tensor:
        """Chunks -> tokens with positions: the input of the first block."""
        return self.patch_embed(x) + self.pos_embed

    def pool(self, tokens: Tensor) -> Tensor:
        """Tokens after the last block -> one feature per tubelet step (mean over space)."""
        if self.norm is not None:
            tokens = self.norm(tokens)
        features = tokens.view(tokens.shape[0], self.config.steps, -1, tokens.shape[-1]).mean(dim=2)
        return self.fc_norm(features) if self.fc_norm is not None else features

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


def videomae_macs_per_block(config: VideoMAEConfig) -> float:
    """Analytic MACs of one full-width block on one chunk (linears + attention products), for checks."""
    tokens, dim = config.num_tokens, config.dim
    hidden = int(dim * config.mlp_ratio)
    return tokens * (4 * dim * dim + 2 * dim * hidden) + 2 * tokens * tokens * dim
