"""MACs, parameters and measured latency."""
from .latency import (LatencyRecord, Speedup, TimingConfig, Timings, deploy, first_call, measure_latencies,
                      resolve_device, torch_threads)
from .macs import count_macs, count_module_macs, count_params
from .model import ModelProfile, block_macs, dummy_input, model_latencies, model_latency, model_macs, profile_model

__all__ = ["LatencyRecord", "ModelProfile", "Speedup", "TimingConfig", "Timings", "block_macs", "count_macs",
           "count_module_macs", "count_params", "deploy",
           "dummy_input", "first_call", "measure_latencies", "model_latencies", "model_latency", "model_macs",
           "profile_model", "resolve_device", "torch_threads"]
