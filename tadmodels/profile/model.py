"""Profiling a TAD model on a dummy input of a given grid length: MACs, parameters, latency."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import TADModel
from .latency import LatencyRecord, measure_latency, resolve_device
from .macs import count_macs, count_params


@dataclass(frozen=True)
class ModelProfile:
    macs: int
    params: int
    latency: LatencyRecord

    def to_json(self) -> dict:
        return {"macs": self.macs, "params": self.params, "latency": self.latency.to_json()}


def dummy_input(model: TADModel, positions: int, frame_size: int | None = None,
                device: torch.device = torch.device("cpu")) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of one: `positions` grid positions (rounded up to what the model accepts)."""
    positions = -(-positions // model.sequence_multiple) * model.sequence_multiple
    mask = torch.ones(1, positions, dtype=torch.bool, device=device)
    if model.backbone is None:
        return torch.randn(1, positions, model.architecture.input_dim, device=device), mask
    size = frame_size or model.architecture.backbone.img_size
    frames = torch.randint(0, 256, (1, positions * model.temporal_stride, size, size, 3), dtype=torch.uint8, device=device)
    return frames, mask


def model_macs(model: TADModel, positions: int) -> int:
    """MACs of one forward over `positions` grid positions (on the model's device; the count is
    the same on any)."""
    inputs, mask = dummy_input(model.eval(), positions, device=model.device)
    return count_macs(lambda: model(inputs, mask))


def model_latency(model: TADModel, positions: int, device: str = "auto", repeats: int = 20, warmup: int = 5,
                  threads: int | None = None) -> LatencyRecord:
    """Measured latency of one forward over `positions` grid positions on `device`."""
    target = resolve_device(device)
    home = model.device
    model = model.eval().to(target)
    inputs, mask = dummy_input(model, positions, device=target)
    try:
        return measure_latency(lambda: model(inputs, mask), target, list(inputs.shape), torch.float32,
                               repeats=repeats, warmup=warmup, threads=threads)
    finally:
        model.to(home)  # back where the caller keeps it (a GPU worker aligns on the GPU)


def profile_model(model: TADModel, positions: int, device: str = "auto", repeats: int = 20, warmup: int = 5,
                  threads: int | None = None) -> ModelProfile:
    return ModelProfile(model_macs(model, positions), count_params(model),
                        model_latency(model, positions, device, repeats, warmup, threads))
