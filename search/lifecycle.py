"""The life of a trial, in one place for every runner:

1. ask (driver): the sampler proposes parameters, or a queued trial (a baseline, a seeded start) is
   popped;
2. claim its schedule (driver): a schedule some trial already finished is a repeat, resolved at
   once without running (see "Repeats"); one that another trial (of this driver or another) is
   running is parked until that trial ends, never run twice; otherwise this trial claims it;
3. run (worker): `attempt` runs one piece of work (`search.objective.Work`) and turns any error into
   a FAIL outcome with its reason;
4. record and tell (driver): attributes, constraints and checkpoint, then COMPLETE with the values,
   FAIL with the reason, or PRUNED with the reason. With multi-fidelity (`search.fidelity`) a trial
   is several pieces of work: the first is timed and may stop before any alignment (PRUNED), each
   lower rung ends RUNNING with the rung's result, and the driver promotes the trial to the next
   rung (queued before new asks, as successive halving prefers promotions) or stops it (PRUNED);
   a baseline trial is never stopped and skips the rungs that align (`search.fidelity`). A
   rung is one piece of work rather than a Ray Tune scheduler's decision, so the local runner and
   Ray share this logic, and the decision is taken where every driver's rung results are visible.

Repeats. Many parameter vectors encode one schedule (random keys); a proposal whose schedule is
finished is told PRUNED at once, naming the trial it repeats (`repeat_of`, its values in
`repeat_values`), so it costs no trial slot (`n_trials` counts COMPLETE trials) and adds no
duplicate to the front or to NSGA-II's population. The empty schedule (nothing dropped or pruned)
is the base model, measured in the groundwork, and is told as its repeat the same way. What each
sampler learns from it is what it learns from any PRUNED trial (`search.samplers`): TPE counts it
among the worse trials, which steers it away from a schedule already known, NSGA-II draws another child, GP sees it as the result it
repeats. A baseline trial that meets a finished schedule completes from it instead (its family
needs the point). A launch whose sampler proposes `max_repeated_proposals` repeats in a row stops
asking: the search space is exhausted, or nearly.

Several drivers may share a study (each `tadprune study launch` is one). A driver beats for each
trial it has asked and not yet told (Optuna's trial heartbeat, `runner.heartbeat_s`) and renews its
claims with the same beat; a RUNNING trial whose heartbeat is older than `runner.grace_s` belongs
to a driver that died, and any driver marks it FAIL (a baseline trial is queued again). A live
driver's trials are never failed for being RUNNING. Each launch samples with its own seed,
`seed + launch number`, both recorded on its trials, so a resumed study explores further and two
drivers do not propose the same parameters, while a replay of the same launches repeats them.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .claims import StudyClaims
from .encoding import Decoded, ScheduleEncoding
from .fidelity import ScoredPoint, StopBeforeAlignment, judge
from .objective import COMPUTE, LATENCY, MAP, Compute, TrialOutcome, TrialRunner, Work
from .pareto import average_map, latency_ms
from .spec import StudySpec
from .study import (BASELINE_ATTR, CONSTRAINTS_KEY, artifact_store, constraint_values, enqueue_missing_baseline,
                    stale_trial_ids)

FAIL_REASON, PRUNE_REASON = "fail_reason", "prune_reason"
LAUNCH_ATTR, SEED_ATTR = "launch", "sampler_seed"
RUNGS, PRUNED_AT, REPEAT_OF, REPEAT_VALUES = "rungs", "pruned_at", "repeat_of", "repeat_values"
BEFORE_ALIGNMENT = "before alignment"
BASE_MODEL_KEY = Decoded(drops=[], channel_ratios={}).key()  # the empty schedule: the base model itself
# Attributes a trial has of its own, which a repeat does not copy from the trial it repeats.
_OWN_ATTRS = {BASELINE_ATTR, LAUNCH_ATTR, SEED_ATTR, MAP, "recovered_from"}
# Optuna warns when a heartbeat storage is used outside `Study.optimize`; here the driver beats itself.
_HEARTBEAT_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


def attempt(runner: TrialRunner, work: Work) -> TrialOutcome:
    """Run one piece of a trial on a worker. An error of any kind (a NaN loss, out of memory, a
    schedule that does not fit, a full disk) becomes a FAIL outcome naming it, with the traceback
    among its attributes: a failing trial never stops a study, and it is not retried, since it
    would fail again. Only a worker that dies (killed, node lost) is retried, by Ray."""
    try:
        return runner.run(work)
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        return TrialOutcome(TrialState.FAIL, reason=f"{type(error).__name__}: {error}{where}",
                            attrs={"traceback": traceback.format_exc(limit=-8)})


@dataclass(eq=False)
class Flight:
    """A trial this driver asked and has not told yet: its schedule, the rung it is to run next,
    the rung results and alignment compute of its earlier pieces."""

    trial: optuna.Trial
    schedule_key: str
    baseline: str | None = None
    rung: int = 0
    rungs: list[dict] = field(default_factory=list)
    compute: Compute = field(default_factory=Compute)

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def params(self) -> dict:
        return self.trial.params

    @property
    def label(self) -> str:
        """Names the trial's checkpoint directory: unique in the study, whichever runner runs it."""
        return f"trial-{self.trial.number}"

    @property
    def claim(self) -> str:
        return "schedule:" + hashlib.sha256(self.schedule_key.encode()).hexdigest()[:24]


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


