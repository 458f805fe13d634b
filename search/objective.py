"""One piece of a trial on a worker: Optuna parameters -> schedule -> its architecture, timed (once
per architecture, input shape and device) before any alignment -> the aligned model at the work's
rung (reusing cached prefixes) -> mAP -> values and attributes. Latency comes from the study's
timing service (`search.timing`). Whether a schedule runs at all (a
repeat takes an earlier trial's result) and whether it climbs to the next rung are the driver's
decisions (`search.lifecycle`, `search.fidelity`)."""
from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from optuna.trial import TrialState

from pruning.alignment import AlignmentConfig
from pruning.channels import prune_channels
from pruning.progressive import channel_step, drop_step
from pruning.schedule import Schedule
from tadmodels.inference import evaluate_model
from tadmodels.models import TADModel
from tadmodels.profile import count_params, model_macs, torch_threads
from tadmodels.training import Experiment, load_model, save_model

from .cache import DeviceLock, PrefixCache
from .encoding import Decoded, ScheduleEncoding
from .fidelity import StopBeforeAlignment, rung_alignment
from .spec import StudySpec
from .timing import TimedLatency, timed_positions, timing_service

MAP, LATENCY = "average_mAP", "latency_ms"
COMPUTE = "alignment_compute"  # the attribute in which every trial records the alignment it ran


@dataclass
class Compute:
    """Alignment work: epochs run (summed over steps), epochs x training videos, seconds."""

    epochs: int = 0
    video_epochs: int = 0
    seconds: float = 0.0

    def add(self, other: "Compute") -> "Compute":
        return Compute(self.epochs + other.epochs, self.video_epochs + other.video_epochs, self.seconds + other.seconds)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TrialOutcome:
    """How a piece of a trial ended: COMPLETE with its values, attributes and checkpoint; FAIL or
    PRUNED with the reason; or RUNNING: a lower rung finished, with the rung's (mAP, latency) as
    values, and the driver decides whether the trial goes on."""

    state: TrialState
    values: tuple[float, float] | None = None
    attrs: dict = field(default_factory=dict)
    checkpoint: Path | None = None
    reason: str | None = None

    @classmethod
    def complete(cls, values: tuple[float, float], attrs: dict, checkpoint: Path | None) -> "TrialOutcome":
        return cls(TrialState.COMPLETE, tuple(values), attrs, checkpoint)

    @classmethod
    def failed(cls, reason: str) -> "TrialOutcome":
        return cls(TrialState.FAIL, reason=reason)


@dataclass(frozen=True)
class Work:
    """What a worker runs for a trial: its parameters, the rung (an index into `TrialRunner.rungs`;
    the last is the full alignment) and, at a multi-fidelity trial's first rung, the test that
    stops it before any alignment."""

    params: dict
    label: str
    rung: int = 0
    stop: StopBeforeAlignment | None = None


@dataclass(frozen=True)
class RungSetting:
    alignment: AlignmentConfig
    split: str  # "train", "heldout" or "test" (`search.spec.Rung`)


