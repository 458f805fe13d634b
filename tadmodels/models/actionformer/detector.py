"""ActionFormer-style anchor-free detector: pyramid -> shared heads -> focal + DIoU losses -> Soft-NMS."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from .backbone import ConvTransformerPyramid
from .heads import ClassificationHead, RegressionHead
from .losses import diou_loss_1d, sigmoid_focal_loss
from .postprocess import Detections, InferenceConfig, decode_candidates, soft_nms
from .targets import DEFAULT_REGRESSION_RANGES, Points, assign_targets, make_points


class DetectorConfig(BaseModel):
    """ActionFormer's architecture knobs; defaults are its THUMOS14 setting except the width.

    `mlp_hidden` overrides the MLP hidden width of single pyramid blocks (keyed by their name
    relative to the pyramid, `levels.{i}.blocks.{j}`) so that a channel-pruned model can be rebuilt.
    """

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(ge=1)
    dim: int = Field(default=512, ge=1)
    num_heads: int = Field(default=4, ge=1)
    window: int = Field(default=19, ge=1, description="local attention window, positions")
    embed_layers: int = Field(default=2, ge=1)
    stem_blocks: int = Field(default=2, ge=0)
    levels: int = Field(default=6, ge=1, le=len(DEFAULT_REGRESSION_RANGES))
    head_layers: int = Field(default=3, ge=1)
    center_radius: float = Field(default=1.5, gt=0)
    mlp_hidden: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_widths(self) -> "DetectorConfig":
        unknown = sorted(set(self.mlp_hidden) - set(self.block_names()))
        if unknown:
            raise ValueError(f"mlp_hidden for unknown blocks {unknown}: pyramid blocks are {self.block_names()}")
        if any(width < 1 for width in self.mlp_hidden.values()):
            raise ValueError("mlp_hidden widths must be positive")
        return self

    @property
    def max_stride(self) -> int:
        return 2 ** (self.levels - 1)

    def block_names(self) -> list[str]:
        """Every transformer block of the pyramid by its name relative to the pyramid."""
        return [f"levels.{level}.blocks.{i}" for level in range(self.levels)
                for i in range(self.stem_blocks if level == 0 else 1)]


@dataclass
class DetectorOutput:
    """Raw per-point outputs, concatenated over pyramid levels."""

    cls_logits: Tensor  # [B, P, K]
    offsets: Tensor     # [B, P, 2], stride units
    valid: Tensor       # [B, P] bool
    points: Points


class ActionFormer(nn.Module):
    def __init__(self, in_dim: int, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        self.pyramid = ConvTransformerPyramid(in_dim, config.dim, config.num_heads, config.window,
                                              config.embed_layers, config.stem_blocks, config.levels, config.mlp_hidden)
        self.cls_head = ClassificationHead(config.dim, config.num_classes, config.head_layers)
        self.reg_head = RegressionHead(config.dim, config.head_layers, config.levels)

    def droppable_blocks(self) -> list[str]:
        return [f"pyramid.levels.{i}.blocks.{key}" for i, level in enumerate(self.pyramid.levels) for key in level.blocks]

    def forward(self, features: Tensor, mask: Tensor) -> DetectorOutput:
        """`features` [B, C, T], `mask` [B, T] bool; T must be a multiple of the largest stride."""
        if features.shape[-1] % self.config.max_stride:
            raise ValueError(f"sequence length {features.shape[-1]} is not a multiple of {self.config.max_stride}")
        levels, masks = self.pyramid(features, mask[:, None, :])
        cls = [self.cls_head(x, m).transpose(1, 2) for x, m in zip(levels, masks)]
        reg = [self.reg_head.forward_level(x, m, i).transpose(1, 2) for i, (x, m) in enumerate(zip(levels, masks))]
        points = make_points([x.shape[-1] for x in levels], DEFAULT_REGRESSION_RANGES, features.device)
        return DetectorOutput(torch.cat(cls, 1), torch.cat(reg, 1), torch.cat([m[:, 0] for m in masks], 1), points)

    def targets(self, output: DetectorOutput, segments: list[Tensor], labels: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Class targets [B, P, K] and offset targets [B, P, 2] for a batch (segments in grid units)."""
        pairs = [assign_targets(output.points, s, l, self.config.num_classes, self.config.center_radius)
                 for s, l in zip(segments, labels)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def loss(self, output: DetectorOutput, segments: list[Tensor], labels: list[Tensor]) -> dict[str, Tensor]:
        """Focal loss over valid points + DIoU over positive points, both per positive point."""
        cls_targets, reg_targets = self.targets(output, segments, labels)
        positive = (cls_targets.sum(-1) > 0) & output.valid
        normaliser = positive.sum().clamp(min=1)
        cls_loss = sigmoid_focal_loss(output.cls_logits[output.valid], cls_targets[output.valid]).sum() / normaliser
        reg_loss = diou_loss_1d(output.offsets[positive], reg_targets[positive]).sum() / normaliser
        return {"cls": cls_loss, "reg": reg_loss, "total": cls_loss + reg_loss}

    @torch.no_grad()
    def detect(self, output: DetectorOutput, config: InferenceConfig = InferenceConfig()) -> list[Detections]:
        """Per video: threshold, top-k, decode, Soft-NMS. Segments stay in grid units."""
        scores = output.cls_logits.sigmoid()
        return [
            soft_nms(decode_candidates(scores[b], output.offsets[b], output.points.positions,
                                       output.points.strides, output.valid[b], config), config)
            for b in range(scores.shape[0])
        ]
