"""The best schedule of a study under a budget, as a schedule file (and its checkpoint when stored).
Latency is `search.pareto.latency_ms`: the re-timed figure when the study was re-timed."""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import FrozenTrial

from pruning.schedule import Schedule

from .objective import MAP
from .pareto import RETIMED_DEVICE, RETIMED_IQR_MS, RETIMED_MS, RETIMED_ROUND, RETIMED_SPEEDUP, complete_trials, latency_ms


def best_under_budget(study: optuna.Study, max_latency_ms: float | None, min_map: float | None) -> FrozenTrial:
    """With a latency budget: the best mAP within it; with an mAP floor: the fastest above it; both:
    the best mAP that meets both. The trial returned carries its re-timed figure, when it has one,
    among its user attributes (`search.pareto.complete_trials`)."""
    if max_latency_ms is None and min_map is None:
        raise ValueError("give --max-latency-ms or --min-map")
    complete = complete_trials(study)
    fits = [t for t in complete if (max_latency_ms is None or latency_ms(t) <= max_latency_ms)
            and (min_map is None or t.values[0] >= min_map)]
    if not fits:
        best_map = max((t.values[0] for t in complete), default=float("nan"))
        fastest = min((latency_ms(t) for t in complete), default=float("nan"))
        raise ValueError(f"no complete trial of {study.study_name!r} meets the budget "
                         f"(best mAP {best_map:.4f}, fastest {fastest:.2f} ms)")
    if max_latency_ms is not None:
        return max(fits, key=lambda t: (t.values[0], -latency_ms(t)))
    return min(fits, key=lambda t: (latency_ms(t), -t.values[0]))


def latency_results(trial: FrozenTrial) -> dict:
    """The latency an export reports: the figure used (the base model's latency over the speed-up,
    `search.timing`), the speed-up, where it comes from and on what device, and the first figure.
    `latency_iqr_ms` is the spread of the architecture's own times in the session that timed it."""
    attrs = trial.user_attrs
    if RETIMED_MS in attrs:
        return {"latency_ms": latency_ms(trial), "speedup_over_base": attrs[RETIMED_SPEEDUP],
                "latency_iqr_ms": attrs[RETIMED_IQR_MS], "latency_source": f"re-timed together, round {attrs[RETIMED_ROUND]}",
                "device": attrs[RETIMED_DEVICE], "latency_first_ms": trial.values[1]}
    base_ms = attrs.get("latency_base_ms")  # absent in studies made before figures had one scale
    return {"latency_ms": latency_ms(trial), "speedup_over_base": base_ms / latency_ms(trial) if base_ms else None,
            "latency_iqr_ms": attrs.get("latency_iqr_ms"), "latency_source": "first measurement",
            "device": attrs.get("latency_device"), "latency_first_ms": trial.values[1]}


def export_schedule(study: optuna.Study, trial: FrozenTrial, out: Path) -> Path | None:
    """Write the trial's schedule with its measured results to `out`; its checkpoint, when the study
    stored one, to the directory `out` without suffix + `.model`. Returns that directory or None."""
    results = {MAP: trial.values[0], **latency_results(trial), "per_tiou": trial.user_attrs.get("per_tiou"),
               "tious": trial.user_attrs.get("tious"), "macs": trial.user_attrs.get("macs"),
               "params": trial.user_attrs.get("params"), "study": study.study_name, "trial": trial.number}
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
