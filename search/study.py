"""The Optuna study behind a search: its storage, created or resumed under a spec, its groundwork
(the base model's figures and the greedy Progressive Block Drop chain, computed once per study),
the baseline families' trials and the seeded start."""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import sqlalchemy
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import RDBStorage
# The heartbeat table, to find trials that never beat (`stale_trial_ids`); private, hence the pinned range.
from optuna.storages._rdb.models import TrialHeartbeatModel
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

from pruning.progressive import drop_step
from pruning.selection import select_block
from tadmodels.models import TADModel
from tadmodels.profile import block_macs
from tadmodels.spec import load_spec
from tadmodels.training import Experiment, train_and_save

from .claims import StudyClaims, creating_tables
from .encoding import ScheduleEncoding
from .objective import LATENCY, MAP, Compute, TrialRunner
from .seeding import seeded_params
from .spec import StudySpec
from .timing import timed_positions

METRIC_NAMES = [MAP, LATENCY]
BASELINE_ATTR, GREEDY, GREEDY_CHANNELS = "baseline", "greedy", "greedy+channels"
FAMILIES = (GREEDY, GREEDY_CHANNELS)
SEEDED_ATTR = "seeded_start"
CONSTRAINTS_KEY = "constraints"  # the system attribute optuna-dashboard 0.21 and Optuna 5 samplers read


class StudySpecChanged(ValueError):
    """A launch under an existing study name with a spec that defines different trials."""


class StorageError(ValueError):
    """A storage URL that cannot be used; the message names it (password hidden) and what is wrong."""


def storage_for(url: str, create: bool = True, heartbeat_s: int | None = None,
                grace_s: int | None = None) -> RDBStorage:
    """The RDB storage at `url`, with URL mistakes named instead of raised by SQLAlchemy.

    `create=False` is for commands that only read: a SQLite file that does not exist is an error
    there, not a new empty database. `heartbeat_s`/`grace_s` enable Optuna's trial heartbeats
    (a driver's storage; see `search.lifecycle`). SQLite waits for a busy database instead of
    failing at once, since several drivers and their heartbeat threads write to one file.
    """
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage {url!r}: not a SQLAlchemy URL; expected sqlite:///path/to/study.db "
                           "or postgresql+psycopg2://user:password@host/database") from None
    shown = shown_url(url)
    if parsed.drivername.split("+")[0] == "postgres":
        raise StorageError(f"storage {shown}: SQLAlchemy names PostgreSQL 'postgresql', not 'postgres'; "
                           "write postgresql+psycopg2://user:password@host/database")
    engine_kwargs = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StorageError(f"storage {shown}: a study needs a database file, e.g. sqlite:///studies/demo.db")
        path = Path(parsed.database)
        if not create and not path.is_file():
            raise StorageError(f"storage {shown}: no database file {path.resolve()}")
        if not path.parent.is_dir():
            raise StorageError(f"storage {shown}: directory {path.parent.resolve()} does not exist")
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as error:
        raise StorageError(f"storage {shown}: its database driver is not installed ({error}); for PostgreSQL "
                           "install tadprune's postgres extra: pip install -e '.[postgres]'") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return creating_tables(lambda: RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                                      grace_period=grace_s))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StorageError(f"storage {shown}: cannot open it: {detail}") from None


