"""A study's timing service: who measures its latencies, on which device, and when.

Latency depends on what a forward pass computes, not on the weights, so the service is handed an
architecture (a `ModelConfig`) and builds the model with random weights where it times: a trial
sends a few hundred bytes, not a checkpoint. Two implementations, one interface:

- `LocalTiming` times in the process that asks, on `latency.device`, holding that device
  exclusively (`DeviceLock`) while it times; trials hold the devices they compute on shared while
  they align and evaluate, so no trial of this host runs on the device during a measurement. The
  local runner uses it, so does `latency.target: local`, and `study pareto --retime` without Ray.
- `RayTiming`, under Ray: one named actor per study (`TimingActor`, a `LocalTiming` inside),
  placed on `latency.target` (a node, a GPU type, any Ray resource), measures every latency of the
  study and alone writes its latency cache, so the study's latency axis comes from one device
  however mixed the cluster. Every driver and worker of the study finds the actor by name
  (`get_if_exists`), so several drivers on one cluster share it; it lives as long as the driver
  that created it, and whoever finds it gone starts it again.

Both answer `latency` (one architecture, cached: the first figure stored is the one every trial
of that architecture reports) and `retime` (several architectures timed together in interleaved
rounds, never cached: `search.retime` stores those figures).

A study's latency axis is one scale: the base model's latency, measured once (alone, at the
study's groundwork), divided by each architecture's speed-up over the base model, measured side by
side with it in interleaved rounds (`latency_ms` of a record; the architecture's own median of
that session stays beside it as `median_ms`). Absolute times on a shared machine drift by tens of
percent from one minute to the next and two architectures timed minutes apart inherit that drift,
while the paired ratio holds within a few percent (benchmarks/RESULTS.md): so every architecture
is compared through its ratio, and all of them against one base figure.
"""
from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Protocol

import torch

from tadmodels.models import ModelConfig, TADModel
from tadmodels.profile import model_latencies, resolve_device
from tadmodels.profile.latency import TimingConfig, Timings, device_description
from tadmodels.spec import load_spec

from .cache import DeviceLock, LatencyCache
from .spec import LatencySettings, StudySpec

NAMESPACE = "tadprune"
BASE, MODEL = "base", "model"  # the names of the variants of a paired measurement


@dataclass(frozen=True)
class TimedLatency:
    """A latency record (`LatencyRecord.to_json()` plus `timed_by`), whether the cache answered,
    and the damaged cache entries met on the way (named, deleted, measured again)."""

    record: dict
    cache_hit: bool
    discarded: list[str] = field(default_factory=list)


class TimingService(Protocol):
    def latency(self, architecture: ModelConfig, signature: str) -> TimedLatency:
        """The architecture's latency, measured once per compute signature, input and target."""

    def retime(self, architectures: Mapping[str, ModelConfig]) -> dict[str, dict]:
        """The architectures timed together in interleaved rounds, by name; each record carries its
        paired speed-up over the first architecture (`speedup`)."""


def timed_positions(spec: StudySpec) -> int:
    """Grid positions of the input a study times."""
    return spec.latency.positions or spec.data.max_seq_len


def base_config_of(spec: StudySpec) -> Path:
    """The base model's config file: its architecture, what every other figure is a ratio to."""
    return spec.base_model / "config.yaml"


def signature_of(architecture: ModelConfig) -> str:
    """The compute signature of an architecture, from shapes alone (built on the meta device)."""
    with torch.device("meta"):
        return TADModel(architecture).compute_signature()


