"""The study's on-disk caches and the device lock."""
import threading

import torch

from search.cache import DeviceLock, LatencyCache, PrefixCache
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
    cache = LatencyCache(tmp_path)
    cache.put(("arch", [64], "cpu (1 threads)"), {"latency_ms": 3.0})
    assert LatencyCache(tmp_path).get(("arch", [64], "cpu (1 threads)")) == {"latency_ms": 3.0}
    assert cache.get(("arch", [64], "cpu (2 threads)")) is None
    assert cache.get(("arch", [96], "cpu (1 threads)")) is None


def test_the_first_latency_stored_is_the_one_every_trial_reports(tmp_path):
    key = ("arch", [64], "cpu (1 threads)")
    assert LatencyCache(tmp_path).put(key, {"latency_ms": 3.0}) == {"latency_ms": 3.0}
    # A second measurement of the same architecture (another driver, another host) is not stored.
    assert LatencyCache(tmp_path).put(key, {"latency_ms": 4.5}) == {"latency_ms": 3.0}
    assert LatencyCache(tmp_path).get(key) == {"latency_ms": 3.0}


def test_a_garbled_latency_entry_is_named_discarded_and_measured_again(tmp_path):
    key = ("arch", [64], "cpu (1 threads)")
    cache = LatencyCache(tmp_path)
    cache.put(key, {"latency_ms": 3.0})
    entry = next((tmp_path / "latency").glob("*.json"))
    entry.write_bytes(b"\xff\xfe garbage")
    assert cache.get(key) is None and not entry.exists()
    assert cache.take_discarded() == [f"{entry}: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in "
                                      "position 0: invalid start byte"]
    assert cache.take_discarded() == []
    assert cache.put(key, {"latency_ms": 3.5}) == {"latency_ms": 3.5}  # the new measurement takes its place


def test_a_truncated_prefix_checkpoint_is_named_discarded_and_recomputed(tmp_path):
    torch.manual_seed(0)
    base = TADModel(ModelConfig.model_validate(TINY))
    cache = PrefixCache(tmp_path, base.fingerprint(), {"epochs": 1})
    cache.put(["backbone.blocks.2"], base.without_blocks(["backbone.blocks.2"]))
    weights = next((tmp_path / "prefixes").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # a disk that filled up, a copy cut short
    assert cache.longest(["backbone.blocks.2", "backbone.blocks.0"]) == (0, None)
    assert not weights.exists() and not weights.with_suffix(".yaml").exists()
    [discarded] = cache.take_discarded()
    assert discarded.startswith(f"{weights}: SafetensorError")
    cache.put(["backbone.blocks.2"], base.without_blocks(["backbone.blocks.2"]))
    assert cache.longest(["backbone.blocks.2"])[0] == 1


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
