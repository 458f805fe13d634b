"""Validated description of a TAD dataset on disk (DESIGN.md "Data formats")."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SyntheticSource(BaseModel):
    """Generate the dataset with `tadprune data synth` when `root` does not exist yet."""

    model_config = ConfigDict(extra="forbid")

    preset: str
    seed: int = 0


class DataConfig(BaseModel):
    """Where a dataset lives and how its time axis maps onto the feature grid.

    `feature_stride` and `clip_length` are in frames: feature i covers frames
    [i * stride, i * stride + clip). For `kind: frames` they describe the grid the
    backbone produces (its temporal stride), and the model spec checks they agree.
    """

    model_config = ConfigDict(extra="forbid")

    root: Path
    kind: Literal["features", "frames"]
    annotations: str = "annotations.json"
    inputs_dir: str | None = Field(default=None, description="defaults to `features` or `frames`")
    fps: float | None = Field(default=None, gt=0, description="None: each video's fps from the annotations")
    feature_stride: int = Field(default=4, ge=1)
    clip_length: int = Field(default=16, ge=1)
    train_subset: str = "validation"
    test_subset: str = "test"
    labels: list[str] | None = Field(default=None, description="label names in id order; None: from the annotations")
    max_seq_len: int = Field(default=2304, ge=1, description="training window, in feature-grid positions")
    synthetic: SyntheticSource | None = None

    @model_validator(mode="after")
    def _unique_labels(self) -> "DataConfig":
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: names must be unique")
        return self

    @property
    def annotations_path(self) -> Path:
        return self.root / self.annotations

    @property
    def inputs_path(self) -> Path:
        return self.root / (self.inputs_dir or self.kind)