class StudyDriver:
    """One launch's side of a study: asks trials, routes them (run, repeat or park), hands out their
    pieces of work, records and tells them (promoting multi-fidelity trials rung by rung), beats for
    them, and fails the stale trials of drivers that died. Use it as a context manager: the
    heartbeat runs inside, and on the way out every trial it still holds is failed with the reason
    (a baseline trial among them queued again), so nothing stays RUNNING.

    `park_limit` caps the trials waiting for a schedule another trial runs (the runner's
    concurrency); `say` receives lines for the user (a failed trial, a stale one, a repeat kept).
    """

    asks_per_call = 8  # repeats are told inside `next_trial`; past this many, the runner gets a turn

    def __init__(self, study: optuna.Study, spec: StudySpec, encoding: ScheduleEncoding, claims: StudyClaims,
                 launch: int, seed: int, say: Callable[[str], None], park_limit: int = 1) -> None:
        self.study, self.spec, self.encoding, self.claims = study, spec, encoding, claims
        self.launch, self.seed, self.say, self.park_limit = launch, seed, say, park_limit
        self.storage = study._storage
        self.distributions = encoding.distributions()
        self.artifacts = artifact_store(spec)
        self.flights: dict[int, Flight] = {}  # by trial id: claimed, a piece of it running on a worker
        self.promoted: list[Flight] = []      # claimed, their next rung not started yet
        self.parked: list[Flight] = []        # waiting for their schedule to finish elsewhere
        self.failed_here = 0
        self.repeats_in_a_row = 0
        self.asking_cut_short = False  # `next_trial` stopped at `asks_per_call`, not to wait
        self.deadline = time.monotonic() + spec.timeout_s if spec.timeout_s is not None else None
        self._stop = threading.Event()
        self._beat_thread = threading.Thread(target=self._beat, name="tadprune-heartbeat", daemon=True)
        self._last_stale_check = -math.inf
        self._said_stop = False

    # -- the heartbeat ------------------------------------------------------------------------

    def __enter__(self) -> "StudyDriver":
        self._beat_thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._beat_thread.join()
        reason = (f"the driver stopped before the trial finished ({exc_type.__name__})" if exc_type
                  else "the launch ended (time budget or failure cap) before the trial finished")
        try:
            for flight in self._held():
                self._tell_failed(flight, reason)
            self.flights.clear()
            self.promoted.clear()
            self.parked.clear()
            self.claims.release_all()
            enqueue_missing_baseline(self.study, self.claims, self.encoding)
        except Exception as error:  # the database may be what failed: the heartbeat grace period covers it
            if exc_type is None:
                raise
            self.say(f"could not mark this driver's trials failed ({error}); other drivers will, "
                     f"{self.spec.runner.grace_s} s after its last heartbeat")

    def _held(self) -> list[Flight]:
        return [*self.flights.values(), *self.promoted, *self.parked]

    def _alive(self) -> list[int]:
        return [flight.trial._trial_id for flight in list(self._held())]

    def _beat(self) -> None:
        while not self._stop.wait(self.spec.runner.heartbeat_s):
            try:
                for trial_id in self._alive():
                    self.storage.record_heartbeat(trial_id)
                self.claims.renew()
            except Exception as error:  # a database hiccup: the next beat tries again
                self.say(f"heartbeat not recorded: {type(error).__name__}: {error}")

    def fail_stale_trials(self) -> None:
        """Fail the RUNNING trials whose driver died (`search.study.stale_trial_ids`), with the
        reason, and queue again the baseline trials among them. Optuna's
        `fail_stale_trials` does the same minus the reason, which cannot be added once a trial is
        FAIL. Checked at most once per heartbeat interval."""
        if time.monotonic() - self._last_stale_check < self.spec.runner.heartbeat_s:
            return
        self._last_stale_check = time.monotonic()
        mine, failed = set(self._alive()), 0
        for trial_id in stale_trial_ids(self.storage, self.study._study_id, self.spec.runner.grace_s):
            if trial_id in mine:
                continue
            try:
                self.storage.set_trial_user_attr(trial_id, FAIL_REASON, "its driver stopped: no heartbeat "
                                                 f"for {self.spec.runner.grace_s} s")
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # its driver finished it after all, or another driver failed it first
            failed += 1
        if failed:
            requeued = enqueue_missing_baseline(self.study, self.claims, self.encoding)
            self.say(f"{failed} trial(s) of a driver that stopped marked failed" +
                     (f"; {requeued} baseline trial(s) queued again" if requeued else ""))

    # -- asking -------------------------------------------------------------------------------

    def _counts(self) -> dict[TrialState, int]:
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        return {state: sum(t.state == state for t in trials) for state in (TrialState.COMPLETE, TrialState.RUNNING)}

    def _stopping(self) -> bool:
        """The time is up, too many of this launch's trials failed, or the sampler proposes only
        schedules that ran already."""
        reason = None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            reason = f"the time budget ({self.spec.timeout_s:g} s) is spent"
        elif self.failed_here >= self.spec.max_failed_trials:
            reason = f"{self.failed_here} trials of this launch failed (max_failed_trials)"
        elif self.repeats_in_a_row >= self.spec.max_repeated_proposals:
            reason = (f"the sampler proposed {self.repeats_in_a_row} schedules in a row that had run already "
                      "(max_repeated_proposals): the search space is exhausted, or nearly")
        if reason and not self._said_stop:
            self.say(f"starting no more trials: {reason}")
            self._said_stop = True
        return reason is not None

    def _may_ask(self) -> bool:
        if self._stopping():
            return False
        if self.spec.n_trials is None:
            return True
        counts = self._counts()
        return counts[TrialState.COMPLETE] + counts[TrialState.RUNNING] < self.spec.n_trials

    def finished(self) -> bool:
        """Nothing of this launch is running, promoted or parked, and it may start no more: the
        study has `n_trials` complete trials (from any driver), the time is up, the failure cap or
        the repeat cap reached."""
        if self.flights or self.promoted or self.parked:
            return False
        if self._stopping():
            return True
        return self.spec.n_trials is not None and self._counts()[TrialState.COMPLETE] >= self.spec.n_trials

    def _ask(self) -> Flight:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_HEARTBEAT_WARNING)
            trial = self.study.ask(self.distributions)
        self.storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr(LAUNCH_ATTR, self.launch)
        trial.set_user_attr(SEED_ATTR, self.seed)
        baseline = self.storage.get_trial(trial._trial_id).user_attrs.get(BASELINE_ATTR)
        first_rung = self._baseline_rung(after=-1) if baseline else 0
        return Flight(trial, self.encoding.decode(trial.params).key(), baseline, first_rung)

    def _baseline_rung(self, after: int) -> int:
        """The rung a baseline trial runs after rung `after` (-1: its first). A baseline is
        measured as the paper measures it: fully aligned, never stopped (`search.fidelity`, rule
        3). It is scored at the lower rungs that align nothing, which cost it an evaluation and give
        the search trials there peers whose full result is known, and skips those that align."""
        lower = self.spec.fidelity.rungs if self.spec.fidelity is not None else []
        return next((index for index in range(after + 1, len(lower)) if lower[index].epochs == 0), len(lower))

    def _route(self, flight: Flight) -> Flight | None:
        """Claim the flight's schedule: returns the flight when it is this trial's to run; resolves
        it as a repeat when that schedule finished (or is the base model); parks it while another
        runs it."""
        if flight.baseline is None and flight.schedule_key == BASE_MODEL_KEY:
            self._tell_base_model(flight)
            return None
        claim = self.claims.claim(flight.claim)
        finished_pruned = claim.done and claim.result.get("state") == TrialState.PRUNED.name
        if flight in self.parked and (claim.held or claim.done):
            self.parked.remove(flight)
        if claim.held or (finished_pruned and flight.baseline):  # a baseline's family needs its point
            self.flights[flight.trial._trial_id] = flight
            return flight
        if claim.done:
            self._tell_repeat(flight, claim.result["trial_id"])
        elif flight not in self.parked:
            self.parked.append(flight)
        return None

    def next_trial(self) -> Flight | None:
        """The next trial with work to run on a worker (`work` says what), or None when there is
        none now: the asked trials wait for schedules running elsewhere, or the budget allows no
        more for the moment. Promoted trials go first, then parked ones, then new asks."""
        self.fail_stale_trials()
        if self.promoted:
            flight = self.promoted.pop(0)
            self.flights[flight.trial._trial_id] = flight
            return flight
        for flight in list(self.parked):
            if self._route(flight) is not None:
                return flight
        self.asking_cut_short = False
        for _ in range(self.asks_per_call):
            if len(self.parked) >= self.park_limit or not self._may_ask():
                return None
            flight = self._route(self._ask())
            if flight is not None:
                self.repeats_in_a_row = 0
                return flight
        self.asking_cut_short = True
        return None

    def work(self, flight: Flight) -> Work:
        """The flight's next piece of work; at a multi-fidelity search trial's first rung, with
        what stops it before alignment (`search.fidelity`, rule 1). A baseline trial is never
        stopped (`_baseline_rung`)."""
        stop = None
        if self.spec.fidelity is not None and flight.rung == 0 and flight.baseline is None:
            stop = self._stop_before_alignment()
        return Work(flight.params, flight.label, flight.rung, stop)

    def _stop_before_alignment(self) -> StopBeforeAlignment:
        attrs = self.study.user_attrs
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        front = [ScoredPoint("the base model", attrs["base_map"], attrs["base_latency_ms"])]
        front += [ScoredPoint(f"trial {t.number}", average_map(t), latency_ms(t)) for t in complete]
        return StopBeforeAlignment(attrs["base_map"] + self.spec.fidelity.optimism, tuple(front),
                                   attrs.get("budgets", {}).get("max_latency_ms"))

    # -- telling ------------------------------------------------------------------------------

    def finish(self, flight: Flight, outcome: TrialOutcome) -> None:
        """Record and tell what running the flight's piece of work gave."""
        self.flights.pop(flight.trial._trial_id, None)
        if outcome.state in (TrialState.COMPLETE, TrialState.RUNNING) and not all(
                math.isfinite(v) for v in outcome.values):
            outcome = TrialOutcome.failed(f"not finite: {MAP} {outcome.values[0]}, {LATENCY} {outcome.values[1]}")
        for entry in outcome.attrs.get("cache", {}).get("discarded", []):
            self.say(f"trial {flight.number}: discarded an unreadable cache entry and recomputed it: {entry}")
        if outcome.state == TrialState.FAIL:
            self.failed_here += 1
            self._tell_failed(flight, outcome.reason, outcome.attrs)
            return
        flight.compute = flight.compute.add(Compute(**outcome.attrs.get(COMPUTE, {})))
        attrs = {**outcome.attrs, COMPUTE: flight.compute.to_json()}
        if "rung" in attrs:
            flight.rungs.append(attrs.pop("rung"))
            attrs[RUNGS] = flight.rungs
        if outcome.state == TrialState.PRUNED:
            self._tell_pruned(flight, outcome.reason, {**attrs, PRUNED_AT: BEFORE_ALIGNMENT})
        elif outcome.state == TrialState.RUNNING:
            self._after_rung(flight, attrs)
        else:
            trial_id = self._tell_complete(flight, TrialOutcome.complete(outcome.values, attrs, outcome.checkpoint))
            self.claims.complete(flight.claim, {"trial_id": trial_id, "state": TrialState.COMPLETE.name})

    def _after_rung(self, flight: Flight, attrs: dict) -> None:
        """Record the rung's result where every driver sees it, then promote the trial or stop it.
        Its peers are the trials that reached the same rung, the baselines scored there among them
        (a result at another rung is another fidelity). A baseline always goes on."""
        trial_id = flight.trial._trial_id
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)
        record = flight.rungs[-1]
        if flight.baseline is not None:
            flight.rung = self._baseline_rung(after=record["rung"])
            self.promoted.append(flight)
            return
        rung_name = f"rung {record['rung']} ({record['epochs']} epoch(s), {record['split']} split)"
        result = ScoredPoint(f"trial {flight.number}", record[MAP], record[LATENCY])
        others = [ScoredPoint(f"trial {t.number}", r[MAP], r[LATENCY]) for t in self.study.get_trials(deepcopy=False)
                  for r in t.user_attrs.get(RUNGS, []) if r["rung"] == record["rung"] and t.number != flight.number
                  and REPEAT_OF not in t.user_attrs]  # a baseline completed from a search trial carries its rungs
        verdict = judge(result, others, self.spec.fidelity, rung_name)
        if not verdict.promote:
            self._tell_pruned(flight, verdict.reason, {PRUNED_AT: record["rung"]})
            return
        flight.rung += 1
        self.promoted.append(flight)

    def _tell_complete(self, flight: Flight, outcome: TrialOutcome) -> int:
        """COMPLETE with the outcome; returns the id of the trial that holds it. When another driver
        failed this trial meanwhile (this driver stalled past the grace period), the result is kept
        in a new trial with the same parameters instead of being lost."""
        trial = flight.trial
        try:
            record_outcome(self.study, trial._trial_id, outcome, self.artifacts)
            self.study.tell(trial, outcome.values, state=TrialState.COMPLETE)
        except (UpdateFinishedTrialError, ValueError):
            if self.storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                raise  # not a race with another driver: a real error
            trial = self._recreate(trial)
            record_outcome(self.study, trial._trial_id, outcome, self.artifacts)
            self.study.tell(trial, outcome.values, state=TrialState.COMPLETE)
            self.say(f"trial {flight.number} was failed by another driver while it ran; its result is kept "
                     f"as trial {trial.number}")
        return trial._trial_id

    def _recreate(self, trial: optuna.Trial) -> optuna.Trial:
        frozen = self.storage.get_trial(trial._trial_id)
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params=frozen.params, distributions=frozen.distributions,
            user_attrs={**{k: v for k, v in frozen.user_attrs.items() if k != FAIL_REASON}, "recovered_from": trial.number})
        trial_id = self.storage.create_new_trial(self.study._study_id, template_trial=template)
        self.storage.record_heartbeat(trial_id)
        return optuna.Trial(self.study, trial_id)

    def _tell_failed(self, flight: Flight, reason: str, attrs: dict | None = None) -> None:
        try:
            for key, value in {**(attrs or {}), FAIL_REASON: reason}.items():
                self.storage.set_trial_user_attr(flight.trial._trial_id, key, value)
            self.study.tell(flight.trial, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):
            if self.storage.get_trial(flight.trial._trial_id).state == TrialState.RUNNING:
                raise
            # another driver failed it already (stale): it stays failed
        self.claims.release(flight.claim)
        self.say(f"trial {flight.number} failed: {reason}")

    def _tell_pruned(self, flight: Flight, reason: str, attrs: dict, claim_result: bool = True) -> None:
        """PRUNED with the reason (and, for a stopped trial, the schedule's verdict kept in its
        claim, so that a later proposal of the schedule is a repeat of this one)."""
        trial_id = flight.trial._trial_id
        try:
            for key, value in {**attrs, PRUNE_REASON: reason}.items():
                self.storage.set_trial_user_attr(trial_id, key, value)
            self.study.tell(flight.trial, state=TrialState.PRUNED)
        except (UpdateFinishedTrialError, ValueError):
            if self.storage.get_trial(trial_id).state == TrialState.RUNNING:
                raise
            return  # another driver failed it meanwhile (this one stalled): it stays failed
        if claim_result:
            self.claims.complete(flight.claim, {"trial_id": trial_id, "state": TrialState.PRUNED.name})

    def _tell_repeat(self, flight: Flight, source_id: int) -> None:
        """A schedule that trial `source_id` finished: a search trial is PRUNED as its repeat, at no
        trial slot; a baseline trial takes its values, attributes and checkpoint (module docstring)."""
        source = self.storage.get_trial(source_id)
        if flight.baseline is not None:
            attrs = {k: v for k, v in source.user_attrs.items() if k not in _OWN_ATTRS}
            attrs.update({REPEAT_OF: source.number, "wall_time_s": 0.0, COMPUTE: Compute().to_json(),
                          "cache": {"prefix_reused": len(attrs.get("drops", [])), "alignment_steps_run": 0,
                                    "latency_hit": True, "result_hit": True, "discarded": []}})
            self._tell_complete(flight, TrialOutcome.complete(tuple(source.values), attrs, checkpoint=None))
            return
        known = (f"values mAP {source.values[0]:.4f}, {LATENCY} {source.values[1]:.3f}" if source.values
                 else f"itself {source.state.name}: {source.user_attrs.get(PRUNE_REASON, '')}")
        attrs = {k: source.user_attrs[k] for k in ("drops", "channel_ratios", "compute_signature", LATENCY, "macs")
                 if k in source.user_attrs}
        self._tell_known(flight, source.number, f"repeat of trial {source.number} (the same schedule; {known})",
                         list(source.values) if source.values else None, attrs)

    def _tell_base_model(self, flight: Flight) -> None:
        """The empty schedule (nothing dropped, nothing pruned) proposed by the sampler: the base
        model, measured in the groundwork. Told as its repeat: as a search trial it would take a
        slot and put the base model on the front as something the search found."""
        attrs = self.study.user_attrs
        values = [attrs["base_map"], attrs["base_latency_ms"]]
        self._tell_known(flight, "the base model", f"the base model itself (nothing dropped or pruned; mAP "
                         f"{values[0]:.4f}, {LATENCY} {values[1]:.3f} in the groundwork)", values,
                         {"drops": [], "channel_ratios": {}, LATENCY: values[1]})

    def _tell_known(self, flight: Flight, source: int | str, reason: str, values: list[float] | None,
                    attrs: dict) -> None:
        """A search trial whose schedule's result is known already (`source`: the trial number, or
        the base model): PRUNED as its repeat, at no trial slot, with the values it repeats."""
        self.repeats_in_a_row += 1
        attrs = {REPEAT_OF: source, "schedule_key": flight.schedule_key, COMPUTE: Compute().to_json(), **attrs}
        if values is not None:
            attrs[REPEAT_VALUES] = values
        self._tell_pruned(flight, reason, attrs, claim_result=False)