def shown_url(url: str) -> str:
    """`url` as messages show it: without its password."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def stale_trial_ids(storage: optuna.storages.BaseStorage, study_id: int, grace_s: float) -> list[int]:
    """The RUNNING trials whose driver died: Optuna's stale trials (last heartbeat older than the
    grace period), and those that never got a heartbeat and started longer ago than the grace
    period. Optuna skips the latter, yet a driver killed between asking a trial and its first beat
    leaves one, and it would hold a trial slot for ever (a resumed launch waits on it)."""
    stale = set(storage._get_stale_trial_ids(study_id))
    started_before = datetime.now() - timedelta(seconds=grace_s)  # Optuna stamps trials in local time
    old = {t._trial_id for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
           if t.datetime_start is not None and t.datetime_start < started_before}
    if old - stale:
        backend = getattr(storage, "_backend", storage)  # Optuna's cache in front of the RDB storage
        with _create_scoped_session(backend.scoped_session) as session:
            beating = {row.trial_id for row in session.query(TrialHeartbeatModel.trial_id)
                       .filter(TrialHeartbeatModel.trial_id.in_(old - stale))}
        stale |= old - beating
    return sorted(stale)


def constraint_values(user_attrs: dict, budgets: dict) -> list[float]:
    """Optuna's convention: feasible when every value is <= 0."""
    values = []
    if budgets.get("max_latency_ms") is not None:
        values.append(user_attrs[LATENCY] - budgets["max_latency_ms"])
    if budgets.get("min_map") is not None:
        values.append(budgets["min_map"] - user_attrs[MAP])
    return values


def check_against_model_and_data(spec: StudySpec) -> list[str]:
    """What the spec can only be checked against: the model's droppable blocks (the base model's
    own config when it exists, else the spec's model, built on the meta device, so no weights) and
    the dataset's labels. Run before anything is written, so a bad value leaves nothing behind.
    Returns the droppable blocks."""
    config_path = spec.base_model / "config.yaml"
    model_config = load_spec(config_path).model if config_path.exists() else spec.model
    with torch.device("meta"):
        model = TADModel(model_config)
    ScheduleEncoding(spec.search, model.droppable_blocks())
    if spec.data.annotations_path.exists() or spec.data.synthetic is None:
        Experiment.from_spec(spec, model)  # reads the annotations: missing files, class count
    return model.droppable_blocks()


def _differences(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new))
                for d in _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)]
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def open_study(spec: StudySpec, storage: RDBStorage, budgets: dict) -> optuna.Study:
    """Create the study, or resume it when one of that name exists with the same spec. Two drivers
    may create it at once: one creates, the other finds it (and waits for its spec to be stored)."""
    identity = {"spec": spec.search_fields(), "budgets": budgets}
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, directions=["maximize", "minimize"])
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=spec.name, storage=storage)
        stored = _stored_identity(study)
        changes = _differences(stored, identity)
        if changes:
            raise StudySpecChanged(f"study {spec.name!r} in {shown_url(storage.url)} was launched with a different spec; "
                                   "use a new name or restore the spec. Changed:\n  " + "\n  ".join(changes)) from None
        return study
    with warnings.catch_warnings():
        # Experimental since Optuna 3.2 and unchanged since; the dashboard labels the axes with it.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(METRIC_NAMES)
    study.set_user_attr("budgets", budgets)
    study.set_user_attr("spec", identity["spec"])  # last: its presence marks a study fully created
    return study


def _stored_identity(study: optuna.Study, wait_s: float = 30) -> dict:
    deadline = time.monotonic() + wait_s
    while "spec" not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)  # another driver is creating the study right now
    attrs = study.user_attrs
    return {"spec": attrs.get("spec"), "budgets": attrs.get("budgets")}


@dataclass
class Groundwork:
    """What a study computes once before its trials, wherever trials run (a Ray worker under the
    `ray` runner, so that a head node without a GPU does no model work): the base model's mAP and
    latency, and the greedy PBD chain with the MACs of each block it may drop (the seeded start
    weighs both)."""

    base_map: float | None = None
    base_latency_ms: float | None = None
    chain: list[str] | None = None
    selection_scores: list[dict] | None = None
    chain_compute: Compute | None = None  # the chain's alignment: what the greedy baseline costs
    block_macs: dict[str, int] | None = None


def prepare_runner(spec: StudySpec, show_progress: bool = True) -> TrialRunner:
    """The trial runner for `spec`, training the base model first when it is missing."""
    if not (spec.base_model / "model.safetensors").exists():
        train_and_save(spec, spec.base_model, show_progress=show_progress)
    return TrialRunner(spec)