class LocalTiming:
    """Times in this process on `device` (default: `settings.device`); see the module docstring.
    `base_config` is the base model's config file (`config.yaml`), read when first needed: every
    other architecture is timed side by side with that one."""

    def __init__(self, settings: LatencySettings, positions: int, cache_root: Path, device: str | None = None,
                 base_config: Path | None = None) -> None:
        self.settings, self.positions = settings, positions
        self.device = resolve_device(device or settings.device)
        self.cache = LatencyCache(cache_root)
        self.lock = DeviceLock(self.device)
        self.timed_by = f"{socket.gethostname()} pid {os.getpid()}"
        self.base_config = base_config

    @classmethod
    def for_study(cls, spec: StudySpec) -> "LocalTiming":
        return cls(spec.latency, timed_positions(spec), spec.artifact_dir / "cache", base_config=base_config_of(spec))

    @cached_property
    def base(self) -> tuple[ModelConfig, str] | None:
        """The base model's architecture and compute signature (None: no base, every figure alone)."""
        if self.base_config is None:
            return None
        architecture = load_spec(self.base_config).model
        return architecture, signature_of(architecture)

    def key(self, signature: str) -> tuple:
        """Everything a figure depends on: what the forward computes, the input, the device and
        where it is (the target), how it is timed (dtype, compile, batch, repeats), and the base
        model it is a ratio to."""
        settings = self.settings
        target = settings.target if settings.target == "local" else settings.target.model_dump(mode="json")
        return (signature, [self.positions], device_description(self.device, settings.threads), target,
                settings.model_dump(mode="json", include=set(TimingConfig.model_fields)),
                self.base[1] if self.base else None)

    def latency(self, architecture: ModelConfig, signature: str) -> TimedLatency:
        """From the cache, or measured with the device to ourselves: the base model alone, any
        other architecture side by side with the base model (its `latency_ms` is the base model's
        figure over the paired speed-up). The cache is read again once the device is ours: a
        request that waited for another's measurement of the same architecture takes that one."""
        key = self.key(signature)
        cached = self.cache.get(key)
        if cached is not None:
            return TimedLatency(cached, True, self.cache.take_discarded())
        paired = self.base is not None and signature != self.base[1]
        base = self.latency(*self.base) if paired else None
        discarded = base.discarded if base else []
        with self.lock.exclusive():
            cached = self.cache.get(key)
            if cached is None:
                record = self._paired(architecture, signature, base.record) if paired else self._alone(architecture, signature)
        if cached is not None:
            return TimedLatency(cached, True, discarded + self.cache.take_discarded())
        stored = self.cache.put(key, record)
        return TimedLatency(stored, stored is not record, discarded + self.cache.take_discarded())

    def _alone(self, architecture: ModelConfig, signature: str) -> dict:
        record = self._record(self._measure({MODEL: architecture}, {MODEL: signature}), MODEL)
        return {**record, "latency_ms": record["median_ms"]}

    def _paired(self, architecture: ModelConfig, signature: str, base_record: dict) -> dict:
        base_architecture, base_signature = self.base
        timings = self._measure({BASE: base_architecture, MODEL: architecture}, {BASE: base_signature, MODEL: signature})
        speedup = timings.speedup(MODEL)
        return {**self._record(timings, MODEL), "latency_ms": base_record["latency_ms"] / speedup.median,
                "speedup_over_base": speedup.to_json(), "base_latency_ms": base_record["latency_ms"],
                "base_signature": base_signature}

    def retime(self, architectures: Mapping[str, ModelConfig]) -> dict[str, dict]:
        with self.lock.exclusive():
            timings = self._measure(architectures)
        return {name: {**self._record(timings, name), "speedup": timings.speedup(name).to_json()} for name in timings}

    def _measure(self, architectures: Mapping[str, ModelConfig], signatures: Mapping[str, str] | None = None) -> Timings:
        """Build each architecture with random weights (weights do not change what a forward
        computes) and time them together. With `signatures`, each built model must have the one
        given: an architecture that does not describe its model is refused, not timed."""
        models = {name: TADModel(architecture).eval() for name, architecture in architectures.items()}
        for name, expected in (signatures or {}).items():
            if models[name].compute_signature() != expected:
                raise ValueError(f"the architecture handed for timing builds a model of compute signature "
                                 f"{models[name].compute_signature()}, not {expected}: it does not describe the model")
        return model_latencies(models, self.positions, str(self.device), self.settings, self.settings.threads)

    def _record(self, timings: Timings, name: str) -> dict:
        return {**timings[name].to_json(), "timed_by": self.timed_by}


class TimingActor:
    """The Ray actor behind `RayTiming`: a `LocalTiming` on the target's device. `auto` is the GPU
    Ray gave the actor (`target.gpu` above 0), else the CPU."""

    def __init__(self, settings_json: str, positions: int, cache_root: str, base_config: str) -> None:
        import ray

        settings = LatencySettings.model_validate_json(settings_json)
        device = settings.device
        if device == "auto":
            device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.timing = LocalTiming(settings, positions, Path(cache_root), device, Path(base_config))

    def where(self) -> str:
        """Host, process and device: for the user, and a sign the actor is up."""
        return f"{self.timing.timed_by} on {device_description(self.timing.device, self.timing.settings.threads)}"

    def latency(self, architecture: ModelConfig, signature: str) -> TimedLatency:
        return self.timing.latency(architecture, signature)

    def retime(self, architectures: Mapping[str, ModelConfig]) -> dict[str, dict]:
        return self.timing.retime(architectures)


def actor_name(spec: StudySpec) -> str:
    """One actor per study and timing set-up: the same name in every driver and worker."""
    identity = f"{spec.name}|{spec.latency.model_dump_json()}|{timed_positions(spec)}|{spec.artifact_dir.resolve()}"
    return f"tadprune-timing-{spec.name}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


def actor_resources(spec: StudySpec) -> dict[str, float]:
    """The Ray resources the actor asks for besides its GPU share: the target's, and its node's."""
    target = spec.latency.target
    return {**target.resources, **({f"node:{target.node}": 0.001} if target.node else {})}


def timing_actor(spec: StudySpec):
    """The study's timing actor: found by name, or started on the target. It holds no CPU of Ray's
    (trials keep their slots) and runs one call at a time."""
    import ray

    actor_class = ray.remote(TimingActor).options(
        name=actor_name(spec), namespace=NAMESPACE, get_if_exists=True, num_cpus=0,
        num_gpus=spec.latency.target.gpu, resources=actor_resources(spec))
    return actor_class.remote(spec.latency.model_dump_json(), timed_positions(spec), str(spec.artifact_dir.resolve() / "cache"),
                              str(base_config_of(spec).resolve()))


class RayTiming:
    """Asks the study's timing actor; when the actor is gone (the driver that started it ended
    while another drives on), starts it again and asks once more."""

    def __init__(self, spec: StudySpec, actor=None) -> None:
        self.spec = spec
        self.actor = actor

    def _ask(self, method: str, *args):
        import ray

        for attempt in range(2):
            if self.actor is None:
                self.actor = timing_actor(self.spec)
            try:
                return ray.get(getattr(self.actor, method).remote(*args))
            except ray.exceptions.RayActorError:
                self.actor = None
                if attempt:
                    raise

    def where(self) -> str:
        return self._ask("where")

    def latency(self, architecture: ModelConfig, signature: str) -> TimedLatency:
        return self._ask("latency", architecture, signature)

    def retime(self, architectures: Mapping[str, ModelConfig]) -> dict[str, dict]:
        return self._ask("retime", dict(architectures))


def timing_service(spec: StudySpec) -> TimingService:
    """The service a study's runner uses: the Ray actor under Ray (unless `latency.target` is
    `local`), else timing in this process."""
    if spec.runner.kind == "ray" and spec.latency.target != "local":
        return RayTiming(spec)
    return LocalTiming.for_study(spec)
