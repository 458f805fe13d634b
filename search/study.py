"""The Optuna study behind a search: created or resumed in an RDB storage, seeded with the greedy
Progressive Block Drop chain, and the bookkeeping every runner shares."""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from pruning.progressive import drop_step
from pruning.selection import select_block
from tadmodels.training import train_and_save

from .objective import LATENCY, MAP, TrialFailure, TrialOutcome, TrialRunner
from .spec import StudySpec

METRIC_NAMES = [MAP, LATENCY]
BASELINE_ATTR, GREEDY = "baseline", "greedy"
CONSTRAINTS_KEY = "constraints"  # the system attribute optuna-dashboard 0.21 and Optuna 5 samplers read


class StudySpecChanged(ValueError):
    """A launch under an existing study name with a spec that defines different trials."""


def storage_for(url: str) -> RDBStorage:
    """An RDB storage; SQLite waits for a busy database instead of failing at once."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return RDBStorage(url, engine_kwargs=engine_kwargs)


def constraint_values(user_attrs: dict, budgets: dict) -> list[float]:
    """Optuna's convention: feasible when every value is <= 0."""
    values = []
    if budgets.get("max_latency_ms") is not None:
        values.append(user_attrs["latency_median_ms"] - budgets["max_latency_ms"])
    if budgets.get("min_map") is not None:
        values.append(budgets["min_map"] - user_attrs[MAP])
    return values


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's sampler. Budgets reach it through each trial's stored constraints, which Optuna 5
    samplers read (its `constraints_func` argument is deprecated)."""
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=spec.population_size, seed=spec.seed)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed, multivariate=True)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=spec.seed)


def _differences(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new))
                for d in _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)]
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def open_study(spec: StudySpec, storage_url: str, budgets: dict) -> optuna.Study:
    """Create the study, or resume it when one of that name exists with the same spec.

    Trials a killed driver left RUNNING are failed with the reason; baseline trials among them are
    enqueued again, so the greedy chain is complete exactly once.
    """
    storage = storage_for(storage_url)
    identity = {"spec": spec.search_fields(), "budgets": budgets}
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if spec.name in existing:
        study = optuna.load_study(study_name=spec.name, storage=storage)
        stored = {"spec": study.user_attrs.get("spec"), "budgets": study.user_attrs.get("budgets")}
        changes = _differences(stored, identity)
        if changes:
            raise StudySpecChanged(f"study {spec.name!r} in {storage_url} was launched with a different spec; "
                                   "use a new name or restore the spec. Changed:\n  " + "\n  ".join(changes))
        study.sampler = make_sampler(spec)
        _fail_stale_trials(study)
        return study
    study = optuna.create_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                                directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        # Experimental since Optuna 3.2 and unchanged since; the dashboard labels the axes with it.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(METRIC_NAMES)
    study.set_user_attr("spec", identity["spec"])
    study.set_user_attr("budgets", budgets)
    return study


def _fail_stale_trials(study: optuna.Study) -> None:
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", "the driver stopped before the trial finished")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.user_attrs.get(BASELINE_ATTR) == GREEDY:
            study.enqueue_trial(trial.params, user_attrs={BASELINE_ATTR: GREEDY})


@dataclass
class Groundwork:
    """What a study computes once before its trials, wherever trials run (a Ray worker under the
    `ray` runner, so that a head node without a GPU does no model work): the base model's mAP and
    latency, and the greedy PBD chain with the parameters that encode each of its prefixes."""

    droppable_blocks: list[str]
    base_map: float | None = None
    base_latency_ms: float | None = None
    chain: list[str] | None = None
    selection_scores: list[dict] | None = None
    baseline_params: list[dict] | None = None


def prepare_runner(spec: StudySpec, show_progress: bool = True) -> TrialRunner:
    """The trial runner for `spec`, training the base model first when it is missing."""
    if not (spec.base_model / "model.safetensors").exists():
        train_and_save(spec, spec.base_model, show_progress=show_progress)
    return TrialRunner(spec)


def groundwork_needed(study: optuna.Study) -> dict[str, bool]:
    return {"base": "base_latency_ms" not in study.user_attrs, "chain": "greedy_chain" not in study.user_attrs}


def compute_groundwork(runner: TrialRunner, needed: dict[str, bool], show_progress: bool = True) -> Groundwork:
    """The base model's figures and the greedy chain (its aligned prefixes land in the prefix
    cache, so the chain's trials align nothing), as far as `needed` asks."""
    work = Groundwork(droppable_blocks=runner.base.droppable_blocks())
    if needed["base"]:
        work.base_latency_ms = runner.latency(runner.base)[0]["median_ms"]
        work.base_map = runner.experiment.evaluate(runner.base, profile=False)["average_mAP"]
    if needed["chain"]:
        work.chain, work.selection_scores = greedy_chain(runner, show_progress)
        work.baseline_params = [runner.encoding.encode(work.chain[:k]) for k in range(1, len(work.chain) + 1)]
    return work


