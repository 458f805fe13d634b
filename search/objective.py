"""One trial on a worker: Optuna parameters -> schedule -> aligned model (reusing cached prefixes)
-> mAP and latency (from the study's timing service, `search.timing`) -> values and
attributes. Whether a schedule runs at all (a repeat takes an earlier trial's result) is the
driver's decision (`search.lifecycle`)."""
from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from optuna.trial import TrialState

from pruning.progressive import channel_step, drop_step
from pruning.schedule import Schedule
from tadmodels.profile import count_params, model_macs
from tadmodels.models import TADModel
from tadmodels.training import Experiment, load_model, save_model

from .cache import DeviceLock, PrefixCache
from .encoding import Decoded, ScheduleEncoding
from .spec import StudySpec
from .timing import TimedLatency, timed_positions, timing_service

MAP, LATENCY = "average_mAP", "latency_ms"


@dataclass
class TrialOutcome:
    """How a trial ended: COMPLETE with its values, attributes and checkpoint, or FAIL with the
    reason (PRUNED, for multi-fidelity, is the state still to come)."""

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


class TrialRunner:
    """Everything a worker needs to run trials of one study; built once per worker process."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        base, _ = load_model(spec.base_model)
        self.experiment = Experiment.from_spec(spec, base)
        self.base = base.to(self.experiment.device)
        self.base_fingerprint = base.fingerprint()
        self.encoding = ScheduleEncoding(spec.search, base.droppable_blocks())
        root = spec.artifact_dir
        self.prefixes = PrefixCache(root / "cache", self.base_fingerprint, spec.alignment.model_dump(mode="json"))
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

    def run(self, params: dict, trial_label: str) -> TrialOutcome:
        """Run the schedule `params` encode; any error propagates (`lifecycle.attempt` turns it
        into a failed outcome with the reason)."""
        start = time.perf_counter()
        decoded = self.encoding.decode(params)
        schedule = self.schedule(decoded)
        with self.computing():
            model, reused, steps_run = self._compressed(schedule)
            scores = self.experiment.evaluate(model, profile=False)
            # Counting MACs runs a forward pass: not while the device is being timed.
            macs = model_macs(model, timed_positions(self.spec))
        timed = self.latency(model)
        latency = timed.record
        checkpoint = self.checkpoints / trial_label
        save_model(model, self.spec, checkpoint)
        attrs = {
            "schedule": schedule.model_dump(mode="json", exclude={"results"}), "schedule_key": decoded.key(),
            "drops": schedule.drops, "channel_ratios": schedule.channel_ratios,
            "per_tiou": scores["per_tiou"], "tious": scores["tious"],
            "latency_median_ms": latency["median_ms"], "latency_iqr_ms": latency["iqr_ms"],
            "latency_min_ms": latency["min_ms"], "latency_unstable": latency["unstable"],
            "latency_device": latency["device"], "latency_dtype": latency["dtype"],
            "latency_compile": latency["compile"], "latency_batch": latency["input_shape"][0],
            "latency_timed_by": latency.get("timed_by"),
            "compute_signature": model.compute_signature(),
            "macs": macs, "params": count_params(model), "wall_time_s": time.perf_counter() - start,
            "cache": {"prefix_reused": reused, "alignment_steps_run": steps_run, "latency_hit": timed.cache_hit,
                      "result_hit": False, "discarded": self.prefixes.take_discarded() + timed.discarded},
        }
        return TrialOutcome.complete((scores[MAP], latency["median_ms"]), attrs, checkpoint)

    def _compressed(self, schedule: Schedule) -> tuple[TADModel, int, int]:
        """The schedule's model, starting from the longest cached prefix; caches each new prefix."""
        reused, model = self.prefixes.longest(schedule.drops)
        model = model.to(self.base.device) if model is not None else self.base
        steps_run = 0
        for length in range(reused + 1, len(schedule.drops) + 1):
            model = drop_step(self.experiment, self.base, model, schedule.drops[length - 1], schedule.alignment)
            self.prefixes.put(schedule.drops[:length], model)
            steps_run += 1
        if schedule.channel_ratios:
            model = channel_step(self.experiment, self.base, model, schedule.channel_ratios, schedule.alignment)
            steps_run += 1
        return model, reused, steps_run

    @contextmanager
    def computing(self):
        """The devices this trial computes on, held shared: a timing of any of them on this host
        (which holds it exclusively) waits until the trial is done with it, and the other way round."""
        with ExitStack() as stack:
            for lock in self.locks:
                stack.enter_context(lock.shared())
            yield

    def latency(self, model: TADModel) -> TimedLatency:
        """The model's latency from the study's timing service (`search.timing`), which is handed
        the architecture only. Not to be called while `computing`: the timing waits for that."""
        return self.timing.latency(model.architecture, model.compute_signature())
