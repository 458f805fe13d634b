"""bLVNet-TAM: a Big-Little 2D ResNet with depthwise temporal aggregation, as a video backbone.

After "More Is Less: Learning Efficient Video Representations by Big-Little Network and Depthwise
Temporal Aggregation" (Fan et al., NeurIPS 2019) and the layout of its released code.

A chunk of F = 2T frames goes through the network as a batch of 2D images. Frames pair up
(frame 0 = the first frame): in pair t the odd frame 2t+1 feeds the Big branch (full width, half
resolution) and the even frame 2t the Little branch (width / alpha, full resolution). Each
Big-Little module merges its pair into one feature, so the output has T = F / 2 time steps.

Layout of bLVNet-TAM-50 (ResNet-50 bottlenecks, depths 3, 4, 6, 3; a 224 px input):

- `stem`: 7x7/2 conv (3 -> 64) on all 2T frames (112 px); TAM over the 2T frames; Big: 3x3/2 conv
  (64 -> 64, 56 px); Little: 3x3 conv (64 -> 32) at 112 px, 3x3/2 conv (32 -> 32), 1x1 conv
  (32 -> 64); sum, ReLU, 1x1 merge conv: T pair features of 64 channels at 56 px.
- `stages.0..2` (`BigLittleStage`, output widths 256, 512, 1024): the pair feature is repeated for both
  frames of its pair, TAM runs over the 2T frames, then Big gets the odd frames (`depth - 1`
  bottlenecks, the first with stride 2) and Little the even ones (`max(1, depth // beta - 1)`
  bottlenecks of width / alpha at the stage's input resolution, then a 1x1 conv to full width).
  Big is upsampled (nearest) to Little's resolution, the two are summed, ReLU, and one fusion
  bottleneck follows, with stride 2 in stages 0 and 1 and stride 1 in stage 2 (56 -> 28 -> 14 -> 14 px).
- `stages.3` (`ResidualStage`): three bottlenecks (1024 -> 2048, first with stride 2: 7 px) on the T
  pair features, each with a TAM over T steps on its input.
- Features are averaged over space: `[N, T, 2048]`.

Shortcuts that change the shape are a 3x3/2 average pool (for stride 2) and/or a 1x1 conv + BN (for
a width change), as in the released code; stride sits on the 3x3 conv of a bottleneck. The last Big
bottleneck of a stage ends without its ReLU, since the merge applies one after the sum (the released
code does so whenever Big has more than one block; here also for a single block).

Measured at 16 frames of 224 px (`torch.utils.flop_counter`, MACs = FLOPs / 2, convolutions only):
23.78 GMACs (paper: 23.9 G) and 24.66 M parameters. The TAMs' 0.07 G multiply-adds are element-wise
here and so not counted; counted as the paper's 1x1 convs they bring the total to 23.85 G. The
paper's 25.0 M includes a classifier (2048 x 174 + 174 = 0.36 M for Something-Something), which this
backbone does not have: with it the count is 25.02 M.

Compression interface:

- Droppable blocks are the bottlenecks whose shortcut is the identity (`x + f(x)`): every Big block
  but the first, the Little block where it keeps its width (stages 1 and 2 of -50), the stride-1
  fusion bottleneck (stage 2), and every last-stage block but the first. Blocks live in
  `nn.ModuleDict`s keyed by their original index, so deleting one leaves the others' names intact.
- `BLVNetConfig.inner_widths` overrides the inner (bottleneck) width of any bottleneck by name, so a
  channel-pruned model can be rebuilt from its config. The last stage's TAM acts on a block's input
  (the residual stream, as in the released code), not on the inner width, so inner-width pruning
  leaves it untouched.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from ..presets import fill_from_preset

EXPANSION = 4  # bottleneck output width / inner width


class BLVNetConfig(BaseModel):
    """Architecture of a bLVNet-TAM backbone; `preset` fills the fields not given.

    `depths` are ResNet stage depths: all stages but the last are Big-Little stages (each needs at
    least 2 blocks, since Big gets one fewer), the last is a plain stage on the merged features.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["blvnet"] = "blvnet"
    preset: str | None = None
    depths: tuple[int, ...] = (3, 4, 6, 3)
    base_width: int = Field(default=64, ge=1, description="stem width = inner width of the first stage")
    alpha: int = Field(default=2, ge=1, description="Little branch width divisor")
    beta: int = Field(default=4, ge=1, description="Little branch depth divisor")
    tam_radius: int = Field(default=1, ge=0, description="TAM mixes frames t - r .. t + r")
    num_frames: int = Field(default=16, ge=2, description="input frames per chunk (2T)")
    img_size: int = Field(default=224, ge=1)
    inner_widths: dict[str, int] | None = Field(default=None, description="inner width per bottleneck name")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        return fill_from_preset(data, BLVNET_PRESETS)

    @model_validator(mode="after")
    def _check_shapes(self) -> "BLVNetConfig":
        if len(self.depths) < 2 or min(self.depths[:-1]) < 2 or self.depths[-1] < 1:
            raise ValueError(f"depths {self.depths}: need >= 2 stages, >= 2 blocks in each Big-Little stage")
        if self.num_frames % 2:
            raise ValueError(f"num_frames {self.num_frames} is not even: frames come in Big/Little pairs")
        if self.base_width % self.alpha:
            raise ValueError(f"base_width {self.base_width} does not split by alpha {self.alpha}")
        unknown = set(self.inner_widths or {}) - set(self.bottleneck_widths())
        if unknown:
            raise ValueError(f"inner_widths for unknown blocks {sorted(unknown)}")
        if any(width < 1 for width in (self.inner_widths or {}).values()):
            raise ValueError("inner_widths must be positive")
        return self

    def branch_depths(self, stage: int) -> tuple[int, int]:
        """Big and Little bottleneck counts of a Big-Little stage."""
        depth = self.depths[stage]
        return depth - 1, max(1, depth // self.beta - 1)

    def bottleneck_widths(self) -> dict[str, int]:
        """Inner width of every bottleneck by name (overrides applied), in network order."""
        widths: dict[str, int] = {}
        for stage in range(len(self.depths) - 1):
            inner = self.base_width * 2**stage
            big, little = self.branch_depths(stage)
            widths.update({f"stages.{stage}.big.{i}": inner for i in range(big)})
            widths.update({f"stages.{stage}.little.{i}": inner // self.alpha for i in range(little)})
            widths[f"stages.{stage}.fusion.0"] = inner
        last = len(self.depths) - 1
        widths.update({f"stages.{last}.blocks.{i}": self.base_width * 2**last for i in range(self.depths[-1])})
        return {name: (self.inner_widths or {}).get(name, width) for name, width in widths.items()}


BLVNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(depths=(2, 3, 3, 2), base_width=16, img_size=32, num_frames=8),
    "blvnet-tam-50": dict(depths=(3, 4, 6, 3), base_width=64, img_size=224, num_frames=16),
}


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class TemporalAggregation(nn.Module):
    """TAM: y_t = ReLU(sum_{j=-r..r} w_j * x_{t+j}) with one weight per channel and offset.

    Input and output are `[N * T, C, H, W]` (time steps stacked in the batch); x is zero past the
    ends of each clip. `weight[j + r, c]` is w_j of channel c: channels last, the dimension
    torch-pruning assumes for a parameter outside a known layer. The paper writes the sum as one
    depthwise 1x1 conv per offset; as shifted element-wise multiply-adds it needs no layout change,
    which on CPU makes it nearly free where a depthwise Conv3d doubled the backbone's latency.
    A fresh TAM is the identity (w_0 = 1), so the network starts as its 2D Big-Little counterpart.
    """

    def __init__(self, channels: int, num_steps: int, radius: int = 1) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.radius = radius
        weight = torch.zeros(2 * radius + 1, channels)
        weight[radius] = 1.0
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor) -> Tensor:
        clips = x.view(-1, self.num_steps, *x.shape[1:])
        weight = self.weight[:, :, None, None]
        out = clips * weight[self.radius]
        for shift in range(1, self.radius + 1):
            out[:, shift:] += clips[:, :-shift] * weight[self.radius - shift]
            out[:, :-shift] += clips[:, shift:] * weight[self.radius + shift]
        return F.relu(out).view_as(x)


class Bottleneck(nn.Module):
    """ResNet bottleneck 1x1 -> 3x3 (stride) -> 1x1 with a shortcut, optionally a TAM on its input.

    The shortcut is the identity when shape is kept (then the block is droppable), else a 3x3/2
    average pool for stride 2 and/or a 1x1 conv + BN for a width change. `final_relu=False` leaves
    the sum unactivated, for the last Big block whose output is summed with Little before a ReLU.
    With a TAM, the residual branch and a projecting shortcut see the aggregated input, an identity
    shortcut the original one.
    """

    def __init__(self, in_channels: int, out_channels: int, inner_channels: int, stride: int = 1,
                 tam_steps: int | None = None, tam_radius: int = 1, final_relu: bool = True) -> None:
        super().__init__()
        self.final_relu = final_relu
        self.tam = TemporalAggregation(in_channels, tam_steps, tam_radius) if tam_steps is not None else None
        self.conv1 = nn.Conv2d(in_channels, inner_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner_channels)
        self.conv2 = nn.Conv2d(inner_channels, inner_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(inner_channels)
        self.conv3 = nn.Conv2d(inner_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        shortcut: list[nn.Module] = []
        if stride != 1:
            shortcut.append(nn.AvgPool2d(3, stride, padding=1))
        if in_channels != out_channels:
            shortcut.extend(conv_bn(in_channels, out_channels))
        self.shortcut = nn.Sequential(*shortcut) if shortcut else None

    @property
    def droppable(self) -> bool:
        """True when the block is `x -> x + f(x)`, so deleting it leaves the identity."""
        return self.shortcut is None

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        if self.tam is not None:
            x = self.tam(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (identity if self.shortcut is None else self.shortcut(x))
        return F.relu(out) if self.final_relu else out


def split_big_little(frames: Tensor) -> tuple[Tensor, Tensor]:
    """`[N * 2T, ...]` frames -> (odd frames for Big, even frames for Little), each `[N * T, ...]`."""
    pairs = frames.view(-1, 2, *frames.shape[1:])
    return pairs[:, 1], pairs[:, 0]


def merge_big_little(big: Tensor, little: Tensor) -> Tensor:
    """Sum of Big (upsampled to Little's resolution) and Little, then ReLU."""
    if big.shape[-2:] != little.shape[-2:]:
        big = F.interpolate(big, size=little.shape[-2:], mode="nearest")
    return F.relu(big + little)


class BigLittleStem(nn.Module):
    """Frames -> pair features: a 7x7/2 conv on every frame, then a Big-Little split and merge.

    Big (odd frames) downsamples with one 3x3/2 conv; Little (even frames) runs a 3x3 conv at full
    resolution before its 3x3/2 conv, at width / alpha, and a 1x1 conv back to full width.
    """

    def __init__(self, width: int, alpha: int, num_frames: int, tam_radius: int = 1) -> None:
        super().__init__()
        narrow = width // alpha
        self.conv = conv_bn(3, width, 7, stride=2)
        self.tam = TemporalAggregation(width, num_frames, tam_radius)
        self.big = conv_bn(width, width, 3, stride=2)
        self.little = nn.Sequential(
            conv_bn(width, narrow, 3), nn.ReLU(),
            conv_bn(narrow, narrow, 3, stride=2), nn.ReLU(),
            conv_bn(narrow, width),
        )
        self.merge = nn.Sequential(conv_bn(width, width), nn.ReLU())

    def forward(self, frames: Tensor) -> Tensor:
        x = self.tam(F.relu(self.conv(frames)))
        big, little = split_big_little(x)
        return self.merge(merge_big_little(self.big(big), self.little(little)))


class BigLittleStage(nn.Module):
    """One Big-Little module: pair features in, pair features out.

    Each pair's feature is given to both its frames and a TAM runs over the 2T frames, so Big and
    Little see different temporal mixes. Big (odd frames) runs at half resolution, Little (even
    frames) at the input resolution and width / alpha; after the merge one fusion bottleneck sets
    the output stride. Blocks sit in `nn.ModuleDict`s keyed by original index: forward runs whatever
    blocks remain.
    """

    def __init__(self, in_channels: int, out_channels: int, big_inner: list[int], little_inner: list[int],
                 fusion_inner: int, alpha: int, stride: int, num_frames: int, tam_radius: int = 1) -> None:
        super().__init__()
        narrow = out_channels // alpha
        self.tam = TemporalAggregation(in_channels, num_frames, tam_radius)
        self.big = nn.ModuleDict({
            str(i): Bottleneck(in_channels if i == 0 else out_channels, out_channels, inner, stride=2 if i == 0 else 1,
                               final_relu=i < len(big_inner) - 1)
            for i, inner in enumerate(big_inner)
        })
        self.little = nn.ModuleDict({
            str(i): Bottleneck(in_channels if i == 0 else narrow, narrow, inner) for i, inner in enumerate(little_inner)
        })
        self.little_expand = conv_bn(narrow, out_channels)
        self.fusion = nn.ModuleDict({"0": Bottleneck(out_channels, out_channels, fusion_inner, stride=stride)})

    def forward(self, x: Tensor) -> Tensor:
        big, little = split_big_little(self.tam(x.repeat_interleave(2, dim=0)))
        for block in self.big.values():
            big = block(big)
        for block in self.little.values():
            little = block(little)
        x = merge_big_little(big, self.little_expand(little))
        for block in self.fusion.values():
            x = block(x)
        return x


class ResidualStage(nn.Module):
    """Plain ResNet stage on the pair features, a TAM over T steps on each block's input."""

    def __init__(self, in_channels: int, out_channels: int, inner: list[int], stride: int, num_steps: int,
                 tam_radius: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict({
            str(i): Bottleneck(in_channels if i == 0 else out_channels, out_channels, width,
                               stride=stride if i == 0 else 1, tam_steps=num_steps, tam_radius=tam_radius)
            for i, width in enumerate(inner)
        })

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks.values():
            x = block(x)
        return x


class BLVNetTAM(nn.Module):
    """Chunks of frames -> one feature per Big/Little frame pair, averaged over space.

    Input `[N, 3, F, H, W]` (normalised floats, F = `num_frames`), output `[N, F / 2, out_dim]`.
    """

    temporal_stride: int = 2

    def __init__(self, config: BLVNetConfig) -> None:
        super().__init__()
        self.config = config
        self.chunk_frames = config.num_frames
        num_steps = config.num_frames // 2
        widths = config.bottleneck_widths()
        last = len(config.depths) - 1
        self.out_dim = config.base_width * 2**last * EXPANSION
        self.stem = BigLittleStem(config.base_width, config.alpha, config.num_frames, config.tam_radius)
        stages: list[nn.Module] = []
        in_channels = config.base_width
        for stage in range(last):
            out_channels = config.base_width * 2**stage * EXPANSION
            big, little = config.branch_depths(stage)
            stages.append(BigLittleStage(
                in_channels, out_channels,
                big_inner=[widths[f"stages.{stage}.big.{i}"] for i in range(big)],
                little_inner=[widths[f"stages.{stage}.little.{i}"] for i in range(little)],
                fusion_inner=widths[f"stages.{stage}.fusion.0"],
                alpha=config.alpha, stride=1 if stage == last - 1 else 2,
                num_frames=config.num_frames, tam_radius=config.tam_radius,
            ))
            in_channels = out_channels
        stages.append(ResidualStage(
            in_channels, self.out_dim, [widths[f"stages.{last}.blocks.{i}"] for i in range(config.depths[-1])],
            stride=2, num_steps=num_steps, tam_radius=config.tam_radius,
        ))
        self.stages = nn.ModuleList(stages)
        self.apply(_init_weights)

    def droppable_blocks(self) -> list[str]:
        """Names of the identity-shortcut bottlenecks still present, in network order."""
        return [name for name, module in self.named_modules() if isinstance(module, Bottleneck) and module.droppable]

    def forward(self, x: Tensor) -> Tensor:
        batch, _, frames, height, width = x.shape
        x = self.stem(x.transpose(1, 2).reshape(batch * frames, 3, height, width))
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3)).view(batch, frames // 2, -1)


def _init_weights(module: nn.Module) -> None:
    """ResNet init: Kaiming (fan-out) convs, unit BN; a bottleneck's last BN starts at zero so that
    a fresh block is the identity on its shortcut."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, Bottleneck):
        nn.init.zeros_(module.bn3.weight)
