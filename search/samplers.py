"""The study's sampler, and what each learns from PRUNED trials (Optuna 5.0).

A study prunes trials in two ways (`search.lifecycle`): multi-fidelity stops (`search.fidelity`)
and repeats of a schedule already run. Optuna lets no multi-objective trial be told PRUNED with
values, and a pruned trial with intermediate values makes multi-objective TPE fail (its pruned-
trial score asks for `study.direction`), so pruned trials carry their results in user attributes
(`rungs`, `repeat_values`) and each sampler sees them as follows:

- TPE ranks PRUNED trials after the best ones (its "above" group), so it learns to propose fewer
  schedules like them, which is what a stopped trial and a known result both ask of it.
- NSGA-II builds each generation's parents from COMPLETE trials: a pruned child is one that lost
  the selection, and the generation draws children until it has `population_size` complete ones.
- GP fits its model to COMPLETE trials only, so `RepeatAwareGPSampler` shows it each pruned trial
  that has a measured result as a complete one: a repeat with the values it repeats (so it does not
  take the spot for unexplored and propose it again), a trial stopped at a rung with that rung's
  mAP (a lower-fidelity estimate, usually below the full alignment's) and its latency. A trial
  stopped before alignment has no measured mAP and stays unseen.
- Random sampling learns from nothing, by design.
"""
from __future__ import annotations

import copy

import optuna
from optuna.trial import FrozenTrial, TrialState

from .lifecycle import REPEAT_VALUES, RUNGS
from .objective import LATENCY, MAP
from .spec import StudySpec
from .study import CONSTRAINTS_KEY, constraint_values


def measured_values(trial: FrozenTrial) -> list[float] | None:
    """What a PRUNED trial measured, as (mAP, latency): the values it repeats, else its last rung's."""
    if REPEAT_VALUES in trial.user_attrs:
        return list(trial.user_attrs[REPEAT_VALUES])
    rungs = trial.user_attrs.get(RUNGS)
    return [rungs[-1][MAP], rungs[-1][LATENCY]] if rungs else None


class _PrunedAsComplete:
    """A study as GP should see it: each PRUNED trial with `measured_values` shown as COMPLETE, with
    constraints when the study has budgets. Everything else is the study's own."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._budgets = study.user_attrs.get("budgets", {})

    def __getattr__(self, name: str):
        return getattr(self._study, name)

    def _shown(self, trial: FrozenTrial) -> FrozenTrial:
        values = measured_values(trial) if trial.state == TrialState.PRUNED else None
        if values is None:
            return trial
        shown = copy.copy(trial)
        shown.state, shown.values = TrialState.COMPLETE, values
        if any(v is not None for v in self._budgets.values()):
            attrs = {LATENCY: values[1], MAP: values[0]}
            shown.system_attrs = {**trial.system_attrs, CONSTRAINTS_KEY: constraint_values(attrs, self._budgets)}
        return shown

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list[FrozenTrial]:
        trials = [self._shown(t) for t in self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)]
        return [t for t in trials if states is None or t.state in states]

    def get_trials(self, deepcopy: bool = True, states=None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)


class RepeatAwareGPSampler(optuna.samplers.GPSampler):
    """Optuna's GP sampler, fitted to complete trials and to pruned trials with a measured result
    (module docstring)."""

    def sample_relative(self, study, trial, search_space):
        return super().sample_relative(_PrunedAsComplete(study), trial, search_space)


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler with `seed` (each launch has its own, see `StudyDriver`). Budgets reach
    it through each trial's stored constraints, which Optuna 5 samplers read (its
    `constraints_func` argument is deprecated)."""
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=spec.population_size, seed=seed)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if spec.sampler == "gp":
        return RepeatAwareGPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)
