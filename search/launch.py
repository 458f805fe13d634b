"""`tadprune study launch`: everything from a spec to a finished (or resumed) study."""
from __future__ import annotations

import optuna

from .encoding import ScheduleEncoding
from .progress import StudyProgress
from .spec import StudySpec
from .study import (artifact_root, compute_groundwork, groundwork_needed, open_study, prepare_runner, record_groundwork,
                    remaining_trials, run_local)


def launch(spec: StudySpec, budgets: dict, show_progress: bool = True) -> optuna.Study:
    """Create or resume the study, compute its groundwork once where trials run (training the base
    model if missing), then run trials until `spec.n_trials` have finished or the time is up."""
    spec = spec.resolved()
    study = open_study(spec, spec.storage_url, budgets)
    study.set_user_attr("artifact_store", str(artifact_root(spec)))
    needed = groundwork_needed(study)
    if spec.runner.kind == "local":
        runner = prepare_runner(spec, show_progress)
        work = compute_groundwork(runner, needed, show_progress)
    else:
        from .ray_runner import RayProgress, remote_groundwork, run_ray

        if show_progress and any(needed.values()):
            print("on a Ray worker: the base model (trained first if missing), its mAP and latency, "
                  "and the greedy chain", flush=True)
        work = remote_groundwork(spec, needed)
        if show_progress and work.chain:
            print(f"greedy chain: {' > '.join(work.chain)}", flush=True)
    record_groundwork(study, work)
    remaining = remaining_trials(study, spec.n_trials)
    if remaining == 0:
        return study
    with StudyProgress(study, enabled=show_progress) as view:
        if spec.runner.kind == "local":
            run_local(study, runner, remaining, spec.timeout_s, callbacks=[view.optuna_callback])
        else:
            distributions = ScheduleEncoding(spec.search, work.droppable_blocks).distributions()
            run_ray(study, spec, distributions, remaining, spec.timeout_s, callbacks=[RayProgress(view)])
    return study
