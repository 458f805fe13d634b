"""Running a study's trials as Ray Tune trials: OptunaSearch over the study's RDB storage (the
driver is the only process that writes to it), per-trial resources, retries and a concurrency cap."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from .objective import LATENCY, MAP, TrialFailure, TrialOutcome, TrialRunner
from .progress import StudyProgress
from .spec import StudySpec
from .study import Groundwork, artifact_store, compute_groundwork, prepare_runner, record_outcome

FAIL_REASON = "fail_reason"
ATTRS = "attrs_json"
_worker_runners: dict[str, TrialRunner] = {}


def run_trial(config: dict[str, Any], spec_json: str) -> None:
    """The Tune trainable: one schedule on one worker. Results go back to the driver, which records them."""
    runner = _worker_runners.get(spec_json)
    if runner is None:
        runner = _worker_runners[spec_json] = TrialRunner(StudySpec.model_validate_json(spec_json))
    label = f"ray-{tune.get_context().get_trial_id()}"
    try:
        outcome = runner.run(config, label)
    except TrialFailure as error:
        tune.report({FAIL_REASON: str(error)})
        return
    # Tune flattens nested result dicts into "attrs/key" columns; one JSON string arrives whole.
    tune.report({MAP: outcome.values[0], LATENCY: outcome.values[1], ATTRS: json.dumps(outcome.attrs),
                 "checkpoint": str(outcome.checkpoint)})


class StudySearcher(OptunaSearch):
    """OptunaSearch that records each trial's attributes and checkpoint before telling its values,
    and marks trials that reported a failure reason as FAIL."""

    def __init__(self, *args, study: optuna.Study, spec: StudySpec, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._study_handle = study
        self._artifacts = artifact_store(spec)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        if result and FAIL_REASON in result:
            ot_trial.set_user_attr(FAIL_REASON, result[FAIL_REASON])
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return None
        if error:
            ot_trial.set_user_attr(FAIL_REASON, "the worker raised an error after its retries; see the Ray trial logs")
        elif result and MAP in result:
            outcome = TrialOutcome((result[MAP], result[LATENCY]), json.loads(result[ATTRS]), Path(result["checkpoint"]))
            record_outcome(self._study_handle, ot_trial._trial_id, outcome, self._artifacts)
        return super().on_trial_complete(trial_id, result, error)


class RayProgress(tune.Callback):
    """Feeds Tune's trial events to a `StudyProgress`.

    Tune pickles its callbacks with the experiment state for `Tuner.restore`; a live terminal view
    does not pickle, and tadprune resumes studies from their Optuna storage instead, so a pickled
    copy carries no view."""

    def __init__(self, view: StudyProgress | None) -> None:
        self.view = view

    def __getstate__(self) -> dict:
        return {"view": None}

    def _running_changed(self, delta: int) -> None:
        if self.view is not None:
            self.view.running += delta
            self.view.refresh()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._running_changed(+1)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._running_changed(-1)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._running_changed(-1)


def connect(spec: StudySpec) -> None:
    """A local Ray with this machine's CPUs (and GPUs) on a laptop, the running cluster when
    `--address` / `RAY_ADDRESS` names one."""
    if not ray.is_initialized():
        address = spec.runner.address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


def remote_groundwork(spec: StudySpec, needed: dict[str, bool]) -> Groundwork:
    """`compute_groundwork` as a Ray task with a trial's resources, so the driver does no model work."""
    connect(spec)
    resources = spec.runner.resources
    task = ray.remote(_groundwork).options(num_cpus=resources.cpu, num_gpus=resources.gpu)
    return ray.get(task.remote(spec.model_dump_json(), needed))


def _groundwork(spec_json: str, needed: dict[str, bool]) -> Groundwork:
    runner = prepare_runner(StudySpec.model_validate_json(spec_json), show_progress=False)
    return compute_groundwork(runner, needed, show_progress=False)


def run_ray(study: optuna.Study, spec: StudySpec, encoding_distributions: dict, n_trials: int | None,
            timeout_s: float | None, callbacks: list[tune.Callback] | None = None) -> None:
    """Run up to `n_trials` trials (None: until `timeout_s`) on Ray (see `connect`)."""
    # Tune's newer console output prints a configuration box and a TensorBoard hint even at
    # verbose=0; the legacy reporter stays quiet, leaving the study's own progress line.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    connect(spec)
    searcher = StudySearcher(space=encoding_distributions, metric=[MAP, LATENCY], mode=["max", "min"],
                             sampler=study.sampler, study_name=study.study_name, storage=study._storage,
                             study=study, spec=spec)
    resources = {"cpu": spec.runner.resources.cpu, "gpu": spec.runner.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec_json=spec.model_dump_json()), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.runner.max_concurrent),
                                    num_samples=n_trials if n_trials is not None else -1, time_budget_s=timeout_s),
        run_config=tune.RunConfig(name=spec.name, storage_path=str((spec.artifact_dir / "ray").resolve()),
                                  failure_config=tune.FailureConfig(max_failures=spec.runner.max_failures),
                                  callbacks=callbacks, verbose=0),
    )
    tuner.fit()
