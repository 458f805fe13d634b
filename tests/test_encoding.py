import optuna
import pytest

from search.encoding import ScheduleEncoding
from search.spec import SearchSpace

BLOCKS = [f"backbone.blocks.{i}" for i in range(6)]


def encoding(**space) -> ScheduleEncoding:
    return ScheduleEncoding(SearchSpace(**{"max_drops": 3, **space}), BLOCKS)


def test_the_greedy_chain_round_trips_through_the_parameters():
    enc = encoding(channel_ratios=[0.0, 0.25])
    chain = ["backbone.blocks.4", "backbone.blocks.1", "backbone.blocks.5"]
    for k in range(4):
        decoded = enc.decode(enc.encode(chain[:k]))
        assert decoded.drops == chain[:k]
        assert decoded.channel_ratios == {}


def test_every_sampler_sees_fixed_size_parameters():
    enc = encoding(channel_ratios=[0.0, 0.5], stage_channel_ratios={"backbone.blocks.0": [0.0, 0.25]})
    names = set(enc.distributions())
    assert names == {"drops", *(f"priority:{b}" for b in BLOCKS), "channel_ratio", "channel_ratio:backbone.blocks.0"}
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        decoded = enc.suggest(trial)
        assert len(decoded.drops) == trial.params["drops"] <= 3
        assert len(set(decoded.drops)) == len(decoded.drops)
        study.tell(trial, [0.5, 1.0])


def test_stage_ratios_apply_to_the_remaining_blocks_of_the_stage():
    enc = encoding(channel_ratios=[0.0, 0.5], stage_channel_ratios={"backbone.blocks.0": [0.0, 0.25]})
    params = enc.encode(["backbone.blocks.3"])
    params.update({"channel_ratio": 0.5, "channel_ratio:backbone.blocks.0": 0.25})
    decoded = enc.decode(params)
    assert decoded.channel_ratios == {"*": 0.5, "backbone.blocks.0": 0.25}


def test_search_space_errors_name_the_field():
    with pytest.raises(ValueError, match="not droppable blocks"):
        encoding(blocks=["backbone.blocks.9"])
    with pytest.raises(ValueError, match="at least one must stay"):
        ScheduleEncoding(SearchSpace(max_drops=6), BLOCKS)
    with pytest.raises(ValueError, match="include 0"):
        SearchSpace(max_drops=2, channel_ratios=[0.25, 0.5])
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        SearchSpace(max_drops=2, channel_ratios=[0.0, 1.0])


def test_schedule_key_ignores_how_it_was_encoded():
    enc = encoding()
    a = enc.encode(["backbone.blocks.2", "backbone.blocks.0"])
    b = dict(a)
    b["priority:backbone.blocks.5"] = 0.1  # a block not dropped: same schedule
    assert enc.decode(a).key() == enc.decode(b).key()
