"""Running a study's trials as Ray Tune trials: a Tune searcher over the launch's `StudyDriver` (the
driver is the only process that writes to the study), per-trial resources, retries of dead workers
and a concurrency cap; and the study's groundwork as a Ray task that streams its progress."""
from __future__ import annotations

import json
import logging
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from .fidelity import stop_from_json, stop_to_json
from .lifecycle import StudyDriver, attempt
from .objective import LATENCY, MAP, TrialOutcome, TrialRunner, Work
from .spec import StudySpec
from .study import Groundwork, groundwork_steps, prepare_runner, run_groundwork
from .timing import LocalTiming, RayTiming, TimingService, actor_resources, timing_actor

# In a Tune trial's config beside the Optuna parameters: the Optuna trial, the rung to run, what
# stops it before alignment. One Tune trial runs one piece of work (`search.objective.Work`).
TRIAL_NUMBER, RUNG, STOP = "optuna_trial_number", "rung", "stop_before_alignment"
STATE, REASON, ATTRS = "trial_state", "fail_reason", "attrs_json"
_worker_runners: dict[str, TrialRunner] = {}


class RayConnectionError(ValueError):
    """No Ray cluster answers at the address given; the message names it."""


def run_trial(config: dict[str, Any], spec_json: str) -> None:
    """The Tune trainable: one schedule on one worker. It always reports (a failure as its state
    and reason, with NaN values), so Tune neither stops the run nor retries a trial that would fail
    again; the driver records the outcome."""
    runner = _worker_runners.get(spec_json)
    if runner is None:
        runner = _worker_runners[spec_json] = TrialRunner(StudySpec.model_validate_json(spec_json))
    params = {k: v for k, v in config.items() if k not in (TRIAL_NUMBER, RUNG, STOP)}
    work = Work(params, f"trial-{config[TRIAL_NUMBER]}", config[RUNG], stop_from_json(config[STOP]))
    outcome = attempt(runner, work)
    values = outcome.values or (math.nan, math.nan)
    # Tune flattens nested result dicts into "attrs/key" columns; one JSON string arrives whole.
    tune.report({MAP: values[0], LATENCY: values[1], STATE: outcome.state.name, REASON: outcome.reason,
                 ATTRS: json.dumps(outcome.attrs), "checkpoint": str(outcome.checkpoint or "")})


def _outcome(result: dict | None, error: bool, max_failures: int) -> TrialOutcome:
    """What a Tune trial's last result (or error) says about its Optuna trial."""
    if error:
        return TrialOutcome.failed(f"its Ray worker died {max_failures + 1} time(s) (process killed or node lost); "
                                   "see the Ray logs of the trial")
    if not result or STATE not in result:
        return TrialOutcome.failed("Tune stopped the trial before it reported (time budget or shutdown)")
    attrs, state = json.loads(result[ATTRS]), TrialState[result[STATE]]
    values = (result[MAP], result[LATENCY]) if state in (TrialState.COMPLETE, TrialState.RUNNING) else None
    checkpoint = Path(result["checkpoint"]) if result["checkpoint"] else None
    return TrialOutcome(state, values, attrs, checkpoint, result[REASON])


