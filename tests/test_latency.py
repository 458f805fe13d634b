"""Latency measurement: adaptive interleaved rounds, per-round speed-ups that cancel load both
variants share, deployment settings (dtype, batch, compile), and the study's latency cache key."""
import os
import socket
import time

import pytest
import torch
from torch import nn

from search.spec import TimingTarget, load_study_spec
from search.timing import LocalTiming, signature_of
from tadmodels.models import ModelConfig, TADModel
from tadmodels.profile import TimingConfig, deploy, first_call, measure_latencies, model_latency
from tadmodels.spec import EvalConfig, load_spec

CPU = torch.device("cpu")


def sleeper(ms: float, load: list[float] | None = None):
    """A variant that takes `ms` (times the current `load[0]`, a stand-in for a competing process)."""
    return lambda: time.sleep(ms * (load[0] if load else 1.0) / 1000)


def test_a_load_that_changes_between_rounds_leaves_the_paired_speedup_intact():
    load, calls = [1.0], []

    def loaded(name: str, ms: float):
        def run():
            calls.append(name)
            load[0] = 1.0 if (len(calls) - 1) // 2 % 2 == 0 else 3.0  # every other round runs 3x slower
            sleeper(ms, load)()
        return run

    config = TimingConfig(warmup=0, min_repeats=8, max_repeats=8, stable_iqr=0.2)
    timings = measure_latencies({"base": loaded("base", 60), "fast": loaded("fast", 30)}, CPU, [1], config)
    # Each variant alone swings by 3x: flagged unstable. Paired per round, the ratio stays 2.
    assert timings["base"].unstable and timings["fast"].unstable
    assert timings["base"].stopped_by == "max_repeats" and timings["base"].repeats == 8
    speedup = timings.speedup("fast")
    assert 1.6 < speedup.median < 2.4
    # Pairing cancels the load both variants share: the ratio's spread is a fraction of each
    # variant's own (about 1 here), whatever sleep jitter a busy machine adds to both.
    alone = timings["fast"].iqr_ms / timings["fast"].median_ms
    assert speedup.iqr / speedup.median < 0.5 * alone
    assert timings.speedup("base").median == 1.0
    # The order rotates from round to round: neither variant always runs first.
    assert calls[0::2] == ["base", "fast"] * 4


def test_repeats_stop_when_stable_and_at_the_caps():
    lenient = TimingConfig(warmup=1, min_repeats=4, stable_iqr=100.0)  # stable as soon as it may stop
    steady = measure_latencies({"a": sleeper(2)}, CPU, [1], lenient)
    assert steady["a"].stopped_by == "stable" and steady["a"].repeats == 4 and not steady["a"].unstable
    record = steady["a"]
    assert record.min_ms <= record.median_ms and record.stop_rule == {
        "min_repeats": 4, "max_repeats": 100, "max_time_s": 30.0, "stable_iqr": 100.0}
    never_stable = {"stable_iqr": 1e-9, "warmup": 0}
    capped = measure_latencies({"a": sleeper(20)}, CPU, [1], TimingConfig(min_repeats=2, max_time_s=0.05, **never_stable))
    assert capped["a"].stopped_by == "max_time_s" and capped["a"].unstable
    samples = capped.samples_ms["a"]
    assert sum(samples) >= 50 and sum(samples[:-1]) < 50 or len(samples) == 2  # stopped by the first round past it
    # The time cap never cuts below the minimum number of rounds.
    slow = measure_latencies({"a": sleeper(20)}, CPU, [1], TimingConfig(min_repeats=3, max_time_s=0.001, **never_stable))
    assert slow["a"].repeats == 3 and slow["a"].stopped_by == "max_time_s"


def test_timing_config_refuses_a_minimum_above_the_maximum():
    with pytest.raises(ValueError, match=r"min_repeats \(9\) exceeds max_repeats \(3\)"):
        TimingConfig(min_repeats=9, max_repeats=3)


def test_model_directories_written_with_fixed_repeats_still_load():
    config = EvalConfig.model_validate({"latency_repeats": 7})
    assert (config.latency.min_repeats, config.latency.max_repeats) == (7, 7)


@pytest.fixture(scope="module")
def feature_model():
    torch.manual_seed(0)
    return TADModel(ModelConfig.model_validate({"input_dim": 16, "detector": {
        "num_classes": 3, "dim": 16, "num_heads": 2, "window": 5, "arch": [2, 2, 2],
        "regression_range": [[0, 4], [4, 8], [8, 10000]]}})).eval()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_times_a_copy_and_leaves_the_callers_model_alone(feature_model, dtype):
    before = {k: v.clone() for k, v in feature_model.state_dict().items()}
    record = model_latency(feature_model, 16, "cpu", TimingConfig(dtype=dtype, batch=3, warmup=1, min_repeats=2,
                                                                  max_repeats=2))
    assert record.dtype == dtype and record.input_shape[0] == 3 and not record.compile
    after = feature_model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())


