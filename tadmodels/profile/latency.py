"""Wall-clock latency of a forward pass: median and IQR over repeats, with the conditions recorded."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LatencyRecord:
    median_ms: float
    iqr_ms: float
    repeats: int
    warmup: int
    device: str         # e.g. "cpu (4 threads)" or "NVIDIA H100 80GB HBM3"
    dtype: str
    input_shape: list[int]
    torch_version: str

    def to_json(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_description(device: torch.device, threads: int | None = None) -> str:
    """The device model (a CPU: with the thread count, `threads` or torch's current one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads or torch.get_num_threads()} threads)"


def measure_latency(run: Callable[[], object], device: torch.device, input_shape: list[int], dtype: torch.dtype,
                    repeats: int = 20, warmup: int = 5, threads: int | None = None) -> LatencyRecord:
    """Time `run` under inference mode. On CUDA, CUDA events around each call after a synchronise,
    so the time is the GPU's; on CPU, a monotonic clock with a fixed thread count."""
    return measure_latencies({"run": run}, device, input_shape, dtype, repeats, warmup, threads)["run"]


def measure_latencies(runs: Mapping[str, Callable[[], object]], device: torch.device, input_shape: list[int],
                      dtype: torch.dtype, repeats: int = 20, warmup: int = 5,
                      threads: int | None = None) -> dict[str, LatencyRecord]:
    """Time several variants against each other: after every variant's warm-up, each round times
    each variant once, so drift on a shared machine (other jobs, clock changes) reaches all of
    them alike and their ratios stay meaningful."""
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for run in runs.values():
                for _ in range(warmup):
                    run()
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(repeats):
                for name, run in runs.items():
                    times[name].append(_time_once(run, device))
        return {name: _record(samples, warmup, device, input_shape, dtype) for name, samples in times.items()}
    finally:
        torch.set_num_threads(previous_threads)


def _record(times: list[float], warmup: int, device: torch.device, input_shape: list[int],
            dtype: torch.dtype) -> LatencyRecord:
    q1, q3 = np.percentile(times, [25, 75])
    return LatencyRecord(
        median_ms=float(statistics.median(times)), iqr_ms=float(q3 - q1), repeats=len(times), warmup=warmup,
        device=device_description(device), dtype=str(dtype).removeprefix("torch."),
        input_shape=list(input_shape), torch_version=torch.__version__,
    )


def _time_once(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    begin = time.perf_counter()
    run()
    return (time.perf_counter() - begin) * 1000
