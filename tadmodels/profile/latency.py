"""Wall-clock latency of forward passes that survives a shared machine.

The method follows `torch.utils.benchmark.Timer.adaptive_autorange` (repeat until the IQR is small
against the median, within a cap) and pyperf (warm-up first, report the median and the minimum,
keep garbage collection out of the timed calls), in one process and for several variants at once:

- every variant runs `warmup` times untimed first;
- then rounds: each round times every variant once, the order rotated from round to round, so
  load from other processes and clock changes reach all variants alike;
- a speed-up is the median of the per-round ratios (reference time / variant time of the same
  round), with their IQR: the pairing cancels what a competing process adds to both;
- after `min_repeats` rounds, rounds go on until every variant's IQR / median and every
  speed-up's over the first variant is at most `stable_iqr`, or until `max_repeats` rounds or
  `max_time_s` of timed work are reached; a variant or speed-up still wider is flagged unstable;
- on CUDA each call is timed by CUDA events after a synchronise (the GPU's time), on CPU by
  `time.perf_counter` with a fixed thread count.

`torch.utils.benchmark.Timer` itself times one statement alone, so it cannot interleave variants;
pyperf's worker processes would time each variant at a different moment, the failure this avoids.
"""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..collector import gc_paused

Dtype = Literal["float32", "float16", "bfloat16"]
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TimingConfig(BaseModel):
    """How a forward pass is timed: as it would be deployed (dtype, compilation, batch), and when
    to stop repeating."""

    model_config = ConfigDict(extra="forbid")

    dtype: Dtype = Field(default="float32", description="weights and floating inputs cast to this")
    compile: bool = Field(default=False, description="torch.compile the model; compilation is done before the warm-up")
    batch: int = Field(default=1, ge=1, description="videos per timed forward")
    warmup: int = Field(default=5, ge=0, description="untimed runs of each variant before the rounds")
    min_repeats: int = Field(default=10, ge=2, description="timed rounds at least, before the spread is judged")
    max_repeats: int = Field(default=100, ge=2, description="timed rounds at most")
    max_time_s: float = Field(default=30.0, gt=0, description="past min_repeats, stop after this much timed work in all")
    stable_iqr: float = Field(default=0.1, gt=0, description="stable: IQR / median at most this")

    @model_validator(mode="after")
    def _repeats_in_order(self) -> "TimingConfig":
        if self.min_repeats > self.max_repeats:
            raise ValueError(f"min_repeats ({self.min_repeats}) exceeds max_repeats ({self.max_repeats})")
        return self

    def stop_rule(self) -> dict:
        return self.model_dump(include={"min_repeats", "max_repeats", "max_time_s", "stable_iqr"})


@dataclass(frozen=True)
class LatencyRecord:
    """One variant's latency and the conditions it was measured under."""

    median_ms: float
    min_ms: float
    iqr_ms: float
    repeats: int
    unstable: bool      # IQR / median above the stop rule's `stable_iqr`
    stopped_by: str     # "stable", "max_repeats" or "max_time_s"
    warmup: int
    stop_rule: dict
    device: str         # e.g. "cpu (4 threads)" or "NVIDIA H100 80GB HBM3"
    dtype: str
    compile: bool
    input_shape: list[int]
    load_avg_1m: float | None  # the host's 1-minute load average when the rounds ended (None: unknown)
    torch_version: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Speedup:
    """How many times faster a variant ran than the reference: the median of per-round ratios."""

    median: float
    q1: float
    q3: float
    rounds: int
    unstable: bool      # IQR / median above the stop rule's `stable_iqr`

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_json(self) -> dict:
        return {**asdict(self), "iqr": self.iqr}