def groundwork_needed(study: optuna.Study) -> dict[str, bool]:
    attrs = study.user_attrs
    return {"base": "base_latency_ms" not in attrs, "chain": "greedy_chain" not in attrs}


def groundwork_steps(runner: TrialRunner, needed: dict[str, bool]) -> Iterator[str | Groundwork]:
    """The base model's figures and the greedy chain (its aligned prefixes land in the prefix
    cache, so the chain's trials align nothing), as far as `needed` asks. A generator: it yields a
    line of progress before and after each long step, then the `Groundwork`, so that a driver can
    show progress made on a Ray worker as it happens."""
    work = Groundwork()
    if needed["base"]:
        yield "base model: timing it and computing its mAP"
        work.base_latency_ms = runner.latency(runner.base).record["latency_ms"]
        with runner.computing():
            work.base_map = runner.experiment.evaluate(runner.base, profile=False)["average_mAP"]
        yield f"base model: mAP {100 * work.base_map:.2f}, latency {work.base_latency_ms:.2f} ms"
    if needed["chain"]:
        work.chain, work.selection_scores = [], []
        # Computing as a trial does: no timing of these devices on this host meanwhile.
        with runner.computing():
            work.block_macs = block_macs(runner.base, timed_positions(runner.spec))
            work.chain_compute = yield from _greedy_chain(runner, work.chain, work.selection_scores)
    yield work


def _greedy_chain(runner: TrialRunner, chain: list[str], scores: list[dict]) -> Iterator[str]:
    """Yields progress; returns the alignment compute the chain spent."""
    spec, experiment = runner.spec, runner.experiment
    allowed = set(runner.encoding.blocks)
    train_set = experiment.dataset(spec.data.train_subset)
    model, steps, compute = runner.base, spec.search.max_drops, Compute()
    for step in range(1, steps + 1):
        yield f"greedy step {step}/{steps}: scoring {len(allowed - set(chain))} blocks ({spec.selection.criterion})"
        selection = select_block(model, train_set, spec.selection, spec.eval.tious).restricted(allowed - set(chain))
        chain.append(selection.chosen)
        scores.append(selection.to_json())
        yield f"greedy step {step}/{steps}: drop {selection.chosen}, aligning"
        model, spent = runner.timed(drop_step, model, selection.chosen, spec.alignment)
        compute = compute.add(spent)
        runner.prefixes.put(chain, model)
    return compute


def run_groundwork(steps: Iterator[str | Groundwork], say: Callable[[str], None]) -> Groundwork:
    """Drive `groundwork_steps` (here or as they arrive from a worker), passing progress to `say`."""
    for item in steps:
        if isinstance(item, Groundwork):
            return item
        say(item)
    raise RuntimeError("the groundwork ended without a result")


def ensure_groundwork(study: optuna.Study, claims: StudyClaims, compute: Callable[[dict], Groundwork],
                      say: Callable[[str], None], poll_s: float = 2.0) -> None:
    """Compute what `groundwork_needed` says, once per study: the driver that claims `groundwork`
    computes and records it, the others wait for it (and take over if that driver dies, when its
    claim's lease expires)."""
    waiting_for = None
    while any((needed := groundwork_needed(study)).values()):
        claim = claims.claim("groundwork")
        if not claim.held:
            if claim.owner != waiting_for:
                say(f"waiting for the groundwork (base model figures, greedy chain) that {claim.owner} computes")
                waiting_for = claim.owner
            time.sleep(poll_s)
            continue
        try:
            if any((needed := groundwork_needed(study)).values()):  # the previous holder may have finished
                record_groundwork(study, compute(needed))
        finally:
            claims.release("groundwork")


