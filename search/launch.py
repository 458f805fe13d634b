"""`tadprune study launch`: everything from a spec to a finished (or resumed) study."""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from .claims import StudyClaims
from .encoding import ScheduleEncoding
from .lifecycle import StudyDriver, attempt
from .progress import StudyProgress
from .retime import retime_study
from .samplers import make_sampler
from .spec import StudySpec
from .study import (artifact_root, check_against_model_and_data, enqueue_missing_baseline, enqueue_seeded_start,
                    ensure_groundwork, groundwork_steps, open_study, prepare_runner, run_groundwork, storage_for)
from .timing import TimingService


def launch(spec: StudySpec, budgets: dict, show_progress: bool = True) -> optuna.Study:
    """Create or resume the study and run trials until it has `spec.n_trials` complete trials (from
    any driver) or the time is up. Everything that can be checked is checked before anything is
    written: the spec against the model and the data, the storage URL, the Ray cluster."""
    if spec.storage is None:
        Path("studies").mkdir(exist_ok=True)  # where the default storage and artifacts go
    spec = spec.resolved()
    blocks = check_against_model_and_data(spec)
    if spec.runner.kind == "ray":
        from .ray_runner import check_timing_target, connect

        connect(spec, quiet=not show_progress)
        check_timing_target(spec)
    # Per-trial lines belong to the progress view; a quiet launch prints nothing of Optuna's.
    optuna.logging.set_verbosity(logging.WARNING)
    runner_settings = spec.runner
    storage = storage_for(spec.storage_url, heartbeat_s=runner_settings.heartbeat_s, grace_s=runner_settings.grace_s)
    study = open_study(spec, storage, budgets)
    study.set_user_attr("artifact_store", str(artifact_root(spec)))
    study.set_user_attr("pareto", spec.pareto.model_dump())  # the reference point reports use (last launch's)
    claims = StudyClaims(storage, study._study_id, lease_s=runner_settings.grace_s)
    launch_number = claims.register_launch({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    seed = spec.seed + launch_number
    study.sampler = make_sampler(spec, seed)
    encoding = ScheduleEncoding(spec.search, blocks)
    view = StudyProgress(study, enabled=show_progress)
    park_limit = runner_settings.max_concurrent if runner_settings.kind == "ray" else 1
    with StudyDriver(study, spec, encoding, claims, launch_number, seed, view.say, park_limit) as driver:
        if runner_settings.kind == "local":
            runner = prepare_runner(spec, show_progress)
            timing = runner.timing
            ensure_groundwork(study, claims, lambda needed: run_groundwork(groundwork_steps(runner, needed), view.say),
                              view.say)
        else:
            from .ray_runner import remote_groundwork, start_timing_service

            timing = start_timing_service(spec, view.say)  # the driver's handle keeps the actor alive
            ensure_groundwork(study, claims, lambda needed: remote_groundwork(spec, needed, view.say), view.say)
        driver.fail_stale_trials()  # a killed driver's trials, before the baseline is checked for gaps
        enqueue_missing_baseline(study, claims, encoding)
        enqueue_seeded_start(study, claims, encoding, spec)
        with view:
            if runner_settings.kind == "local":
                run_local(driver, runner)
            else:
                from .ray_runner import run_ray

                run_ray(driver, spec)
        retime_once(study, spec, timing, claims, view.say)
    return study


def retime_once(study: optuna.Study, spec: StudySpec, timing: TimingService, claims: StudyClaims,
                say: Callable[[str], None]) -> None:
    """The end of a launch: the base model, the greedy chain and the front timed together
    (`search.retime`), by one driver at a time. The trials are stored whatever happens here, so a
    re-timing that fails is reported, not raised: the study keeps its first figures."""
    if not claims.claim("retime").held:
        say("another driver is re-timing the study now; `tadprune study pareto --retime` times it again on demand")
        return
    try:
        retime_study(study, spec, timing, say)
    except Exception as error:
        say(f"re-timing failed, the study keeps its first figures: {type(error).__name__}: {error}")
    finally:
        claims.release("retime")


def run_local(driver: StudyDriver, runner, poll_s: float = 1.0) -> None:
    """Plain trials in this process, one piece of work at a time."""
    while not driver.finished():
        flight = driver.next_trial()
        if flight is None:
            if not driver.asking_cut_short:
                time.sleep(poll_s)  # its schedule runs elsewhere, or other drivers' trials may reach the target
            continue
        driver.finish(flight, attempt(runner, driver.work(flight)))