class StudySearcher(Searcher):
    """Tune's searcher over a `StudyDriver`: each Tune trial runs one piece of work of an Optuna
    trial the driver gave out (a new one, one whose schedule another trial was running, one
    promoted to its next rung); results go back through it. No metric is declared to Tune and no
    Tune scheduler stops trials: the driver, not Tune, judges results (`search.fidelity`)."""

    def __init__(self, driver: StudyDriver, max_failures: int) -> None:
        super().__init__()
        self.driver = driver
        self.max_failures = max_failures
        self._flights = {}

    def suggest(self, trial_id: str) -> dict | None:
        if self.driver.finished():
            return Searcher.FINISHED
        flight = self.driver.next_trial()
        if flight is None:
            return None  # Tune asks again on its next step
        self._flights[trial_id] = flight
        work = self.driver.work(flight)
        return {**work.params, TRIAL_NUMBER: flight.number, RUNG: work.rung, STOP: stop_to_json(work.stop)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        flight = self._flights.pop(trial_id, None)
        if flight is not None:
            self.driver.finish(flight, _outcome(result, error, self.max_failures))

    def __getstate__(self) -> dict:
        """Tune pickles its search algorithm with the experiment (`tuner.pkl`, for `Tuner.restore`);
        a live driver (threads, database connections) does not pickle, and tadprune resumes a study
        from its storage instead, so a pickled copy carries no driver."""
        return {**self.__dict__, "driver": None, "_flights": {}}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study lives in its storage, and a launch resumes from there."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see `save`)."""


def connect(spec: StudySpec, quiet: bool = False, timeout_s: float = 10) -> None:
    """A local Ray with this machine's CPUs (and GPUs) on a laptop, the running cluster when
    `--address` / `RAY_ADDRESS` names one. A cluster that does not answer within `timeout_s` is an
    error naming the address (Ray itself would retry for minutes)."""
    address = spec.runner.address or os.environ.get("RAY_ADDRESS")
    if address and address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
        except (OSError, ValueError) as error:
            raise RayConnectionError(f"Ray address {address}: no cluster answers ({error}); start one with "
                                     "`ray start --head`, or leave out --address / RAY_ADDRESS for a local Ray") from None
    if ray.is_initialized():
        return
    if quiet:
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # a dead worker's error is in the trial's reason
    try:
        init_ray(address=address, logging_level=logging.ERROR if quiet else logging.WARNING)
    except ConnectionError as error:
        raise RayConnectionError(f"Ray address {address}: {error}") from None


def init_ray(**options: Any) -> None:
    """`ray.init` as tadprune starts Ray. Ray starts its workers at niceness 15, so on a shared
    node any ordinary process pre-empts the timing actor and inflates every latency: the workers
    of a local Ray keep the driver's priority (a cluster started with `ray start` takes the same
    `RAY_worker_niceness=0` there)."""
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(include_dashboard=False, log_to_driver=False, **options)


class TimingTargetError(ValueError):
    """`latency.target` names what no node of the Ray cluster has; the message lists what they offer."""


def check_timing_target(spec: StudySpec) -> None:
    """Refuse a `latency.target` that no node of the Ray cluster has (a GPU type, a node address, a
    resource), naming what the nodes offer; run before anything is written."""
    target = spec.latency.target
    if target == "local":
        return
    wanted = {**actor_resources(spec), **({"GPU": target.gpu} if target.gpu else {})}
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if any(all(node["Resources"].get(name, 0) >= amount for name, amount in wanted.items()) for node in nodes):
        return
    offered = "; ".join(f"{node['NodeManagerAddress']}: " + ", ".join(
        f"{name} {amount:g}" for name, amount in sorted(node["Resources"].items())
        if not name.startswith(("node:__internal", "object_store", "memory"))) for node in nodes)
    raise TimingTargetError(f"latency.target: no node of the Ray cluster has {wanted}, which the timing actor asks "
                            f"for. The nodes offer: {offered}")


def start_timing_service(spec: StudySpec, say: Callable[[str], None], wait_s: float = 10) -> TimingService:
    """The study's timing actor (`search.timing`), found or started on `latency.target`, once it
    is up; a target whose resources trials hold right now (a GPU share) is waited for. Under
    `latency.target: local`, timing in this process."""
    if spec.latency.target == "local":
        return LocalTiming.for_study(spec)
    timing = RayTiming(spec, timing_actor(spec))
    where = timing.actor.where.remote()
    if not ray.wait([where], timeout=wait_s)[0]:
        say(f"waiting for the timing actor's resources ({actor_resources(spec)}, GPU {spec.latency.target.gpu:g})")
    say(f"timing service: {ray.get(where)}")
    return timing


def remote_groundwork(spec: StudySpec, needed: dict[str, bool], say: Callable[[str], None]) -> Groundwork:
    """The groundwork as a Ray task with a trial's resources, so the driver does no model work; its
    progress lines reach `say` as the worker yields them."""
    resources = spec.runner.resources
    task = ray.remote(_groundwork).options(num_cpus=resources.cpu, num_gpus=resources.gpu)
    stream = task.remote(spec.model_dump_json(), needed)
    return run_groundwork((ray.get(ref) for ref in stream), say)


def _groundwork(spec_json: str, needed: dict[str, bool]):
    spec = StudySpec.model_validate_json(spec_json)
    if not (spec.base_model / "model.safetensors").exists():
        yield f"training the base model ({spec.train.epochs} epochs) into {spec.base_model}"
    runner = prepare_runner(spec, show_progress=False)
    yield from groundwork_steps(runner, needed)


def run_ray(driver: StudyDriver, spec: StudySpec) -> None:
    """Run trials on Ray (see `connect`) until the driver is finished or the time is up."""
    # Tune's newer console output prints a configuration box and a TensorBoard hint even at
    # verbose=0; the legacy reporter stays quiet, leaving the study's own progress line.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    searcher = StudySearcher(driver, spec.runner.max_failures)
    resources = {"cpu": spec.runner.resources.cpu, "gpu": spec.runner.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec_json=spec.model_dump_json()), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.runner.max_concurrent),
                                    num_samples=-1, time_budget_s=spec.timeout_s,
                                    # A worker keeps its process, and so its TrialRunner (model, data,
                                    # caches), from one trial to the next: no start-up per trial.
                                    reuse_actors=True),
        # One Tune experiment per launch: drivers sharing a study do not share Tune's state files.
        run_config=tune.RunConfig(name=f"{spec.name}-launch{driver.launch}",
                                  storage_path=str((spec.artifact_dir / "ray").resolve()),
                                  failure_config=tune.FailureConfig(max_failures=spec.runner.max_failures),
                                  verbose=0),
    )
    tuner.fit()