@dataclass(frozen=True)
class Timings(Mapping[str, LatencyRecord]):
    """The records of variants timed together, by name, and their per-round samples (ms)."""

    records: dict[str, LatencyRecord]
    samples_ms: dict[str, list[float]]
    stable_iqr: float

    def __getitem__(self, name: str) -> LatencyRecord:
        return self.records[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def speedup(self, name: str, over: str | None = None) -> Speedup:
        """`name`'s speed-up over `over` (default: the first variant), paired round by round."""
        reference = self.samples_ms[over if over is not None else next(iter(self.samples_ms))]
        ratios = np.asarray(reference) / np.asarray(self.samples_ms[name])
        q1, median, q3 = np.percentile(ratios, [25, 50, 75])
        return Speedup(float(median), float(q1), float(q3), len(ratios), bool(q3 - q1 > self.stable_iqr * median))


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_description(device: torch.device, threads: int | None = None) -> str:
    """The device model (a CPU: with the thread count, `threads` or torch's current one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads or torch.get_num_threads()} threads)"


def deploy(module: nn.Module, device: torch.device, config: TimingConfig) -> nn.Module:
    """A copy of `module` as `config` deploys it: on `device`, in `config.dtype`, compiled when
    asked. The caller's module is left as it was."""
    deployed = copy.deepcopy(module).eval().to(device=device, dtype=TORCH_DTYPES[config.dtype])
    return torch.compile(deployed) if config.compile else deployed


def first_call(run: Callable[[], object], device: torch.device, config: TimingConfig) -> None:
    """Run a deployed variant once, untimed: compilation happens here. What cannot run this way
    (a dtype without kernels on this device, a failed compilation) is refused, naming the setting."""
    try:
        with torch.inference_mode():
            run()
    except RuntimeError as error:  # torch's missing kernels and torch.compile's failures both are
        raise ValueError(f"cannot time the model on {device} with latency.dtype={config.dtype}, "
                         f"latency.compile={config.compile}: {type(error).__name__}: {error}") from error


def measure_latencies(runs: Mapping[str, Callable[[], object]], device: torch.device,
                      input_shape: list[int] | Mapping[str, list[int]], config: TimingConfig = TimingConfig(),
                      threads: int | None = None) -> Timings:
    """Time one or several variants against each other in interleaved rounds (see the module's
    docstring). `runs` must already be deployed as `config` says (`deploy`); `input_shape`, one
    for all or one per variant, is recorded."""
    names = list(runs)
    shapes = input_shape if isinstance(input_shape, Mapping) else {name: input_shape for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    with torch_threads(threads), torch.inference_mode():
        for run in runs.values():
            for _ in range(config.warmup):
                run()
        stopped_by, spent_ms = "max_repeats", 0.0
        with gc_paused(collect_first=True):  # none inside timed calls
            for round_index in range(config.max_repeats):
                start = round_index % len(names)
                for name in names[start:] + names[:start]:
                    samples[name].append(_time_once(runs[name], device))
                    spent_ms += samples[name][-1]
                if round_index + 1 < config.min_repeats:
                    continue
                if _stable(samples, config.stable_iqr):
                    stopped_by = "stable"
                    break
                if spent_ms >= 1000 * config.max_time_s:
                    stopped_by = "max_time_s"
                    break
        description = device_description(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    records = {name: _record(times, stopped_by, config, description, shapes[name], load) for name, times in samples.items()}
    return Timings(records, samples, config.stable_iqr)


def _stable(samples: dict[str, list[float]], stable_iqr: float) -> bool:
    """Every variant's times, and every ratio to the first variant, within `stable_iqr`."""
    series = [np.asarray(times) for times in samples.values()]
    series += [series[0] / other for other in series[1:]]
    for values in series:
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        if q3 - q1 > stable_iqr * median:
            return False
    return True


def _record(times: list[float], stopped_by: str, config: TimingConfig, device: str, input_shape: list[int],
            load: float | None) -> LatencyRecord:
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return LatencyRecord(
        median_ms=float(median), min_ms=float(min(times)), iqr_ms=float(q3 - q1), repeats=len(times),
        unstable=bool(q3 - q1 > config.stable_iqr * median), stopped_by=stopped_by, warmup=config.warmup,
        stop_rule=config.stop_rule(), device=device, dtype=config.dtype, compile=config.compile,
        input_shape=list(input_shape), load_avg_1m=load, torch_version=torch.__version__,
    )


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` inside (None: as they are), restored on the way out."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _time_once(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    begin = time.perf_counter()
    run()
    return (time.perf_counter() - begin) * 1000