def test_what_cannot_run_is_refused_naming_the_setting():
    class NoHalfKernel(nn.Module):
        def forward(self, x):
            if x.dtype == torch.float16:
                raise RuntimeError('"addmm" not implemented for \'Half\'')
            return x

    module = deploy(NoHalfKernel(), CPU, TimingConfig(dtype="float16"))
    with pytest.raises(ValueError, match="latency.dtype=float16, latency.compile=False.*not implemented for 'Half'"):
        first_call(lambda: module(torch.ones(2, dtype=torch.float16)), CPU, TimingConfig(dtype="float16"))


def test_compile_runs_the_compiled_copy():
    """torch.compile on CPU (inductor, the C++ compiler): compiled in the first call, then timed."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(8, 8), nn.ReLU()).eval()
    config = TimingConfig(compile=True, warmup=1, min_repeats=2, max_repeats=2)
    compiled = deploy(module, CPU, config)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule) and compiled is not module
    x = torch.randn(2, 8)
    first_call(lambda: compiled(x), CPU, config)
    with torch.inference_mode():
        torch.testing.assert_close(compiled(x), module(x))
    assert measure_latencies({"m": lambda: compiled(x)}, CPU, [2, 8], config)["m"].compile


def test_a_study_caches_latency_per_target_dtype_and_batch(tiny_setting, tmp_path):
    spec = load_study_spec(tiny_setting)
    architecture = load_spec(spec.base_model / "config.yaml").model
    signature = signature_of(architecture)

    def timing(**changes):
        return LocalTiming(spec.latency.model_copy(update=changes), 64, tmp_path)

    first = timing().latency(architecture, signature)
    again = timing().latency(architecture, signature)
    assert not first.cache_hit and again.cache_hit and again.record == first.record
    assert first.record["timed_by"] == f"{socket.gethostname()} pid {os.getpid()}"
    assert (first.record["dtype"], first.record["input_shape"][0], first.record["compile"]) == ("float32", 1, False)
    # Each of these is another figure: another place to time, another dtype, another batch.
    elsewhere = timing(target=TimingTarget(node="10.0.0.7")).latency(architecture, signature)
    half = timing(dtype="bfloat16").latency(architecture, signature)
    batched = timing(batch=2).latency(architecture, signature)
    assert not (elsewhere.cache_hit or half.cache_hit or batched.cache_hit)
    assert half.record["dtype"] == "bfloat16" and batched.record["input_shape"][0] == 2
    assert len(list((tmp_path / "latency").glob("*.json"))) == 4
    # An architecture that does not build the model it claims to be is refused, not timed.
    with pytest.raises(ValueError, match="does not describe the model"):
        timing(batch=3).latency(architecture, "another signature")


def test_a_study_times_each_architecture_beside_its_base_model_on_one_scale(tiny_setting, tmp_path):
    spec = load_study_spec(tiny_setting)
    base_config = spec.base_model / "config.yaml"
    base = load_spec(base_config).model
    dropped = TADModel(base).without_blocks(["backbone.blocks.0"]).architecture
    settings = spec.latency.model_copy(update={"min_repeats": 4, "max_repeats": 6, "warmup": 1})
    timing = LocalTiming(settings, 64, tmp_path, base_config=base_config)

    # Another architecture first: the base model is timed alone (and cached) before the pair.
    paired = timing.latency(dropped, signature_of(dropped))
    alone = timing.latency(base, signature_of(base))
    assert not paired.cache_hit and alone.cache_hit
    assert alone.record["latency_ms"] == alone.record["median_ms"] and "speedup_over_base" not in alone.record
    record = paired.record
    speedup = record["speedup_over_base"]
    assert record["base_latency_ms"] == alone.record["latency_ms"] and record["base_signature"] == signature_of(base)
    assert record["latency_ms"] == pytest.approx(alone.record["latency_ms"] / speedup["median"])
    assert speedup["rounds"] == record["repeats"] and speedup["q1"] <= speedup["median"] <= speedup["q3"]
    assert len(list((tmp_path / "latency").glob("*.json"))) == 2
    # A figure is a ratio to one base model: without it (or with another) it is another entry.
    unscaled = LocalTiming(settings, 64, tmp_path).latency(dropped, signature_of(dropped))
    assert not unscaled.cache_hit and unscaled.record["latency_ms"] == unscaled.record["median_ms"]
