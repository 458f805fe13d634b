"""A study spec: an experiment (data, model, train) plus the search space, the alignment and
latency settings, the sampler, the budget, the runner and where results are stored."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pruning.alignment import AlignmentConfig
from pruning.selection import SelectionConfig
from tadmodels.profile.latency import TimingConfig
from tadmodels.spec import ExperimentSpec, SpecError, added_field, load_spec


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


class TimingTarget(BaseModel):
    """Where, under Ray, the study's one timing actor runs (`search.timing`): every latency of the
    study is measured there, so one device fills the latency axis however mixed the cluster is."""

    model_config = ConfigDict(extra="forbid")

    node: str | None = Field(default=None, description="IP address of the node whose device times (Ray's node:<ip> resource)")
    resources: dict[str, float] = Field(default_factory=dict, description="Ray resources the actor asks for, e.g. "
                                        "{'accelerator_type:H100': 0.001} for a node with an H100")
    gpu: float = Field(default=0, ge=0, le=1, description="share of one GPU the actor holds; above 0 to time on a GPU: "
                       "Ray then gives the actor that GPU (1: a GPU of its own, on which no trial trains)")

    @field_validator("node")
    @classmethod
    def _an_address(cls, node: str | None) -> str | None:
        if node is not None:
            try:
                ipaddress.ip_address(node)
            except ValueError:
                raise ValueError(f"{node!r} is not an IP address; give the node's address as `ray status` or "
                                 "`ray list nodes` shows it") from None
        return node

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, resources: dict[str, float]) -> dict[str, float]:
        for name, amount in resources.items():
            if name in ("CPU", "GPU") or name.startswith("node:"):
                raise ValueError(f"{name!r}: give a node as `node` and a GPU share as `gpu`, not as resources")
            if not amount > 0:
                raise ValueError(f"{name!r}: {amount}; an amount above 0 is expected (e.g. 0.001)")
        return resources


class LatencySettings(TimingConfig):
    """Where and on what a study times its trials, and how (dtype, compile, batch, repeats: `TimingConfig`)."""

    device: str = Field(default="auto", description="cpu, cuda or auto (under a Ray timing actor: cuda when "
                        "target.gpu is above 0, else cpu; elsewhere cuda when there is one)")
    positions: int | None = Field(default=None, ge=1, description="grid positions of the timed input; None: data.max_seq_len")
    threads: int | None = Field(default=None, ge=1, description="CPU threads while timing")
    target: Literal["local"] | TimingTarget = Field(
        default_factory=TimingTarget, description="under Ray, where the study's timing actor runs; `local`: each "
        "trial times on its own worker (devices of a mixed cluster then mix on one axis). The local runner times "
        "in its own process whatever this says")


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
    heartbeat_s: int = Field(default=10, ge=1, description="the driver beats for its trials and claims this often")
    grace_s: int = Field(default=120, ge=2, description="a trial or claim without a beat for this long belongs "
                                                       "to a driver that died: other drivers fail or take it over")

    @model_validator(mode="after")
    def _grace_covers_beats(self) -> "RunnerSettings":
        if self.grace_s < 2 * self.heartbeat_s:
            raise ValueError(f"grace_s ({self.grace_s}) must be at least twice heartbeat_s ({self.heartbeat_s}), "
                             "or a live driver's trials could be taken for stale")
        return self


class Rung(BaseModel):
    """One lower rung of multi-fidelity: every alignment step of a schedule runs `epochs` (0: drops
    and channel pruning without alignment), then the model is scored on `split`."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(ge=0, description="alignment epochs per step at this rung; 0: no alignment")
    # A search that decides on the test videos and reports on them selects on its test set; a
    # held-out subset is what keeps the two apart when training videos cannot tell schedules apart
    # (a base model that fits them scores alike there with or without drops).
    split: Literal["train", "heldout", "test"] = Field(
        default="train", description="where the rung's mAP is measured: data.train_subset, data.heldout_subset "
                                     "(neither trained nor reported on) or data.test_subset")


