"""A study spec: an experiment (data, model, train) plus the search space, the alignment and
latency settings, the sampler, the budget, the runner and where results are stored."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pruning.alignment import AlignmentConfig
from pruning.selection import SelectionConfig
from tadmodels.profile.latency import TimingConfig
from tadmodels.spec import ExperimentSpec, load_spec


class SearchSpace(BaseModel):
    """Which schedules a study may try."""

    model_config = ConfigDict(extra="forbid")

    max_drops: int = Field(ge=1, description="at most this many blocks dropped; the greedy chain is enqueued for 1..max_drops")
    blocks: list[str] | None = Field(default=None, description="blocks that may drop; None: every droppable block")
    channel_ratios: list[float] = Field(default_factory=lambda: [0.0], description="global channel-pruning ratio choices")
    stage_channel_ratios: dict[str, list[float]] = Field(
        default_factory=dict, description="per-stage choices: block-name prefix -> ratios (overrides the global choice there)")

    @model_validator(mode="after")
    def _ratios_in_range(self) -> "SearchSpace":
        for where, choices in [("channel_ratios", self.channel_ratios), *[
                (f"stage_channel_ratios.{k}", v) for k, v in self.stage_channel_ratios.items()]]:
            if not choices:
                raise ValueError(f"{where}: give at least one ratio")
            bad = [r for r in choices if not 0 <= r < 1]
            if bad:
                raise ValueError(f"{where}: {bad} outside [0, 1)")
            if 0 not in choices:
                raise ValueError(f"{where}: include 0, the greedy baseline prunes no channels")
        return self


class LatencySettings(TimingConfig):
    """Where and on what a study times its trials, and how (dtype, compile, batch, repeats: `TimingConfig`)."""

    device: str = "auto"
    positions: int | None = Field(default=None, ge=1, description="grid positions of the timed input; None: data.max_seq_len")
    threads: int | None = Field(default=None, ge=1, description="CPU threads while timing")


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(default=1, gt=0)
    gpu: float = Field(default=0, ge=0)


class RunnerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["ray", "local"] = "ray"
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(default=2, ge=1)
    max_failures: int = Field(default=1, ge=0, description="Ray retries of a trial whose worker died")
    address: str | None = Field(default=None, description="Ray cluster address; None: RAY_ADDRESS or a local Ray")


class StudySpec(ExperimentSpec):
    """Everything `tadprune study launch` needs. `base_model` is trained from the experiment
    sections when the directory does not exist yet."""

    base_model: Path
    search: SearchSpace
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    latency: LatencySettings = Field(default_factory=LatencySettings)
    sampler: Literal["nsga2", "tpe", "gp", "random"] = "nsga2"
    population_size: int = Field(default=8, ge=2, description="NSGA-II population")
    seed: int = 0
    n_trials: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    storage: str | None = Field(default=None, description="SQLAlchemy URL; None: sqlite:///studies/<name>.db")
    artifacts: Path | None = Field(default=None, description="artifact and cache directory; None: studies/<name>.artifacts")

    @model_validator(mode="after")
    def _budget(self) -> "StudySpec":
        if self.n_trials is None and self.timeout_s is None:
            raise ValueError("give n_trials or timeout_s (or both)")
        return self

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///studies/{self.name}.db"

    @property
    def artifact_dir(self) -> Path:
        return self.artifacts or Path("studies") / f"{self.name}.artifacts"

    def with_overrides(self, **overrides) -> "StudySpec":
        """The spec with command-line overrides (storage, n_trials, timeout_s, runner, address) that are set."""
        given = {k: v for k, v in overrides.items() if v is not None}
        runner = {**self.runner.model_dump(), **{("kind" if k == "runner" else k): given.pop(k)
                                                 for k in ("runner", "address") if k in given}}
        return type(self).model_validate({**self.model_dump(), **given, "runner": runner})

    def resolved(self) -> "StudySpec":
        """The spec with its paths made absolute, for workers that run in other directories."""
        return self.model_copy(update={
            "data": self.data.model_copy(update={"root": self.data.root.resolve()}),
            "base_model": self.base_model.resolve(), "artifacts": self.artifact_dir.resolve(),
            "storage": self.storage_url})

    def search_fields(self) -> dict:
        """What defines the study's trials; a resume under the same name must match it. The budget,
        runner, storage and artifact place may change between launches."""
        return self.model_dump(mode="json", exclude={"n_trials", "timeout_s", "runner", "storage", "artifacts"})

    def search_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.search_fields(), sort_keys=True).encode()).hexdigest()[:16]


def load_study_spec(path: Path) -> StudySpec:
    return load_spec(path, StudySpec)


def load_any_spec(path: Path) -> ExperimentSpec:
    """A study spec when the file has study sections, else a plain experiment spec (data, model, train)."""
    raw = yaml.safe_load(Path(path).read_text()) if Path(path).exists() else None
    study_only = set(StudySpec.model_fields) - set(ExperimentSpec.model_fields)
    if isinstance(raw, dict) and study_only & set(raw):
        return load_study_spec(path)
    return load_spec(path)
