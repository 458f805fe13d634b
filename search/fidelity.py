"""Pareto-aware multi-fidelity: stop a trial as soon as it cannot reach the front, before paying
for the full alignment. Optuna does not prune multi-objective trials (optuna/optuna#3450) and Ray
Tune's ASHA ranks by one metric, so the study driver decides, with the rules below, under both
runners (`search.lifecycle`: a rung is one piece of work on a worker, and the driver, which alone
writes to the study and sees every trial of every driver through it, promotes or stops).

1. Before any alignment. Latency depends on the architecture only, so a schedule is timed (or
   found in the latency cache) first. It stops when it is over the latency budget, or when even an
   optimistic mAP (the base model's, plus `optimism`) at its latency is dominated by a known point:
   a complete trial or the base model itself (so a schedule timed slower than the base stops).
   Aligned models can score above the base model (alignment is more training), so the bound is
   optimistic only up to that; `optimism` widens it.
2. Rungs. Each lower rung aligns every step of the schedule for the rung's epochs and scores the
   model on its split; the last rung is the full alignment scored on the test split, whose values
   are the trial's. After a lower rung the trial goes up only if it is competitive there: successive
   halving by non-domination. Its peers are the trials that reached the same rung at similar or
   lower latency (at most `latency_slack` slower); those that score higher there dominate it at that
   rung. With n peers, it goes up while fewer than ceil((n + 1) / eta) of them dominate it: about the
   best 1/eta of each latency neighbourhood go up, and a trial no faster trial beats always does.
   With fewer than `min_peers` peers a rung says too little, and the trial goes up.
3. Baselines. A baseline trial (`greedy`, `greedy+channels`) is measured as the paper measures it:
   it is never stopped and skips every rung that aligns, so the baselines cost what they cost
   without multi-fidelity. It is scored at the rungs that align nothing (0 epochs: an evaluation
   of its drops and channel pruning, no training) and counts there as a peer: the search trials at
   such a rung are then judged against schedules whose full result is known from the first
   search trial on, instead of only against each other (a study's first search trials would have
   too few peers to be judged at all).

A rung's models are cached like the full ones (`search.objective`: one prefix cache per rung), so a
trial going up starts from the longest prefix already aligned at the next rung (by any trial: the
greedy chain's prefixes are the full rung's, and so are the baselines'). It does not resume its lower-rung adapters: LoRA is
merged after every step and each step's learning rate warms up and decays over its own epochs, so a
resumed run would differ from the full alignment every other trial and the baselines are measured
with. The cost of that choice: a trial that reaches the top has also paid its lower rungs (for
rungs of 0 and 1 epochs under a 4-epoch alignment, a quarter more than aligning it once).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from pruning.alignment import AlignmentConfig

from .dominance import dominates
from .spec import FidelitySettings


def rung_alignment(full: AlignmentConfig, epochs: int) -> AlignmentConfig:
    """The full alignment shortened to `epochs`, its warm-up shortened in proportion."""
    return full.model_copy(update={"epochs": epochs, "warmup_epochs": full.warmup_epochs * epochs / full.epochs})


@dataclass(frozen=True)
class ScoredPoint:
    """What a rule weighs: a trial ("trial 7") or the base model, with its mAP (on the front, or at
    a rung) and its latency."""

    name: str
    average_mAP: float
    latency_ms: float


@dataclass(frozen=True)
class StopBeforeAlignment:
    """What stops a schedule once its latency is known: the budget and the points that dominate an
    optimistic mAP. Built by the driver, judged on the worker right after timing."""

    optimistic_map: float
    front: tuple[ScoredPoint, ...]
    max_latency_ms: float | None = None

    def reason(self, latency_ms: float) -> str | None:
        """Why a schedule timed at `latency_ms` stops before alignment, or None when it goes on."""
        if self.max_latency_ms is not None and latency_ms > self.max_latency_ms:
            return f"over the latency budget before alignment: {latency_ms:.3f} ms > {self.max_latency_ms:g} ms"
        optimistic = (self.optimistic_map, latency_ms)
        for point in self.front:
            if dominates((point.average_mAP, point.latency_ms), optimistic):
                return (f"dominated before alignment: {point.name} (mAP {point.average_mAP:.4f}, "
                        f"{point.latency_ms:.3f} ms) beats even mAP {self.optimistic_map:.4f} at {latency_ms:.3f} ms")
        return None


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str


def judge(result: ScoredPoint, others: list[ScoredPoint], settings: FidelitySettings, rung_name: str) -> Verdict:
    """Successive halving by non-domination (module docstring, rule 2): does `result` go up, given
    the results `others` reached at the same rung."""
    limit = result.latency_ms * (1 + settings.latency_slack)
    peers = [o for o in others if o.name != result.name and o.latency_ms <= limit]
    if len(peers) < settings.min_peers:
        return Verdict(True, f"{rung_name}: {len(peers)} peer(s) at similar or lower latency, fewer than "
                             f"{settings.min_peers}: goes up")
    better = sorted((p for p in peers if p.average_mAP > result.average_mAP), key=lambda p: -p.average_mAP)
    allowed = math.ceil((len(peers) + 1) / settings.eta)
    named = ", ".join(f"{p.name} ({p.average_mAP:.4f}, {p.latency_ms:.2f} ms)" for p in better[:3])
    text = (f"{rung_name}: mAP {result.average_mAP:.4f} at {result.latency_ms:.2f} ms; {len(better)} of {len(peers)} "
            f"trials at similar or lower latency score higher" + (f" ({named}{', ...' if len(better) > 3 else ''})"
                                                                  if better else "")
            + f", fewer than {allowed} may")
    return Verdict(len(better) < allowed, text)


def stop_to_json(stop: StopBeforeAlignment | None) -> str:
    """For a Ray trial's config (Tune copies and logs configs: plain JSON travels best)."""
    if stop is None:
        return "null"
    return json.dumps({"optimistic_map": stop.optimistic_map, "max_latency_ms": stop.max_latency_ms,
                       "front": [asdict(p) for p in stop.front]})


def stop_from_json(text: str) -> StopBeforeAlignment | None:
    raw = json.loads(text)
    if raw is None:
        return None
    return StopBeforeAlignment(raw["optimistic_map"], tuple(ScoredPoint(**p) for p in raw["front"]), raw["max_latency_ms"])