class FidelitySettings(BaseModel):
    """Multi-fidelity (`search.fidelity`): a trial is timed first and stopped before any alignment
    when it is over the latency budget or dominated even at an optimistic mAP; then it climbs the
    `rungs` and the full alignment (the last rung, scored on the test split like every trial),
    going up only while it is competitive at its rung."""

    model_config = ConfigDict(extra="forbid")

    rungs: list[Rung] = Field(min_length=1, description="the lower rungs, cheapest first")
    eta: float = Field(default=2.0, gt=1, description="successive halving's factor: of the trials at a rung at "
                       "similar or lower latency, about 1/eta go up")
    latency_slack: float = Field(default=0.05, ge=0, description="a trial's peers at a rung are the trials there "
                                 "at most this fraction slower than it")
    min_peers: int = Field(default=2, ge=0, description="a trial with fewer peers at a rung goes up: too few to judge by")
    optimism: float = Field(default=0.0, ge=0, description="the optimistic mAP of a schedule before alignment: the "
                            "base model's plus this")

    @model_validator(mode="after")
    def _rising(self) -> "FidelitySettings":
        epochs = [rung.epochs for rung in self.rungs]
        if any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise ValueError(f"rungs: epochs must rise from rung to rung, got {epochs}")
        return self


class SeededStart(BaseModel):
    """The first proposals drawn around the greedy chain (`search.seeding`)."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=1, description="schedules enqueued after the baselines")
    temperature: float = Field(default=0.5, gt=0, description="how far from greedy each step's choice strays, in "
                               "units of the spread of that step's selection scores")
    cost_weight: float = Field(default=1.0, ge=0, description="how much a block's MACs raise its chance to be "
                               "drawn, as the exponent of its MACs over the largest block's; 0: by score alone")


class ParetoSettings(BaseModel):
    """The reference point of every hypervolume a study reports (`search.pareto.reference_point`)."""

    model_config = ConfigDict(extra="forbid")

    map_tolerance: float = Field(default=0.05, ge=0, le=1, description="reference mAP: the base model's minus this")
    latency_ms: float | None = Field(default=None, gt=0, description="reference latency; None: the base model's")


class StudySpec(ExperimentSpec):
    """Everything `tadprune study launch` needs. `base_model` is trained from the experiment
    sections when the directory does not exist yet."""

    base_model: Path
    search: SearchSpace
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    latency: LatencySettings = Field(default_factory=LatencySettings)
    fidelity: FidelitySettings | None = added_field(None, description="multi-fidelity; None: every trial aligns fully")
    seeded_start: SeededStart | None = added_field(None, description="proposals around the greedy chain first; None: none")
    pareto: ParetoSettings = Field(default_factory=ParetoSettings)
    sampler: Literal["nsga2", "tpe", "gp", "random"] = "nsga2"
    population_size: int = Field(default=8, ge=2, description="NSGA-II population")
    seed: int = 0
    n_trials: int | None = Field(default=None, ge=1, description="complete trials the study should have in all "
                                 "(from every launch and driver; failed trials do not count)")
    timeout_s: float | None = Field(default=None, gt=0, description="a launch starts no trial after this many seconds")
    max_failed_trials: int = Field(default=20, ge=1, description="a launch starts no trial after this many of its "
                                   "trials failed (a study whose every trial fails would never reach n_trials)")
    max_repeated_proposals: int = Field(default=200, ge=1, description="a launch starts no trial after the sampler "
                                        "proposed this many schedules in a row that had run already (the search "
                                        "space is exhausted, or nearly)")
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    storage: str | None = Field(default=None, description="SQLAlchemy URL; None: sqlite:///studies/<name>.db")
    artifacts: Path | None = Field(default=None, description="artifact and cache directory; None: studies/<name>.artifacts")

    @model_validator(mode="after")
    def _budget(self) -> "StudySpec":
        if self.n_trials is None and self.timeout_s is None:
            raise ValueError("give n_trials or timeout_s (or both)")
        if self.fidelity is not None and self.fidelity.rungs[-1].epochs >= self.alignment.epochs:
            raise ValueError(f"fidelity.rungs: a lower rung's epochs ({self.fidelity.rungs[-1].epochs}) must be below "
                             f"the full alignment's (alignment.epochs {self.alignment.epochs})")
        for index, rung in enumerate(self.fidelity.rungs if self.fidelity is not None else []):
            if rung.split == "heldout" and self.data.heldout_subset is None:
                raise ValueError(f"fidelity.rungs[{index}].split: heldout, but data.heldout_subset is not set: "
                                 "name the dataset's held-out subset, or score the rung on train or test")
        return self

    @model_validator(mode="after")
    def _timing_actor_device(self) -> "StudySpec":
        """Under Ray the timing actor has a GPU only when it asks Ray for one (`target.gpu`)."""
        target, device = self.latency.target, self.latency.device
        if self.runner.kind != "ray" or target == "local":
            return self
        if device.startswith("cuda") and target.gpu == 0:
            raise ValueError(f"latency.device is {device}, but latency.target.gpu is 0: the timing actor gets a GPU "
                             "only by asking Ray for one; give latency.target.gpu (1: a GPU of its own, e.g. 0.01: "
                             "one it shares with trials, which it waits for)")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"latency.device: {device!r}; under a Ray timing actor give cpu, cuda or auto "
                             "(the actor's GPU is the one Ray gives it)")
        if device == "cpu" and target.gpu > 0:
            raise ValueError(f"latency.target.gpu is {target.gpu}, but latency.device is cpu: the actor would hold "
                             "a GPU share it does not time on")
        return self

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///studies/{self.name}.db"

    @property
    def artifact_dir(self) -> Path:
        return self.artifacts or Path("studies") / f"{self.name}.artifacts"

    def with_overrides(self, **overrides) -> "StudySpec":
        """The spec with command-line overrides (storage, n_trials, timeout_s, runner, address) that
        are set; a bad value is reported under its option's name (`--runner: ...`)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        runner = {**self.runner.model_dump(), **{("kind" if k == "runner" else k): given.pop(k)
                                                 for k in ("runner", "address") if k in given}}
        try:
            return type(self).model_validate({**self.model_dump(), **given, "runner": runner})
        except ValidationError as error:
            options = {"runner.kind": "--runner", "runner.address": "--address", "n_trials": "--n-trials",
                       "timeout_s": "--timeout", "storage": "--storage"}
            problems = [f"{options.get('.'.join(map(str, e['loc'])), '.'.join(map(str, e['loc'])))}: {e['msg']}"
                        for e in error.errors()]
            raise SpecError("invalid option\n" + "\n".join(f"  {p}" for p in problems)) from None

    def resolved(self) -> "StudySpec":
        """The spec with its paths made absolute, for workers that run in other directories."""
        return self.model_copy(update={
            "data": self.data.model_copy(update={"root": self.data.root.resolve()}),
            "base_model": self.base_model.resolve(), "artifacts": self.artifact_dir.resolve(),
            "storage": self.storage_url})

    def search_fields(self) -> dict:
        """What defines the study's trials; a resume under the same name must match it. The budget,
        runner, storage and artifact place may change between launches."""
        return self.model_dump(mode="json", exclude={"n_trials", "timeout_s", "max_failed_trials", "max_repeated_proposals",
                                                     "runner", "storage", "artifacts", "pareto"})


def load_study_spec(path: Path) -> StudySpec:
    return load_spec(path, StudySpec)


def load_any_spec(path: Path) -> ExperimentSpec:
    """A study spec when the file has study sections, else a plain experiment spec (data, model, train)."""
    raw = yaml.safe_load(Path(path).read_text()) if Path(path).exists() else None
    study_only = set(StudySpec.model_fields) - set(ExperimentSpec.model_fields)
    if isinstance(raw, dict) and study_only & set(raw):
        return load_study_spec(path)
    return load_spec(path)
