"""Profiling a TAD model on a dummy input of a given grid length: MACs, parameters, latency."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..models import TADModel
from .latency import (TORCH_DTYPES, LatencyRecord, Speedup, TimingConfig, Timings, deploy, first_call,
                      measure_latencies, resolve_device)
from .macs import count_macs, count_module_macs, count_params


@dataclass(frozen=True)
class ModelProfile:
    """A model's MACs, parameters and latency; with a baseline, the baseline's latency from the
    same interleaved rounds and the model's speed-up over it."""

    macs: int
    params: int
    latency: LatencyRecord
    baseline_latency: LatencyRecord | None = None
    speedup: Speedup | None = None

    def to_json(self) -> dict:
        figures = {"macs": self.macs, "params": self.params, "latency": self.latency.to_json()}
        if self.speedup is not None:
            figures |= {"baseline_latency": self.baseline_latency.to_json(), "speedup": self.speedup.to_json()}
        return figures


def dummy_input(model: TADModel, positions: int, frame_size: int | None = None,
                device: torch.device = torch.device("cpu"), batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of `batch` windows of `positions` grid positions (rounded up to what the model accepts)."""
    positions = -(-positions // model.sequence_multiple) * model.sequence_multiple
    mask = torch.ones(batch, positions, dtype=torch.bool, device=device)
    if model.backbone is None:
        return torch.randn(batch, positions, model.architecture.input_dim, device=device), mask
    size = frame_size or model.architecture.backbone.img_size
    frames = torch.randint(0, 256, (batch, positions * model.temporal_stride, size, size, 3), dtype=torch.uint8,
                           device=device)
    return frames, mask


def model_macs(model: TADModel, positions: int) -> int:
    """MACs of one forward over `positions` grid positions (on the model's device; the count is
    the same on any)."""
    inputs, mask = dummy_input(model.eval(), positions, device=model.device)
    return count_macs(lambda: model(inputs, mask))


def block_macs(model: TADModel, positions: int) -> dict[str, int]:
    """MACs each droppable block runs in one forward over `positions` grid positions: what dropping
    it saves (a dropped block leaves nothing that multiplies: an identity, or a max-pool shortcut)."""
    inputs, mask = dummy_input(model.eval(), positions, device=model.device)
    counts = count_module_macs(lambda: model(inputs, mask), model)
    return {name: counts.get(name, 0) for name in model.droppable_blocks()}


def model_latencies(models: Mapping[str, TADModel], positions: int, device: str = "auto",
                    config: TimingConfig = TimingConfig(), threads: int | None = None) -> Timings:
    """Several models timed against each other in interleaved rounds, each on `config.batch`
    dummy windows of `positions` grid positions, deployed on `device` as `config` says (copies:
    the callers' models stay where and as they are). Speed-ups: `Timings.speedup`."""
    target = resolve_device(device)
    runs, shapes = {}, {}
    for name, model in models.items():
        deployed = deploy(model, target, config)
        inputs, mask = dummy_input(model, positions, device=target, batch=config.batch)
        if inputs.is_floating_point():  # frames stay uint8: the model normalises them in its own dtype
            inputs = inputs.to(TORCH_DTYPES[config.dtype])
        runs[name] = lambda deployed=deployed, inputs=inputs, mask=mask: deployed(inputs, mask)
        first_call(runs[name], target, config)
        shapes[name] = list(inputs.shape)
    return measure_latencies(runs, target, shapes, config, threads)


def model_latency(model: TADModel, positions: int, device: str = "auto", config: TimingConfig = TimingConfig(),
                  threads: int | None = None) -> LatencyRecord:
    """Measured latency of one forward over `positions` grid positions on `device`."""
    return model_latencies({"model": model}, positions, device, config, threads)["model"]


def profile_model(model: TADModel, positions: int, device: str = "auto", config: TimingConfig = TimingConfig(),
                  threads: int | None = None, baseline: TADModel | None = None) -> ModelProfile:
    """MACs, parameters and latency; with `baseline`, timed side by side with it (and the speed-up)."""
    figures = (model_macs(model, positions), count_params(model))
    if baseline is None:
        return ModelProfile(*figures, model_latency(model, positions, device, config, threads))
    timings = model_latencies({"baseline": baseline, "model": model}, positions, device, config, threads)
    return ModelProfile(*figures, timings["model"], timings["baseline"], timings.speedup("model", over="baseline"))
