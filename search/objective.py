"""One trial on a worker: Optuna parameters -> schedule -> aligned model (reusing cached prefixes)
-> mAP and latency (measured once per architecture, input shape and device) -> values and
attributes. Whether a schedule runs at all (a repeat takes an earlier trial's result) is the
driver's decision (`search.lifecycle`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import TrialState

from pruning.progressive import channel_step, drop_step
from pruning.schedule import Schedule
from tadmodels.profile import count_params, model_latency, model_macs, resolve_device
from tadmodels.profile.latency import TimingConfig, device_description
from tadmodels.models import TADModel
from tadmodels.training import Experiment, load_model, save_model

from .cache import DeviceLock, LatencyCache, PrefixCache
from .encoding import Decoded, ScheduleEncoding
from .spec import StudySpec

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
        self.latencies = LatencyCache(root / "cache")
        self.latency_device = resolve_device(spec.latency.device)
        self.lock = DeviceLock(self.latency_device)
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
        with self.lock.shared():
            model, reused, steps_run = self._compressed(schedule)
            scores = self.experiment.evaluate(model, profile=False)
            # Counting MACs runs a forward pass: not while another trial times the device.
            macs = model_macs(model, self._positions())
        latency, latency_hit = self.latency(model)
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
            "compute_signature": model.compute_signature(),
            "macs": macs, "params": count_params(model), "wall_time_s": time.perf_counter() - start,
            "cache": {"prefix_reused": reused, "alignment_steps_run": steps_run, "latency_hit": latency_hit,
                      "result_hit": False, "discarded": self.prefixes.take_discarded() + self.latencies.take_discarded()},
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

    def _positions(self) -> int:
        return self.spec.latency.positions or self.spec.data.max_seq_len

    def latency(self, model: TADModel) -> tuple[dict, bool]:
        """From the cache, or measured with the device to itself. The key holds everything the
        figure depends on: what the forward computes, the input, the device, and how it is timed
        (dtype, compile, batch, repeats). The cache is read again once the device is ours: a trial
        that waited for another's measurement of the same architecture takes that one. Whatever is
        stored first is what every trial reports."""
        settings = self.spec.latency
        key = (model.compute_signature(), [self._positions()],
               device_description(self.latency_device, settings.threads),
               settings.model_dump(mode="json", include=set(TimingConfig.model_fields)))
        cached = self.latencies.get(key)
        if cached is not None:
            return cached, True
        with self.lock.exclusive():
            cached = self.latencies.get(key)
            if cached is not None:
                return cached, True
            record = model_latency(model, self._positions(), settings.device, settings, settings.threads).to_json()
        stored = self.latencies.put(key, record)
        return stored, stored is not record
