"""`tadprune study launch`: everything from a spec to a finished (or resumed) study."""
from __future__ import annotations

import optuna

from tadmodels.training import train_and_save

from .objective import TrialRunner
from .progress import StudyProgress
from .spec import StudySpec
from .study import artifact_root, ensure_baseline, open_study, remaining_trials, run_local


def launch(spec: StudySpec, budgets: dict, show_progress: bool = True) -> optuna.Study:
    spec = spec.resolved()
    if not (spec.base_model / "model.safetensors").exists():
        train_and_save(spec, spec.base_model, show_progress=show_progress)
    runner = TrialRunner(spec)
    study = open_study(spec, spec.storage_url, budgets)
    study.set_user_attr("artifact_store", str(artifact_root(spec)))
    if "base_latency_ms" not in study.user_attrs:
        latency, _ = runner.latency(runner.base)
        study.set_user_attr("base_latency_ms", latency["median_ms"])
        study.set_user_attr("base_map", runner.experiment.evaluate(runner.base, profile=False)["average_mAP"])
    ensure_baseline(study, runner, show_progress)
    remaining = remaining_trials(study, spec.n_trials)
    if remaining == 0:
        return study
    with StudyProgress(study, enabled=show_progress) as view:
        if spec.runner.kind == "local":
            run_local(study, runner, remaining, spec.timeout_s, callbacks=[view.optuna_callback])
        else:
            from .ray_runner import RayProgress, run_ray

            run_ray(study, spec, runner.encoding.distributions(), remaining, spec.timeout_s, callbacks=[RayProgress(view)])
    return study
