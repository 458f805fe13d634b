"""Schedules as fixed-size Optuna parameters, so that every sampler (NSGA-II, TPE, GP, random) works.

One priority key per block that may drop plus the number of drops: the `drops` highest-priority
blocks go, highest first. Channel ratios are categorical choices, one global and one per stage
given in the spec.
"""
from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from pruning.schedule import GLOBAL_RATIO

from .spec import SearchSpace

DROPS = "drops"
PRIORITY = "priority:"
RATIO = "channel_ratio"


@dataclass(frozen=True)
class Decoded:
    drops: list[str]
    channel_ratios: dict[str, float]

    def key(self) -> str:
        """Identifies the schedule regardless of the parameters that encoded it."""
        ratios = ",".join(f"{k}={v}" for k, v in sorted(self.channel_ratios.items()))
        return f"{'>'.join(self.drops)}|{ratios}"


class ScheduleEncoding:
    """Maps between Optuna parameters and (drops, channel ratios) for one model and search space."""

    def __init__(self, space: SearchSpace, droppable: list[str]) -> None:
        allowed = space.blocks if space.blocks is not None else droppable
        unknown = [b for b in allowed if b not in droppable]
        if unknown:
            raise ValueError(f"search.blocks: {unknown} are not droppable blocks of the model; they are {droppable}")
        if space.max_drops >= len(droppable):
            raise ValueError(f"search.max_drops {space.max_drops}: the model has {len(droppable)} droppable blocks, "
                             "at least one must stay")
        if space.max_drops > len(allowed):
            raise ValueError(f"search.max_drops {space.max_drops} exceeds the {len(allowed)} blocks allowed to drop")
        self.space = space
        self.blocks = list(allowed)
        self.droppable = droppable

    def distributions(self) -> dict[str, BaseDistribution]:
        dists: dict[str, BaseDistribution] = {DROPS: IntDistribution(0, self.space.max_drops)}
        dists.update({PRIORITY + b: FloatDistribution(0.0, 1.0) for b in self.blocks})
        if len(self.space.channel_ratios) > 1:
            dists[RATIO] = CategoricalDistribution(self.space.channel_ratios)
        for stage, choices in self.space.stage_channel_ratios.items():
            dists[f"{RATIO}:{stage}"] = CategoricalDistribution(choices)
        return dists

    def suggest(self, trial: optuna.Trial) -> Decoded:
        params = {name: _suggest(trial, name, dist) for name, dist in self.distributions().items()}
        return self.decode(params)

    def decode(self, params: dict) -> Decoded:
        ranked = sorted(self.blocks, key=lambda b: -params[PRIORITY + b])
        drops = ranked[:params[DROPS]]
        remaining = [b for b in self.droppable if b not in drops]
        ratios: dict[str, float] = {}
        global_ratio = params.get(RATIO, self.space.channel_ratios[0])
        if global_ratio:
            ratios[GLOBAL_RATIO] = global_ratio
        for stage in self.space.stage_channel_ratios:
            ratio = params[f"{RATIO}:{stage}"]
            ratios.update({b: ratio for b in remaining if b.startswith(stage) and ratio != global_ratio})
        return Decoded(drops, ratios)

    def encode(self, order: list[str], drops: int | None = None, channel_ratio: float = 0.0) -> dict:
        """Parameters that decode to dropping the first `drops` blocks of `order` (all of them when
        None), in that order, then pruning channels by `channel_ratio` everywhere: the baseline
        families and the seeded start. Keys fall evenly from 1 along `order`; blocks not in it get 0.
        A stage whose choices lack `channel_ratio` takes its largest choice below it."""
        drops = len(order) if drops is None else drops
        outside = [b for b in order if b not in self.blocks]
        if outside:
            raise ValueError(f"{outside} may not drop in this search space")
        if not 0 <= drops <= min(len(order), self.space.max_drops):
            raise ValueError(f"{drops} drops: expected 0 to {min(len(order), self.space.max_drops)}")
        if channel_ratio not in self.space.channel_ratios:
            raise ValueError(f"channel ratio {channel_ratio} is not among the choices {self.space.channel_ratios}")
        params: dict = {DROPS: drops, **{PRIORITY + b: 0.0 for b in self.blocks}}
        params.update({PRIORITY + b: 1.0 - i / (len(order) + 1) for i, b in enumerate(order)})
        if RATIO in self.distributions():
            params[RATIO] = channel_ratio
        for stage, choices in self.space.stage_channel_ratios.items():
            params[f"{RATIO}:{stage}"] = max(c for c in choices if c <= channel_ratio)
        return params


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution):
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high)
    return trial.suggest_categorical(name, dist.choices)
