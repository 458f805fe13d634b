"""ActionFormer's detector as its release builds it (`LocPointTransformer`): convTransformer backbone
-> identity or FPN neck -> shared conv heads -> focal + DIoU losses -> per-level top-k and Soft-NMS.

The module tree has the release's parameter names and shapes, so a release state dict (without its
`module.` prefix) loads as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from ...fields import added_field
from .backbone import ConvTransformerBackbone
from .heads import ClassificationHead, JoinedLevels, RegressionHead
from .losses import diou_loss_1d, sigmoid_focal_loss
from .necks import FPN1D, FPNIdentity
from .postprocess import Detections, InferenceConfig, batched_nms, level_candidates
from .targets import Points, assign_targets, make_points

# The release's regression ranges per level, in feature-grid positions.
RELEASE_REGRESSION_RANGES: tuple[tuple[float, float], ...] = (
    (0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000),
)


class DetectorTrainConfig(BaseModel):
    """The release's `train_cfg` as far as the detector uses it; defaults are its THUMOS14 setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    center_sample: Literal["radius", "none"] = "radius"
    center_sample_radius: float = Field(default=1.5, gt=0)
    loss_weight: float = Field(default=1.0, description="weight of the regression loss; <= 0: balanced to the class loss")
    cls_prior_prob: float = Field(default=0.01, ge=0, lt=1)
    init_loss_norm: float = Field(default=100, gt=0, description="start of the EMA of the positive count")
    head_empty_cls: list[int] = Field(default_factory=list, description="classes without training data")
    dropout: float = Field(default=0.0, ge=0, lt=1)
    droppath: float = Field(default=0.1, ge=0, lt=1, description="stochastic depth; > 0 adds per-channel residual scales")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)