def greedy_chain(runner: TrialRunner, show_progress: bool) -> tuple[list[str], list[dict]]:
    spec, experiment = runner.spec, runner.experiment
    allowed = set(runner.encoding.blocks)
    train_set = experiment.dataset(spec.data.train_subset)
    model, chain, scores = runner.base, [], []
    for step in range(spec.search.max_drops):
        selection = select_block(model, train_set, spec.selection, spec.eval.tious).restricted(allowed - set(chain))
        chain.append(selection.chosen)
        scores.append(selection.scores)
        if show_progress:
            print(f"greedy step {step + 1}/{spec.search.max_drops}: drop {selection.chosen}", flush=True)
        model = drop_step(experiment, runner.base, model, selection.chosen, spec.alignment)
        runner.prefixes.put(chain, model)
    return chain, scores


def record_groundwork(study: optuna.Study, work: Groundwork) -> None:
    """Store what was computed; the greedy chain's schedules are enqueued as trials marked
    `baseline = greedy`, once (its attribute is written last)."""
    if work.base_latency_ms is not None:
        study.set_user_attr("base_latency_ms", work.base_latency_ms)
        study.set_user_attr("base_map", work.base_map)
    if work.chain is not None:
        for params in work.baseline_params:
            study.enqueue_trial(params, user_attrs={BASELINE_ATTR: GREEDY})
        study.set_user_attr("greedy_selection_scores", work.selection_scores)
        study.set_user_attr("greedy_chain", work.chain)


def record_outcome(study: optuna.Study, trial_id: int, outcome: TrialOutcome, artifacts: FileSystemArtifactStore) -> None:
    """User attributes, constraints and the checkpoint (as Optuna artifacts) of a finished trial,
    written before its values are told so they are there whenever the trial shows as complete."""
    storage = study._storage
    for key, value in outcome.attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    storage.set_trial_user_attr(trial_id, MAP, outcome.values[0])
    budgets = study.user_attrs.get("budgets", {})
    if any(v is not None for v in budgets.values()):
        attrs = {**outcome.attrs, MAP: outcome.values[0]}
        storage.set_trial_system_attr(trial_id, CONSTRAINTS_KEY, constraint_values(attrs, budgets))
    if outcome.checkpoint is not None:
        frozen = storage.get_trial(trial_id)
        ids = {name: upload_artifact(artifact_store=artifacts, file_path=str(outcome.checkpoint / name),
                                     study_or_trial=frozen, storage=storage)
               for name in ("model.safetensors", "config.yaml")}
        storage.set_trial_user_attr(trial_id, "checkpoint_artifacts", ids)


def artifact_root(spec: StudySpec) -> Path:
    """Where checkpoints are stored as Optuna artifacts (shared storage on a cluster)."""
    root = (spec.artifact_dir / "artifacts").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def artifact_store(spec: StudySpec) -> FileSystemArtifactStore:
    return FileSystemArtifactStore(str(artifact_root(spec)))


def remaining_trials(study: optuna.Study, n_trials: int | None) -> int | None:
    """How many more trials to run so that `n_trials` have finished (complete or failed) in all."""
    if n_trials is None:
        return None
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))
    return max(0, n_trials - finished)


def run_local(study: optuna.Study, runner: TrialRunner, n_trials: int | None, timeout_s: float | None,
              callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None) -> None:
    """Plain Optuna in this process, one trial at a time."""
    store = artifact_store(runner.spec)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        runner.encoding.suggest(trial)
        try:
            outcome = runner.run(trial.params, f"trial-{trial.number}")
        except TrialFailure as error:
            trial.set_user_attr("fail_reason", str(error))
            raise
        record_outcome(study, trial._trial_id, outcome, store)
        return outcome.values

    study.optimize(objective, n_trials=n_trials, timeout=timeout_s, catch=(TrialFailure,), callbacks=callbacks)
