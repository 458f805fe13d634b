"""A TAD model: an optional video backbone over frame chunks, then the ActionFormer detector.

Every model exposes the same compression interface: `droppable_blocks()` gives stable dotted names,
`without_blocks(names)` returns a copy with those residual blocks deleted from the module tree, and
`fingerprint()` identifies architecture and weights.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from ..fields import added_field
from .actionformer import ActionFormer, DetectorConfig, DetectorOutput
from .blvnet import BLVNetConfig, BLVNetTAM
from .videomae import VideoMAEBackbone, VideoMAEConfig

BackboneConfig = Annotated[VideoMAEConfig | BLVNetConfig, Field(discriminator="type")]

# Architecture fields that name blocks (dropped ones, per-block widths); the widths they carry
# also show in the tensor shapes.
BLOCK_NAMED_FIELDS = frozenset({"dropped", "mlp_hidden", "heads", "inner_widths"})

# ImageNet statistics, the normalisation VideoMAE was pre-trained with.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


class ModelConfig(BaseModel):
    """Backbone (None: the detector runs on precomputed features of `input_dim` channels),
    detector, and the blocks already dropped.

    `feature_upsample` stretches the backbone's per-step features along time by linear
    interpolation (align_corners=False) before the detector, as OpenTAD's end-to-end configs do
    (`Interpolate` to the window size: PBD's 768-frame windows give 384 VideoMAE steps, interpolated
    to 768 positions); the grid then has `upsample` positions per backbone step.
    """

    model_config = ConfigDict(extra="forbid")

    backbone: BackboneConfig | None = None
    input_dim: int | None = Field(default=None, ge=1, description="feature channels, feature mode only")
    detector: DetectorConfig
    dropped: list[str] = Field(default_factory=list)
    feature_upsample: int = added_field(1, ge=1, description=(
        "grid positions per backbone step: the backbone's features interpolated linearly along time"))

    @model_validator(mode="after")
    def _one_input(self) -> "ModelConfig":
        if (self.backbone is None) == (self.input_dim is None):
            raise ValueError("give exactly one of `backbone` (end-to-end on frames) and `input_dim` (on features)")
        if self.feature_upsample > 1 and self.backbone is None:
            raise ValueError("feature_upsample applies to a backbone's features; precomputed features are used as they are")
        return self

    @property
    def mode(self) -> str:
        return "features" if self.backbone is None else "frames"


def build_backbone(config: VideoMAEConfig | BLVNetConfig) -> nn.Module:
    return VideoMAEBackbone(config) if config.type == "videomae" else BLVNetTAM(config)


class TADModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = build_backbone(config.backbone) if config.backbone is not None else None
        self.feature_upsample = config.feature_upsample
        if self.backbone is not None and self.backbone.temporal_stride % self.feature_upsample:
            raise ValueError(f"feature_upsample {self.feature_upsample} does not divide the backbone's temporal stride "
                             f"{self.backbone.temporal_stride} (frames per step): the grid would not be whole frames")
        in_dim = self.backbone.out_dim if self.backbone is not None else config.input_dim
        self.detector = ActionFormer(in_dim, config.detector)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1, 1) * 255, persistent=False)
        self.architecture = config.model_copy(update={"dropped": []})
        if config.dropped:
            self._delete_blocks(config.dropped)

    @property
    def temporal_stride(self) -> int:
        """Input frames per feature-grid position (1 for precomputed features)."""
        return self.backbone.temporal_stride // self.feature_upsample if self.backbone is not None else 1

    @property
    def sequence_multiple(self) -> int:
        """Grid lengths the model accepts are multiples of this: the detector's largest stride and,
        end to end, whole backbone chunks."""
        if self.backbone is None:
            return self.architecture.detector.max_stride
        return math.lcm(self.architecture.detector.max_stride, self.backbone.chunk_frames // self.temporal_stride)

    def droppable_blocks(self) -> list[str]:
        """Backbone blocks end to end (what compression targets); the detector's own in feature mode."""
        if self.backbone is not None:
            return [f"backbone.{name}" for name in self.backbone.droppable_blocks()]
        return [f"detector.{name}" for name in self.detector.droppable_blocks()]

    def without_blocks(self, names: list[str]) -> "TADModel":
        """A copy with the named blocks deleted from the module tree (their saving shows in latency)."""
        model = copy.deepcopy(self)
        model._delete_blocks(names)
        return model

    def _delete_blocks(self, names: list[str]) -> None:
        available = set(self.droppable_blocks())
        unknown = [name for name in names if name not in available]
        if unknown:
            raise ValueError(f"cannot drop {unknown}: droppable blocks now are {sorted(available)}")
        if len(set(names)) == len(available):
            raise ValueError("cannot drop every droppable block")
        for name in names:
            parent_name, key = name.rsplit(".", 1)
            del self.get_submodule(parent_name)[key]
        self.architecture = self.architecture.model_copy(update={"dropped": [*self.architecture.dropped, *names]})

    @property
    def device(self) -> torch.device:
        """Where the weights are; inputs go there."""
        return next(self.parameters()).device

    def architecture_fingerprint(self) -> str:
        """Hash of the architecture alone: equal for models that differ only in weights."""
        return hashlib.sha256(json.dumps(self.architecture.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]

    def compute_signature(self) -> str:
        """Hash of what a forward pass computes, whatever its blocks are called: the architecture
        without block names, plus every tensor's shape in module order, plus which of the detector's
        branch blocks remain. Dropping any k of a ViT's identical blocks gives one signature, so one
        latency measurement serves all those models."""
        config = _without_block_names(self.architecture.model_dump(mode="json"))
        shapes = [list(tensor.shape) for tensor in self.state_dict().values()]
        # The detector's branch blocks are alike in shape but each runs at its own resolution.
        branch = list(self.detector.backbone.branch)
        return hashlib.sha256(json.dumps([config, shapes, branch], sort_keys=True).encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """Hash of architecture and weights (buffers included), stable across processes."""
        digest = hashlib.sha256(self.architecture_fingerprint().encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def chunks(self, frames: Tensor) -> Tensor:
        """`[B, F, H, W, 3]` uint8 frames -> `[B * F / chunk, 3, chunk, H, W]` normalised backbone inputs."""
        batch, count = frames.shape[:2]
        chunk = self.backbone.chunk_frames
        if count % chunk:
            raise ValueError(f"{count} frames is not a multiple of the backbone's {chunk}-frame chunks")
        chunks = frames.reshape(batch * count // chunk, chunk, *frames.shape[2:]).permute(0, 4, 1, 2, 3)
        # In the buffers' dtype, so a model cast to half precision gets half-precision inputs.
        return (chunks.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def extract_features(self, inputs: Tensor) -> Tensor:
        """`[B, T, C]` features from `[B, T, C]` features (identity) or `[B, T * stride, H, W, 3]` uint8 frames."""
        if self.backbone is None:
            return inputs
        features = self.backbone(self.chunks(inputs))
        features = features.reshape(inputs.shape[0], -1, features.shape[-1])
        if self.feature_upsample == 1:
            return features
        stretched = F.interpolate(features.transpose(1, 2), size=features.shape[1] * self.feature_upsample,
                                  mode="linear", align_corners=False)
        return stretched.transpose(1, 2)

    def detect_from_features(self, features: Tensor, mask: Tensor) -> DetectorOutput:
        """The detector on `[B, T, C]` grid features."""
        return self.detector(features.transpose(1, 2), mask)

    def forward(self, inputs: Tensor, mask: Tensor) -> DetectorOutput:
        """`inputs` as for `extract_features`, `mask` [B, T] bool over the feature grid."""
        return self.detect_from_features(self.extract_features(inputs), mask)


def _without_block_names(config):
    if isinstance(config, dict):
        return {k: _without_block_names(v) for k, v in config.items() if k not in BLOCK_NAMED_FIELDS}
    return config
