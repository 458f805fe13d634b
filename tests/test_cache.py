"""The study's on-disk caches and the device lock."""
import threading

import torch

from search.cache import DeviceLock, PrefixCache, latency_cache, result_cache
from tadmodels.models import ModelConfig, TADModel

TINY = {"backbone": {"type": "videomae", "preset": "tiny", "depth": 3, "dim": 32, "num_heads": 2},
        "detector": {"num_classes": 2, "dim": 32, "num_heads": 2, "arch": [2, 2, 2],
                     "regression_range": [[0, 4], [4, 8], [8, 10000]]}}


def test_prefix_cache_returns_the_longest_prefix_for_the_same_settings(tmp_path):
    torch.manual_seed(0)
    base = TADModel(ModelConfig.model_validate(TINY))
    one = base.without_blocks(["backbone.blocks.2"])
    cache = PrefixCache(tmp_path, base.fingerprint(), {"epochs": 1})
    assert cache.longest(["backbone.blocks.2", "backbone.blocks.0"]) == (0, None)
    cache.put(["backbone.blocks.2"], one)
    length, model = cache.longest(["backbone.blocks.2", "backbone.blocks.0"])
    assert length == 1 and model.fingerprint() == one.fingerprint()
    assert model.architecture.dropped == ["backbone.blocks.2"]
    # Another order, other alignment settings or another base model share nothing.
    assert cache.longest(["backbone.blocks.0", "backbone.blocks.2"]) == (0, None)
    assert PrefixCache(tmp_path, base.fingerprint(), {"epochs": 2}).longest(["backbone.blocks.2"]) == (0, None)
    assert PrefixCache(tmp_path, "another", {"epochs": 1}).longest(["backbone.blocks.2"]) == (0, None)


def test_latency_cache_is_keyed_by_architecture_shape_and_device(tmp_path):
    cache = latency_cache(tmp_path)
    cache.put(("arch", [64], "cpu (1 threads)"), {"median_ms": 3.0})
    assert latency_cache(tmp_path).get(("arch", [64], "cpu (1 threads)")) == {"median_ms": 3.0}
    assert cache.get(("arch", [64], "cpu (2 threads)")) is None
    assert cache.get(("arch", [96], "cpu (1 threads)")) is None


def test_result_cache_is_scoped_to_the_spec_and_base_model(tmp_path):
    result_cache(tmp_path, "spec", "base").put(("b.1>b.0|",), {"values": [0.5, 3.0]})
    assert result_cache(tmp_path, "spec", "base").get(("b.1>b.0|",)) == {"values": [0.5, 3.0]}
    assert result_cache(tmp_path, "spec", "base").get(("b.0>b.1|",)) is None
    assert result_cache(tmp_path, "other spec", "base").get(("b.1>b.0|",)) is None
    assert result_cache(tmp_path, "spec", "retrained base").get(("b.1>b.0|",)) is None


def test_timing_waits_for_the_device_and_fine_tuning_shares_it(tmp_path):
    lock = DeviceLock(torch.device("cpu"), tmp_path)
    timed = threading.Event()

    def time_it():
        with DeviceLock(torch.device("cpu"), tmp_path).exclusive():
            timed.set()

    with lock.shared(), DeviceLock(torch.device("cpu"), tmp_path).shared():  # two trials fine-tune at once
        timer = threading.Thread(target=time_it)
        timer.start()
        assert not timed.wait(0.3)  # the measurement waits while they run
    assert timed.wait(5)
    timer.join()
