"""The `data`, `model` and `train` sections a spec file holds (a study spec adds its own sections)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .data.config import DataConfig
from .evaluation import THUMOS14_TIOUS
from .fields import added_field
from .models import ModelConfig
from .profile.latency import TimingConfig

Precision = Literal["fp32", "bf16", "fp16"]
PRECISION_HELP = ("fp32, or bf16 / fp16 autocast (fp16 with a gradient scaler) where the work runs on CUDA; "
                  "on any other device the work runs in fp32 whatever this says")


class TrainConfig(BaseModel):
    """AdamW with linear warm-up then cosine decay, EMA of the weights, gradient clipping, optional
    mixed precision: the loop `tadmodels.training.loop.fit` runs, which alignment shares."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=2, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_epochs: float = Field(default=5, ge=0)
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    grad_clip: float = Field(default=1.0, gt=0)
    precision: Precision = added_field("fp32", description=PRECISION_HELP)
    seed: int = 0
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch; None keeps torch's default")
    device: str = "auto"


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tious: list[float] = Field(default_factory=lambda: list(THUMOS14_TIOUS))
    profile_positions: int | None = Field(default=None, ge=1,
                                          description="grid positions of the latency input; None: data.max_seq_len")
    latency: TimingConfig = Field(default_factory=TimingConfig, description="how `train` and `compress` time models")

    @model_validator(mode="before")
    @classmethod
    def _fixed_repeats_of_older_specs(cls, data):
        """Model directories written before adaptive timing say `latency_repeats: N`: N fixed rounds
        (at least the 2 a spread needs)."""
        if isinstance(data, dict) and "latency_repeats" in data:
            data = dict(data)
            rounds = data.pop("latency_repeats")
            if isinstance(rounds, int):
                rounds = max(rounds, 2)
            data["latency"] = {**data.get("latency", {}), "min_repeats": rounds, "max_repeats": rounds}
        return data


class ExperimentSpec(BaseModel):
    """What `tadprune train` needs: the dataset, the model, how to train and evaluate it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _frames_need_backbone(self) -> "ExperimentSpec":
        if (self.data.kind == "frames") != (self.model.backbone is not None):
            raise ValueError(f"data.kind is {self.data.kind!r}: frames need model.backbone, features need model.input_dim")
        return self


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file and the offending fields."""


def load_spec(path: Path, spec_type: type[BaseModel] = ExperimentSpec) -> BaseModel:
    """Read and validate a YAML spec, reporting every bad field with its dotted path."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of sections at the top level")
    try:
        return spec_type.model_validate(raw)
    except ValidationError as error:
        raise SpecError(f"{path}: invalid spec\n" + "\n".join(f"  {p}" for p in validation_problems(error))) from None


def validation_problems(error: ValidationError) -> list[str]:
    """One line per bad field, `dotted.path: what was wrong`, for messages that name the field."""
    return [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in error.errors()]
