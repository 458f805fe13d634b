"""Re-timing a study: the figures its front is judged by, measured together.

A trial's first latency is measured when its trial happens to run, under whatever else the
machine did then, so two architectures of equal cost can read far apart and which trial is on the
front changes from run to run. At the end of every launch (and on demand: `tadprune study pareto
--retime`) the base model, the greedy chain's trials and the front are timed again together, in
interleaved rounds, on the study's timing service (`search.timing`), so load shared by all of
them moves all of them alike. One figure per compute signature: every trial of that architecture
carries it.

Each figure stored is on the study's one latency scale (`search.timing`): the base model's latency
from the groundwork over the architecture's speed-up, paired round by round with the base model in
this re-timing. Round to round the base model's own median moves with the machine (19-29% on a
shared host, benchmarks/RESULTS.md); the paired speed-ups do not, and the trials not re-timed
carry figures on that same scale, so a front mixing the two compares like with like.

The front is then recomputed from the figures it uses; a trial that joins it only then (its first
figure was never compared with the others') is added and everything is timed together once more,
until the front holds only re-timed trials. Architectures re-timed in an earlier round are timed
again too, so every re-timed figure of a study comes from its latest round.

Optuna allows no change to a finished trial (values, attributes or constraints), so the figures are
kept beside the first ones in the study's attribute `latency_retimed` (the round: when, where,
how, and the figures by compute signature). `search.pareto` and `search.export` read them; the trials' objective values and stored budget constraints stay what
the sampler saw.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from tadmodels.models import ModelConfig
from tadmodels.spec import load_spec

from .pareto import RETIMED, front, with_retimed
from .spec import StudySpec
from .study import BASELINE_ATTR, GREEDY, artifact_store
from .timing import TimingService, signature_of


def trial_architecture(spec: StudySpec, trial: FrozenTrial) -> ModelConfig:
    """The architecture of a trial's model, from the config of its stored checkpoint."""
    artifacts = trial.user_attrs.get("checkpoint_artifacts", {})
    if "config.yaml" not in artifacts:
        raise ValueError(f"trial {trial.number} has no stored checkpoint config, so its architecture is unknown")
    with artifact_store(spec).open_reader(artifacts["config.yaml"]) as stream:
        return ModelConfig.model_validate(yaml.safe_load(stream)["model"])


def stored_spec(study: optuna.Study, storage_url: str) -> StudySpec:
    """The spec a study was launched with (what defines its trials, kept in its attributes), with
    its storage and artifact directory: enough to time it again."""
    if "spec" not in study.user_attrs or "artifact_store" not in study.user_attrs:
        raise ValueError(f"study {study.study_name!r} keeps no spec: it was not made by `tadprune study launch`")
    return StudySpec.model_validate({**study.user_attrs["spec"], "n_trials": 1, "storage": storage_url,
                                     "artifacts": Path(study.user_attrs["artifact_store"]).parent})


def retime_study(study: optuna.Study, spec: StudySpec, timing: TimingService,
                 say: Callable[[str], None]) -> dict | None:
    """Time the base model, the greedy chain and the front together and store the round (see the
    module docstring); returns it, or None when the study has no complete trial yet."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not trials:
        return None
    previous = study.user_attrs.get(RETIMED) or {}
    signature = lambda t: t.user_attrs["compute_signature"]  # noqa: E731
    base_ms = study.user_attrs["base_latency_ms"]  # the scale every figure of the study is on
    base = load_spec(spec.base_model / "config.yaml").model
    base_signature = signature_of(base)
    current = [with_retimed(t, previous) for t in trials]
    chosen = {signature(t): t for t in current
              if t.user_attrs.get(BASELINE_ATTR) == GREEDY or signature(t) in previous.get("by_signature", {})}
    chosen |= {signature(t): t for t in front(current)}
    architectures = {base_signature: base}
    sessions = 0
    while True:
        for key, trial in chosen.items():
            if key not in architectures:
                architectures[key] = trial_architecture(spec, trial)
        say(f"re-timing {len(architectures)} architectures together (the base model, the greedy chain, the front)")
        records = timing.retime(architectures)
        sessions += 1
        figures = {"round": previous.get("round", 0) + 1, "base_latency_ms": base_ms, "by_signature": {
            key: {"latency_ms": base_ms / r["speedup"]["median"], "speedup_over_base": r["speedup"]["median"],
                  "speedup_iqr": r["speedup"]["iqr"], "median_ms": r["median_ms"], "iqr_ms": r["iqr_ms"],
                  "min_ms": r["min_ms"], "unstable": r["unstable"] or r["speedup"]["unstable"]}
            for key, r in records.items()}}
        joined = {signature(t): t for t in front([with_retimed(t, figures) for t in trials])
                  if signature(t) not in records}
        if not joined:
            break
        say(f"{len(joined)} trial(s) joined the front with their first figure: timing everything together again")
        chosen |= joined
    base_record = records[base_signature]
    retiming = {**figures, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sessions": sessions,
                "architectures": len(records), "base_signature": base_signature,
                **{key: base_record[key] for key in ("device", "timed_by", "dtype", "compile", "input_shape", "repeats",
                                                     "stopped_by", "load_avg_1m")}}
    study.set_user_attr(RETIMED, retiming)
    say(f"re-timed round {retiming['round']}: {len(records)} architectures on {base_record['device']} "
        f"({base_record['timed_by']}), {base_record['repeats']} rounds ({base_record['stopped_by']}); "
        f"base model {base_record['median_ms']:.2f} ms in this round, {base_ms:.2f} ms on the study's scale")
    return retiming