class DetectorConfig(BaseModel):
    """ActionFormer's architecture, training and test knobs, by the release's meaning; defaults are
    its THUMOS14 I3D config (`configs/thumos_i3d.yaml` over `libs/core/config.py`).

    `arch` is (embedding convs, stem blocks, branch blocks); the pyramid has `arch[2] + 1` levels,
    of which the neck and heads use those from `fpn_start_level` on. `window` is the local attention
    window, one for all levels or one per level; <= 1 means global attention there. `dim` is the
    release's `embd_dim`; `fpn_dim` and `head_dim` default to it. `mlp_hidden` overrides the MLP
    hidden width of single blocks (keyed `stem.{i}` / `branch.{i}`) so that a channel-pruned model
    can be rebuilt.

    Two knobs say how OpenTAD's re-implementation computes where the release's differs (its
    `ConvModule`): `conv_norm_eps` and `mask_conv_outputs`. Two say how the input is padded before
    the detector runs (`pad_min_length`, `pad_multiple`): padded positions are not re-masked
    everywhere (the LayerNorms' biases, the heads' convs), so the outputs at the last valid
    positions of the coarse levels depend on how much padding follows them.
    """

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(ge=1)
    dim: int = Field(default=512, ge=1)
    fpn_dim: int | None = Field(default=None, ge=1)
    head_dim: int | None = Field(default=None, ge=1)
    num_heads: int = Field(default=4, ge=1)
    window: int | list[int] = Field(default=19, description="local attention window, positions; <= 1: global")
    arch: tuple[int, int, int] = (2, 2, 5)
    scale_factor: int = Field(default=2, ge=2, multiple_of=2)
    embed_kernel: int = Field(default=3, ge=1)
    embed_with_ln: bool = True
    fpn: Literal["identity", "fpn"] = "identity"
    fpn_with_ln: bool = True
    fpn_start_level: int = Field(default=0, ge=0)
    head_layers: int = Field(default=3, ge=1)
    head_kernel: int = Field(default=3, ge=1)
    head_with_ln: bool = True
    regression_range: list[tuple[float, float]] = Field(default_factory=lambda: list(RELEASE_REGRESSION_RANGES))
    use_abs_pe: bool = Field(default=False, description="add a fixed sinusoid position table after the embedding")
    max_seq_len: int = Field(default=2304, ge=1, description="length of that table (the release's max_seq_len)")
    mlp_hidden: dict[str, int] = Field(default_factory=dict)
    conv_norm_eps: float = added_field(1e-5, gt=0, description=(
        "epsilon of the LayerNorms after the embedding convs, in the neck and in the heads (the release: 1e-5, "
        "OpenTAD: 1e-6); the transformer blocks' keep 1e-5"))
    mask_conv_outputs: bool = added_field(False, description=(
        "zero the padded positions after each embedding conv and head layer's activation, as OpenTAD's "
        "ConvModule does (the release leaves them at relu(LayerNorm bias))"))
    pad_min_length: int | None = added_field(None, ge=1, description=(
        "zero-pad every input shorter than this to this many positions, as the release and OpenTAD pad every "
        "video to max_seq_len at test time; None: no minimum"))
    pad_multiple: int | None = added_field(None, ge=1, description=(
        "pad inputs to a multiple of this (the release's max_div_factor: the largest level stride times window); "
        "None: the largest stride, the least the detector runs on"))
    train: DetectorTrainConfig = DetectorTrainConfig()
    test: InferenceConfig = InferenceConfig()

    @model_validator(mode="after")
    def _check(self) -> "DetectorConfig":
        if min(self.arch) < 0 or self.arch[0] < 1:
            raise ValueError(f"arch {self.arch}: needs at least one embedding conv and no negative counts")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if isinstance(self.window, list) and len(self.window) != self.levels:
            raise ValueError(f"window: {len(self.window)} sizes given for {self.levels} levels")
        if self.fpn_start_level >= self.levels:
            raise ValueError(f"fpn_start_level {self.fpn_start_level} leaves none of the {self.levels} levels")
        if len(self.regression_range) != len(self.strides):
            raise ValueError(f"regression_range: {len(self.regression_range)} ranges for {len(self.strides)} levels "
                             f"(levels {self.fpn_start_level}..{self.levels - 1})")
        if self.fpn == "identity" and (self.fpn_dim or self.dim) != self.dim:
            raise ValueError(f"fpn 'identity' keeps the width: fpn_dim {self.fpn_dim} must equal dim {self.dim}")
        if any(not 0 <= k < self.num_classes for k in self.train.head_empty_cls):
            raise ValueError(f"train.head_empty_cls {self.train.head_empty_cls}: classes are 0..{self.num_classes - 1}")
        unknown = sorted(set(self.mlp_hidden) - set(self.block_names()))
        if unknown:
            raise ValueError(f"mlp_hidden for unknown blocks {unknown}: blocks are {self.block_names()}")
        if any(width < 1 for width in self.mlp_hidden.values()):
            raise ValueError("mlp_hidden widths must be positive")
        for name in ("pad_min_length", "pad_multiple"):
            value = getattr(self, name)
            if value is not None and value % self.max_stride:
                raise ValueError(f"{name} {value} is not a multiple of the largest stride {self.max_stride}")
        return self

    @property
    def levels(self) -> int:
        """Pyramid levels the backbone produces."""
        return self.arch[2] + 1

    @property
    def strides(self) -> list[int]:
        """Stride of each level the heads see."""
        return [self.scale_factor ** i for i in range(self.fpn_start_level, self.levels)]

    @property
    def max_stride(self) -> int:
        return self.scale_factor ** self.arch[2]

    def padded_length(self, length: int) -> int:
        """The input length the detector runs on for `length` positions: at least `pad_min_length`,
        rounded up to `pad_multiple` (the largest stride by default)."""
        multiple = self.pad_multiple or self.max_stride
        return max(-(-length // multiple) * multiple, self.pad_min_length or 0)

    def windows(self) -> list[int | None]:
        """Attention window per level, None where attention is global."""
        sizes = self.window if isinstance(self.window, list) else [self.window] * self.levels
        return [size if size > 1 else None for size in sizes]

    def block_names(self) -> list[str]:
        """Every transformer block by its name relative to the detector's backbone."""
        return [f"stem.{i}" for i in range(self.arch[1])] + [f"branch.{i}" for i in range(self.arch[2])]


@dataclass
class DetectorOutput:
    """Raw per-point outputs, concatenated over pyramid levels."""

    cls_logits: Tensor  # [B, P, K]
    offsets: Tensor     # [B, P, 2], stride units
    valid: Tensor       # [B, P] bool
    points: Points


class ActionFormer(nn.Module):
    """The detector; `loss_normalizer` is the EMA of the positive count that divides the losses,
    updated by `loss` in training mode only (the release computes losses only then)."""

    def __init__(self, in_dim: int, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        fpn_dim, head_dim = config.fpn_dim or config.dim, config.head_dim or config.dim
        train = config.train
        self.backbone = ConvTransformerBackbone(in_dim, config.dim, config.num_heads, config.arch, config.windows(),
                                                config.scale_factor, config.embed_kernel, config.embed_with_ln,
                                                train.dropout, train.droppath, config.mlp_hidden,
                                                config.max_seq_len if config.use_abs_pe else None,
                                                config.conv_norm_eps, config.mask_conv_outputs)
        if config.fpn == "identity":
            self.neck = FPNIdentity(config.levels, fpn_dim, config.fpn_start_level, config.fpn_with_ln,
                                    config.conv_norm_eps)
        else:
            self.neck = FPN1D(config.levels, config.dim, fpn_dim, config.scale_factor, config.fpn_start_level,
                              config.fpn_with_ln, config.conv_norm_eps)
        layers = dict(layers=config.head_layers, kernel_size=config.head_kernel, with_ln=config.head_with_ln,
                      norm_eps=config.conv_norm_eps, mask_outputs=config.mask_conv_outputs)
        self.cls_head = ClassificationHead(fpn_dim, head_dim, config.num_classes, prior_prob=train.cls_prior_prob,
                                           empty_classes=train.head_empty_cls, **layers)
        self.reg_head = RegressionHead(fpn_dim, head_dim, len(config.strides), **layers)
        self.loss_normalizer = train.init_loss_norm
        self.loss_normalizer_momentum = 0.9

    def droppable_blocks(self) -> list[str]:
        return [f"backbone.{name}" for name in self.backbone.block_names()]

    def forward(self, features: Tensor, mask: Tensor) -> DetectorOutput:
        """`features` [B, C, T], `mask` [B, T] bool; T must be a multiple of the largest stride.
        The input is first zero-padded as `pad_min_length` and `pad_multiple` say (the output then
        has the points of the padded length, the added ones invalid)."""
        if features.shape[-1] % self.config.max_stride:
            raise ValueError(f"sequence length {features.shape[-1]} is not a multiple of {self.config.max_stride}")
        padding = self.config.padded_length(features.shape[-1]) - features.shape[-1]
        if padding:
            features, mask = F.pad(features, (0, padding)), F.pad(mask, (0, padding))
        levels, masks = self.neck(*self.backbone(features, mask[:, None, :]))
        joined = JoinedLevels.join(levels, masks, gap=self.config.head_kernel // 2)
        cls, offsets = joined.points_last(self.cls_head(joined)), joined.points_last(self.reg_head(joined))
        points = make_points([x.shape[-1] for x in levels], self.config.strides, self.config.regression_range,
                             features.device)
        return DetectorOutput(cls, offsets, torch.cat([m[:, 0] for m in masks], dim=1), points)

    def targets(self, output: DetectorOutput, segments: list[Tensor], labels: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Class targets [B, P, K] and offset targets [B, P, 2] for a batch (segments in grid units)."""
        train = self.config.train
        radius = train.center_sample_radius if train.center_sample == "radius" else None
        pairs = [assign_targets(output.points, s, l, self.config.num_classes, radius) for s, l in zip(segments, labels)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def loss(self, output: DetectorOutput, segments: list[Tensor], labels: list[Tensor]) -> dict[str, Tensor]:
        """Focal loss over valid points (label-smoothed targets) + DIoU over positive points, both
        divided by the EMA of the positive count; `total` = cls + loss_weight * reg."""
        train = self.config.train
        cls_targets, reg_targets = self.targets(output, segments, labels)
        positive = (cls_targets.sum(-1) > 0) & output.valid
        num_positive = int(positive.sum())
        if self.training:
            momentum = self.loss_normalizer_momentum
            self.loss_normalizer = momentum * self.loss_normalizer + (1 - momentum) * max(num_positive, 1)
        smoothed = cls_targets[output.valid] * (1 - train.label_smoothing) + train.label_smoothing / (self.config.num_classes + 1)
        cls_loss = sigmoid_focal_loss(output.cls_logits[output.valid], smoothed).sum() / self.loss_normalizer
        pred_offsets = output.offsets[positive]
        if num_positive == 0:
            reg_loss = 0 * pred_offsets.sum()
        else:
            reg_loss = diou_loss_1d(pred_offsets, reg_targets[positive]).sum() / self.loss_normalizer
        weight = train.loss_weight if train.loss_weight > 0 else cls_loss.detach() / max(reg_loss.item(), 0.01)
        return {"cls": cls_loss, "reg": reg_loss, "total": cls_loss + reg_loss * weight}

    @torch.no_grad()
    def detect(self, output: DetectorOutput, config: InferenceConfig | None = None) -> list[Detections]:
        """Per video, on the CPU as the release does: per level (or, with `pre_nms_scope: video`, over
        all levels together) threshold, top-k and decoding, then NMS. Segments stay in grid units;
        `config` defaults to the detector's `test` settings."""
        config = config or self.config.test
        points = output.points
        split = list(points.level_lengths) if config.pre_nms_scope == "level" else [sum(points.level_lengths)]
        per_level = list(zip(*(t.cpu().split(split) for t in (points.positions, points.strides))))
        results = []
        for probs, offsets, valid in zip(output.cls_logits.sigmoid().cpu(), output.offsets.cpu(), output.valid.cpu()):
            probs = probs * valid[:, None]
            candidates = [level_candidates(p, o, positions, strides, config) for p, o, (positions, strides)
                          in zip(probs.split(split), offsets.split(split), per_level)]
            results.append(batched_nms(Detections.cat(candidates), config))
        return results