class TrialRunner:
    """Everything a worker needs to run trials of one study; built once per worker process."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        base, _ = load_model(spec.base_model)
        self.experiment = Experiment.from_spec(spec, base)
        self.base = base.to(self.experiment.device)
        self.base_fingerprint = base.fingerprint()
        self.encoding = ScheduleEncoding(spec.search, base.droppable_blocks())
        self.train_videos = len(self.experiment.dataset(spec.data.train_subset))
        lower = [RungSetting(rung_alignment(spec.alignment, rung.epochs), rung.split)
                 for rung in (spec.fidelity.rungs if spec.fidelity else [])]
        self.rungs = [*lower, RungSetting(spec.alignment, "test")]
        root = spec.artifact_dir
        # One prefix cache per rung: its key holds the rung's alignment settings, so a trial that
        # goes up a rung starts from the longest prefix aligned at that rung, by it or any trial.
        self.prefix_caches = [PrefixCache(root / "cache", self.base_fingerprint, rung.alignment.model_dump(mode="json"))
                              for rung in self.rungs]
        self.prefixes = self.prefix_caches[-1]
        self.timing = timing_service(spec)
        # Every trial works on the CPU, and on its train device when that is another.
        self.locks = [DeviceLock(device) for device in dict.fromkeys([torch.device("cpu"), self.experiment.device])]
        self.checkpoints = root / "checkpoints"

    def schedule(self, decoded: Decoded) -> Schedule:
        schedule = Schedule(base_fingerprint=self.base_fingerprint, drops=decoded.drops,
                            channel_ratios=decoded.channel_ratios, alignment=self.spec.alignment,
                            selection=self.spec.selection)
        schedule.check_fits(self.base)
        return schedule

    def run(self, work: Work) -> TrialOutcome:
        """Run `work`; any error propagates (`lifecycle.attempt` turns it into a failed outcome with
        the reason). Latency depends on the architecture alone, so it is known (timed, or from the
        cache) before any alignment, and a multi-fidelity trial can stop there."""
        start = time.perf_counter()
        decoded = self.encoding.decode(work.params)
        schedule = self.schedule(decoded)
        architecture = self._architecture(schedule)
        with self.computing():
            # Counting MACs runs a forward pass: not while the device is being timed.
            macs = model_macs(architecture, timed_positions(self.spec))
        timed = self.latency(architecture)
        latency = timed.record
        attrs = {
            "schedule": schedule.model_dump(mode="json", exclude={"results"}), "schedule_key": decoded.key(),
            "drops": schedule.drops, "channel_ratios": schedule.channel_ratios,
            # The figure the study judges by (the base model's over the paired speed-up, see
            # `search.timing`), then this architecture's own times in the session that measured it.
            LATENCY: latency["latency_ms"], "latency_speedup_over_base": latency.get("speedup_over_base"),
            "latency_base_ms": latency.get("base_latency_ms", latency["latency_ms"]),
            "latency_median_ms": latency["median_ms"], "latency_iqr_ms": latency["iqr_ms"],
            "latency_min_ms": latency["min_ms"], "latency_unstable": latency["unstable"],
            "latency_device": latency["device"], "latency_dtype": latency["dtype"],
            "latency_compile": latency["compile"], "latency_batch": latency["input_shape"][0],
            "latency_timed_by": latency.get("timed_by"),
            "compute_signature": architecture.compute_signature(), "macs": macs, "params": count_params(architecture),
        }
        reason = work.stop.reason(latency["latency_ms"]) if work.stop is not None else None
        if reason is not None:
            attrs.update(wall_time_s=time.perf_counter() - start, cache={"latency_hit": timed.cache_hit})
            return TrialOutcome(TrialState.PRUNED, attrs=attrs, reason=reason)
        rung = self.rungs[work.rung]
        with self.computing():
            model, reused, steps_run, compute = self._compressed(schedule, work.rung)
            scores = self._score(model, rung.split)
        record = {"rung": work.rung, "epochs": rung.alignment.epochs, "split": rung.split, MAP: scores[MAP],
                  LATENCY: latency["latency_ms"]}
        attrs.update(rung=record, wall_time_s=time.perf_counter() - start, **{COMPUTE: compute.to_json()},
                     cache={"prefix_reused": reused, "alignment_steps_run": steps_run, "latency_hit": timed.cache_hit,
                            "result_hit": False, "discarded": self._discarded() + timed.discarded})
        if work.rung < len(self.rungs) - 1:
            return TrialOutcome(TrialState.RUNNING, (scores[MAP], latency["latency_ms"]), attrs)
        checkpoint = self.checkpoints / work.label
        save_model(model, self.spec, checkpoint)
        attrs.update(per_tiou=scores["per_tiou"], tious=scores["tious"])
        return TrialOutcome.complete((scores[MAP], latency["latency_ms"]), attrs, checkpoint)

    def _discarded(self) -> list[str]:
        return [entry for cache in self.prefix_caches for entry in cache.take_discarded()]

    def _architecture(self, schedule: Schedule) -> TADModel:
        """The schedule's model before any alignment: what it computes, hence its latency and MACs
        (channel pruning keeps a count of channels that depends on the ratios, not the weights)."""
        model = self.base.without_blocks(schedule.drops) if schedule.drops else self.base
        return prune_channels(model, schedule.channel_ratios) if schedule.channel_ratios else model

    def _compressed(self, schedule: Schedule, rung: int) -> tuple[TADModel, int, int, Compute]:
        """The schedule's model aligned as rung `rung` says, from the longest prefix cached at that
        rung; caches each new prefix (none at a rung without alignment: dropping is free)."""
        alignment, prefixes = self.rungs[rung].alignment, self.prefix_caches[rung]
        reused, model = prefixes.longest(schedule.drops) if alignment.epochs else (0, None)
        model = model.to(self.base.device) if model is not None else self.base
        steps_run, compute = 0, Compute()
        for length in range(reused + 1, len(schedule.drops) + 1):
            model, spent = self.timed(drop_step, model, schedule.drops[length - 1], alignment)
            if alignment.epochs:
                prefixes.put(schedule.drops[:length], model)
            steps_run, compute = steps_run + 1, compute.add(spent)
        if schedule.channel_ratios:
            model, spent = self.timed(channel_step, model, schedule.channel_ratios, alignment)
            steps_run, compute = steps_run + 1, compute.add(spent)
        return model, reused, steps_run, compute

    def timed(self, step, model: TADModel, what, alignment: AlignmentConfig) -> tuple[TADModel, Compute]:
        """`step` (`drop_step` or `channel_step`) on `model`, with the alignment work it cost."""
        start = time.perf_counter()
        result = step(self.experiment, self.base, model, what, alignment)
        epochs = alignment.epochs
        return result, Compute(epochs, epochs * self.train_videos, time.perf_counter() - start if epochs else 0.0)

    def _score(self, model: TADModel, split: str) -> dict:
        data = self.spec.data
        subset = {"train": data.train_subset, "heldout": data.heldout_subset, "test": data.test_subset}[split]
        result = evaluate_model(model, self.experiment.dataset(subset), self.spec.eval.tious)
        return {MAP: result.average_mAP, "per_tiou": list(result.per_tiou), "tious": list(result.tious)}

    @contextmanager
    def computing(self):
        """The devices this trial computes on, held shared: a timing of any of them on this host
        (which holds it exclusively) waits until the trial is done with it, and the other way round.
        Inside, torch uses the spec's `train.threads` (alignment is training): its default, a
        thread per core, made trials side by side spin their threads against each other's."""
        with ExitStack() as stack:
            stack.enter_context(torch_threads(self.spec.train.threads))
            for lock in self.locks:
                stack.enter_context(lock.shared())
            yield

    def latency(self, model: TADModel) -> TimedLatency:
        """The model's latency from the study's timing service (`search.timing`), which is handed
        the architecture only. Not to be called while `computing`: the timing waits for that."""
        return self.timing.latency(model.architecture, model.compute_signature())
