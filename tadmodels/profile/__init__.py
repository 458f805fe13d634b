"""MACs, parameters and measured latency."""
from .latency import LatencyRecord, measure_latencies, measure_latency, resolve_device
from .macs import count_macs, count_params
from .model import ModelProfile, dummy_input, model_latency, model_macs, profile_model

__all__ = ["LatencyRecord", "ModelProfile", "count_macs", "count_params", "dummy_input", "measure_latencies", "measure_latency", "model_latency", "model_macs",
           "profile_model", "resolve_device"]
