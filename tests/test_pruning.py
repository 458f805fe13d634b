import json
import re

import pytest
import torch
from typer.testing import CliRunner

from pruning.alignment import AlignmentConfig, align
from pruning.schedule import Schedule, ScheduleError, load_schedule
from pruning.selection import Selection, SelectionConfig, candidate_outputs, select_block
from search.cli import app
from search.spec import load_study_spec
from tadmodels.profile import dummy_input
from tadmodels.training import Experiment, load_model


@pytest.fixture(scope="module")
def experiment(tiny_setting):
    spec = load_study_spec(tiny_setting)
    base, _ = load_model(spec.base_model)
    return Experiment.from_spec(spec, base)


def test_shared_prefix_scoring_equals_dropping_each_block(experiment):
    model = experiment.model.eval()
    inputs, mask = dummy_input(model, 32)
    with torch.inference_mode():
        shared = dict(candidate_outputs(model, inputs, mask, shared=True))
        naive = dict(candidate_outputs(model, inputs, mask, shared=False))
    assert list(shared) == model.droppable_blocks()
    for name in shared:
        torch.testing.assert_close(shared[name].cls_logits, naive[name].cls_logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("criterion", ["map", "loss", "mse", "cosine"])
def test_every_criterion_scores_every_block(experiment, criterion):
    dataset = experiment.dataset(experiment.spec.data.train_subset)
    selection = select_block(experiment.model, dataset, SelectionConfig(criterion=criterion), [0.3, 0.5, 0.7])
    assert set(selection.scores) == set(experiment.model.droppable_blocks())
    assert selection.chosen in selection.scores
    best = (max if selection.higher_is_better else min)(selection.scores.values())
    assert selection.scores[selection.chosen] == best
    if criterion == "map":  # the second and third keys, for every candidate, computed in the same pass
        assert list(selection.tie_break) == ["average_mAP", "loss"]
        assert all(set(keys) == set(selection.scores) for keys in selection.tie_break.values())
        tied = [name for name, score in selection.scores.items() if score == best]
        assert selection.tie_break["average_mAP"][selection.chosen] == max(selection.tie_break["average_mAP"][n] for n in tied)
        assert select_block(experiment.model, dataset, SelectionConfig(criterion=criterion), [0.3, 0.5, 0.7]) == selection
    else:
        assert selection.tie_break == {}


def test_ties_are_broken_by_average_map_then_loss_not_by_list_order():
    scores = {"b0": 1.0, "b1": 0.9, "b2": 1.0, "b3": 1.0, "b4": 1.0}
    tie_break = {"average_mAP": {"b0": 0.7, "b1": 0.95, "b2": 0.8, "b3": 0.8, "b4": 0.6},
                 "loss": {"b0": 0.1, "b1": 0.0, "b2": 0.5, "b3": 0.4, "b4": 0.0}}
    selection = Selection("map", scores, higher_is_better=True, tie_break=tie_break)
    # b2 and b3 tie on mAP@0.5 and on average mAP; b3's lower loss decides. b1's better second key
    # does not lift it over a better first key.
    assert selection.ranking() == ["b3", "b2", "b0", "b4", "b1"]
    assert selection.chosen == "b3"
    assert selection.restricted({"b0", "b2", "b4"}).chosen == "b2"
    assert selection.to_json()["chosen"] == "b3" and selection.to_json()["tie_break"] == tie_break
    # Equal in every key: list order, the only order left that is the same on every run.
    assert Selection("mse", {"b0": 0.5, "b1": 0.5}, higher_is_better=False).chosen == "b0"


def test_alignment_trains_lora_norms_and_embedding_then_merges(experiment):
    base = experiment.model
    student = base.without_blocks(["backbone.blocks.1"])
    before = {k: v.clone() for k, v in student.state_dict().items()}
    aligned = align(student, base, experiment, AlignmentConfig(epochs=1, lr=1e-2))
    after = aligned.state_dict()
    assert set(after) == set(before)  # a plain model again: no adapter weights left
    assert not any("lora" in name for name, _ in aligned.named_modules())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "backbone.blocks.0.attn.qkv.weight" in changed  # LoRA merged into the frozen linear
    assert "backbone.patch_embed.proj.weight" in changed and "backbone.blocks.2.norm1.weight" in changed
    assert not any(k.startswith("detector.") for k in changed)  # the detector stays frozen
    assert "backbone.blocks.0.mlp.fc1.weight" not in changed


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_compress_greedy_then_reproduce_from_its_schedule(tiny_setting, tmp_path):
    base_dir = load_study_spec(tiny_setting).base_model
    result = run("compress", "--model", base_dir, "--out", tmp_path / "greedy", "--greedy", "--blocks", "1",
                 "--criterion", "mse", "--align-epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    out = tmp_path / "greedy"
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.yaml", "schedule.json", "metrics.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"average_mAP", "per_tiou", "latency_ms", "macs", "params", "droppable_blocks", "steps", "speedup",
            "baseline_latency"} <= set(metrics)
    step = metrics["steps"][0]
    assert step["action"] == "drop" and step["block"] in load_model(base_dir)[0].droppable_blocks()
    # The base and the result timed side by side: the speed-up is the median of per-round ratios.
    speedup, rounds = metrics["speedup"], metrics["latency"]["repeats"]
    assert speedup["q1"] <= speedup["median"] <= speedup["q3"] and speedup["rounds"] == rounds
    assert metrics["baseline_latency"]["repeats"] == rounds
    assert step["latency_ms"] == metrics["latency_ms"] and step["speedup"] == speedup  # one measurement, not two
    assert step["selection"]["chosen"] == step["block"] and set(step["selection"]["scores"]) == set(
        load_model(base_dir)[0].droppable_blocks())
    assert "speed-up over the base model" in result.output
    schedule = load_schedule(out / "schedule.json")
    assert schedule.drops == [step["block"]]
    again = run("compress", "--model", base_dir, "--out", tmp_path / "again", "--schedule", out / "schedule.json", "--quiet")
    assert again.exit_code == 0, again.output
    model, _ = load_model(tmp_path / "again")
    assert model.architecture.dropped == [step["block"]]
    assert abs(json.loads((tmp_path / "again" / "metrics.json").read_text())["average_mAP"] - metrics["average_mAP"]) < 0.005


@pytest.mark.parametrize("change, message", [
    ({"base_fingerprint": "0" * 16}, "was made for model"),
    ({"drops": ["backbone.blocks.9"]}, "unknown blocks"),
    ({"drops": [f"backbone.blocks.{i}" for i in range(4)]}, "at least one must stay"),
    ({"channel_ratios": {"*": 1.0}}, r"expected a fraction in \[0, 1\)"),
])
def test_a_schedule_that_does_not_fit_is_refused_before_work(tiny_setting, tmp_path, change, message):
    base_dir = load_study_spec(tiny_setting).base_model
    base, _ = load_model(base_dir)
    schedule = {**Schedule(base_fingerprint=base.fingerprint()).model_dump(mode="json"), **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(schedule))
    result = run("compress", "--model", base_dir, "--out", tmp_path / "never", "--schedule", path, "--quiet")
    assert result.exit_code == 2
    assert re.search(message, result.output)
    assert not (tmp_path / "never").exists()


def test_schedule_errors_name_the_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(ScheduleError, match="s.json: not valid JSON"):
        load_schedule(path)
