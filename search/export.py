"""The best schedule of a study under a budget, as a schedule file (and its checkpoint when stored)."""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import FrozenTrial, TrialState

from pruning.schedule import Schedule

from .objective import MAP
from .pareto import average_map, latency_ms


def best_under_budget(study: optuna.Study, max_latency_ms: float | None, min_map: float | None) -> FrozenTrial:
    """With a latency budget: the best mAP within it; with an mAP floor: the fastest above it; both:
    the best mAP that meets both."""
    if max_latency_ms is None and min_map is None:
        raise ValueError("give --max-latency-ms or --min-map")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fits = [t for t in complete if (max_latency_ms is None or latency_ms(t) <= max_latency_ms)
            and (min_map is None or average_map(t) >= min_map)]
    if not fits:
        best_map = max((average_map(t) for t in complete), default=float("nan"))
        fastest = min((latency_ms(t) for t in complete), default=float("nan"))
        raise ValueError(f"no complete trial of {study.study_name!r} meets the budget "
                         f"(best mAP {best_map:.4f}, fastest {fastest:.2f} ms)")
    if max_latency_ms is not None:
        return max(fits, key=lambda t: (average_map(t), -latency_ms(t)))
    return min(fits, key=lambda t: (latency_ms(t), -average_map(t)))


def export_schedule(study: optuna.Study, trial: FrozenTrial, out: Path) -> Path | None:
    """Write the trial's schedule with its measured results to `out`; its checkpoint, when the study
    stored one, to the directory `out` without suffix + `.model`. Returns that directory or None."""
    results = {MAP: average_map(trial), "latency_ms": latency_ms(trial), "per_tiou": trial.user_attrs.get("per_tiou"),
               "tious": trial.user_attrs.get("tious"), "macs": trial.user_attrs.get("macs"),
               "params": trial.user_attrs.get("params"), "latency_iqr_ms": trial.user_attrs.get("latency_iqr_ms"),
               "device": trial.user_attrs.get("latency_device"), "study": study.study_name, "trial": trial.number}
    schedule = Schedule.model_validate({**trial.user_attrs["schedule"], "results": results})
    schedule.save(out)
    artifacts = trial.user_attrs.get("checkpoint_artifacts")
    if not artifacts:
        return None
    model_dir = out.with_suffix(".model")
    model_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(study.user_attrs["artifact_store"])
    for name, artifact_id in artifacts.items():
        target = model_dir / name
        target.unlink(missing_ok=True)
        download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(target))
    return model_dir