def record_groundwork(study: optuna.Study, work: Groundwork) -> None:
    """Store what was computed; `greedy_chain` is written last, as it marks the chain done."""
    if work.base_latency_ms is not None:
        study.set_user_attr("base_latency_ms", work.base_latency_ms)
        study.set_user_attr("base_map", work.base_map)
    if work.chain is not None:
        study.set_user_attr("greedy_selection_scores", work.selection_scores)
        study.set_user_attr("greedy_alignment_compute", work.chain_compute.to_json())
        study.set_user_attr("block_macs", work.block_macs)
        study.set_user_attr("greedy_chain", work.chain)


def baseline_schedules(chain: list[str], encoding: ScheduleEncoding) -> list[tuple[str, dict]]:
    """The baseline families as (family, parameters): `greedy`, every prefix of the greedy chain
    (1 to max_drops drops); `greedy+channels`, the paper's combination, every prefix (the empty one
    too: channel pruning alone) followed by each non-zero channel ratio of the search space. They
    share the chain's aligned prefixes, so the second family aligns one channel step per trial."""
    ratios = [r for r in encoding.space.channel_ratios if r > 0]
    return ([(GREEDY, encoding.encode(chain, k)) for k in range(1, len(chain) + 1)]
            + [(GREEDY_CHANNELS, encoding.encode(chain, k, r)) for k in range(len(chain) + 1) for r in ratios])


def _params(trial: optuna.trial.FrozenTrial) -> dict:
    """A trial's parameters (a waiting trial has them as `fixed_params` only)."""
    return trial.params or trial.system_attrs.get("fixed_params", {})


def enqueue_missing_baseline(study: optuna.Study, claims: StudyClaims, encoding: ScheduleEncoding) -> int:
    """Enqueue, as trials marked `baseline = <family>`, each baseline schedule (`baseline_schedules`)
    that no complete, running or waiting baseline trial covers: all of them after the groundwork, one
    again after its trial failed or its driver died. One driver at a time (a claim), so a schedule is
    never queued twice. Returns how many were enqueued."""
    chain = study.user_attrs.get("greedy_chain")
    if not chain or not claims.claim("baseline").held:
        return 0
    try:
        covered = {encoding.decode(_params(t)).key() for t in study.get_trials(deepcopy=False)
                   if t.user_attrs.get(BASELINE_ATTR) in FAMILIES
                   and t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
        missing = [(family, params) for family, params in baseline_schedules(chain, encoding)
                   if encoding.decode(params).key() not in covered]
        for family, params in missing:
            study.enqueue_trial(params, user_attrs={BASELINE_ATTR: family})
        return len(missing)
    finally:
        claims.release("baseline")


def enqueue_seeded_start(study: optuna.Study, claims: StudyClaims, encoding: ScheduleEncoding, spec: StudySpec) -> int:
    """Once per study, after the baselines: `spec.seeded_start.trials` schedules drawn around the
    greedy chain (`search.seeding`), marked `seeded_start`. Returns how many were enqueued."""
    settings = spec.seeded_start
    if settings is None or SEEDED_ATTR in study.user_attrs or "greedy_chain" not in study.user_attrs:
        return 0
    if not claims.claim("baseline").held:
        return 0
    try:
        if SEEDED_ATTR in study.user_attrs:  # another driver enqueued them meanwhile
            return 0
        params = seeded_params(study.user_attrs["greedy_selection_scores"], encoding, settings,
                               study.user_attrs["block_macs"], spec.seed)
        for vector in params:
            study.enqueue_trial(vector, user_attrs={SEEDED_ATTR: True})
        study.set_user_attr(SEEDED_ATTR, len(params))
        return len(params)
    finally:
        claims.release("baseline")


def artifact_root(spec: StudySpec) -> Path:
    """Where checkpoints are stored as Optuna artifacts (shared storage on a cluster)."""
    root = (spec.artifact_dir / "artifacts").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def artifact_store(spec: StudySpec) -> FileSystemArtifactStore:
    return FileSystemArtifactStore(str(artifact_root(spec)))
