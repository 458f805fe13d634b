"""One trial: Optuna parameters -> schedule -> aligned model (reusing cached prefixes) -> mAP and
latency (measured once per architecture, input shape and device) -> values and attributes. A
schedule that already finished in this study is not run again: its result is reused."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pruning.progressive import channel_step, drop_step
from pruning.schedule import Schedule
from tadmodels.profile import count_params, model_latency, model_macs, resolve_device
from tadmodels.profile.latency import TimingConfig, device_description
from tadmodels.models import TADModel
from tadmodels.training import Experiment, load_model, save_model

from .cache import DeviceLock, PrefixCache, latency_cache, result_cache
from .encoding import Decoded, ScheduleEncoding
from .spec import StudySpec

MAP, LATENCY = "average_mAP", "latency_ms"


class TrialFailure(Exception):
    """A trial that cannot give a result (NaN loss, out of memory, a bad schedule); the study goes on."""


@dataclass
class TrialOutcome:
    values: tuple[float, float]
    attrs: dict = field(default_factory=dict)
    checkpoint: Path | None = None


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
        self.latencies = latency_cache(root / "cache")
        self.results = result_cache(root / "cache", spec.search_hash(), self.base_fingerprint)
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
        """Run the schedule `params` encode; raises TrialFailure with the reason when it cannot."""
        start = time.perf_counter()
        try:
            decoded = self.encoding.decode(params)
            schedule = self.schedule(decoded)
            earlier = self.results.get((decoded.key(),))
            if earlier is not None:
                return _repeated(earlier, time.perf_counter() - start)
            with self.lock.shared():
                model, reused, steps_run = self._compressed(schedule)
                scores = self.experiment.evaluate(model, profile=False)
                # Counting MACs runs a forward pass: not while another trial times the device.
                macs = model_macs(model, self._positions())
            latency, latency_hit = self.latency(model)
        except (FloatingPointError, torch.OutOfMemoryError, ValueError) as error:
            raise TrialFailure(f"{type(error).__name__}: {error}") from error
        checkpoint = self.checkpoints / trial_label
        save_model(model, self.spec, checkpoint)
        attrs = {
            "schedule": schedule.model_dump(mode="json", exclude={"results"}),
            "drops": schedule.drops, "channel_ratios": schedule.channel_ratios,
            "per_tiou": scores["per_tiou"], "tious": scores["tious"],
            "latency_median_ms": latency["median_ms"], "latency_iqr_ms": latency["iqr_ms"],
            "latency_min_ms": latency["min_ms"], "latency_unstable": latency["unstable"],
            "latency_device": latency["device"], "latency_dtype": latency["dtype"],
            "latency_compile": latency["compile"], "latency_batch": latency["input_shape"][0],
            "macs": macs, "params": count_params(model),
            "wall_time_s": time.perf_counter() - start,
            "cache": {"prefix_reused": reused, "alignment_steps_run": steps_run, "latency_hit": latency_hit,
                      "result_hit": False},
        }
        outcome = TrialOutcome((scores[MAP], latency["median_ms"]), attrs, checkpoint)
        self.results.put((decoded.key(),), {"values": outcome.values, "attrs": attrs, "checkpoint": str(checkpoint)})
        return outcome

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
        (dtype, compile, batch, repeats)."""
        settings = self.spec.latency
        key = (model.compute_signature(), [self._positions()],
               device_description(self.latency_device, settings.threads),
               settings.model_dump(mode="json", include=set(TimingConfig.model_fields)))
        cached = self.latencies.get(key)
        if cached is not None:
            return cached, True
        with self.lock.exclusive():
            record = model_latency(model, self._positions(), settings.device, settings, settings.threads).to_json()
        self.latencies.put(key, record)
        return record, False


def _repeated(earlier: dict, wall_time_s: float) -> TrialOutcome:
    """The outcome of a schedule that already finished: its values, attributes and checkpoint."""
    attrs = {**earlier["attrs"], "wall_time_s": wall_time_s,
             "cache": {"prefix_reused": len(earlier["attrs"]["drops"]), "alignment_steps_run": 0,
                       "latency_hit": True, "result_hit": True}}
    return TrialOutcome(tuple(earlier["values"]), attrs, Path(earlier["checkpoint"]))
