"""`tadprune train` and `tadprune profile` on the tiny setting: the files and keys they promise,
repeatability, and the errors bad specs get."""
import json
from pathlib import Path

import torch
import yaml
from typer.testing import CliRunner

from search.cli import app
from tadmodels.training import load_model


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train_spec(tiny_setting, tmp_path, **train):
    """The tiny spec's experiment sections with `train` changes, as a file."""
    raw = yaml.safe_load(tiny_setting.read_text())
    sections = {key: raw[key] for key in ("name", "data", "model", "train", "eval")}
    sections["train"].update(train)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(sections))
    return path


def test_train_writes_the_model_directory_and_is_repeatable(tiny_setting, tmp_path):
    spec = train_spec(tiny_setting, tmp_path)
    for disturbance, out in enumerate(("a", "b")):
        torch.manual_seed(disturbance)  # what ran before in the process must not matter
        result = run("train", spec, "--out", tmp_path / out, "--quiet")
        assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert {"average_mAP", "per_tiou", "latency_ms", "macs", "params", "droppable_blocks"} <= set(metrics)
    assert 0 <= metrics["average_mAP"] <= 1 and len(metrics["per_tiou"]) == 5
    first, _ = load_model(tmp_path / "a")
    second, _ = load_model(tmp_path / "b")
    assert first.fingerprint() == second.fingerprint()  # same seed, same weights
    assert metrics["droppable_blocks"] == first.droppable_blocks()


def test_a_different_seed_trains_different_weights(tiny_setting, tmp_path):
    base, _ = load_model(yaml.safe_load(tiny_setting.read_text())["base_model"])
    result = run("train", train_spec(tiny_setting, tmp_path, seed=1), "--out", tmp_path / "seed1", "--quiet")
    assert result.exit_code == 0, result.output
    assert load_model(tmp_path / "seed1")[0].fingerprint() != base.fingerprint()


def test_a_bad_spec_names_the_field_and_exits_2(tiny_setting, tmp_path):
    spec = train_spec(tiny_setting, tmp_path, lr=-1, warmup_epoch=2)
    result = run("train", spec, "--out", tmp_path / "never")
    assert result.exit_code == 2
    assert "train.lr" in result.output and "train.warmup_epoch" in result.output
    assert not (tmp_path / "never").exists()


FAST_TIMING = ("--min-repeats", "2", "--max-repeats", "3", "--warmup", "1", "--threads", "1")


def test_profile_with_blocks_dropped_costs_less(tiny_setting):
    base_dir = yaml.safe_load(tiny_setting.read_text())["base_model"]
    full = run("profile", base_dir, "--json", *FAST_TIMING)
    dropped = run("profile", base_dir, "--json", *FAST_TIMING, "--drop", "backbone.blocks.1")
    assert full.exit_code == 0 and dropped.exit_code == 0, full.output + dropped.output
    full, dropped = (json.loads(r.output.strip().splitlines()[-1]) for r in (full, dropped))
    assert dropped["macs"] < full["macs"] and dropped["params"] < full["params"]
    assert {"median_ms", "min_ms", "iqr_ms", "repeats", "unstable", "stopped_by", "stop_rule", "device", "dtype",
            "compile", "input_shape", "load_avg_1m", "torch_version"} <= set(full["latency"])
    assert full["latency"]["min_ms"] <= full["latency"]["median_ms"] and 2 <= full["latency"]["repeats"] <= 3


def test_profile_compare_times_every_model_in_the_same_rounds(tiny_setting, tmp_path):
    base_dir = yaml.safe_load(tiny_setting.read_text())["base_model"]
    result = run("profile", base_dir, "--compare", "--drop", "backbone.blocks.1",
                 "--drop", "backbone.blocks.1,backbone.blocks.2", "--json", "--batch", "2", *FAST_TIMING)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output.strip().splitlines()[-1])["models"]
    assert [row["name"] for row in rows] == [str(base_dir), f"{base_dir} -backbone.blocks.1",
                                             f"{base_dir} -backbone.blocks.1,backbone.blocks.2"]
    assert len({row["latency"]["repeats"] for row in rows}) == 1  # one set of rounds for all
    assert all(row["latency"]["input_shape"][0] == 2 for row in rows)
    assert rows[0]["speedup"]["median"] == 1.0 and rows[0]["speedup"]["iqr"] == 0.0  # the reference over itself
    assert rows[2]["macs"] < rows[1]["macs"] < rows[0]["macs"]
    table = run("profile", base_dir, "--compare", "--drop", "backbone.blocks.1", *FAST_TIMING)
    assert table.exit_code == 0 and "speed-up" in table.output and "rounds" in table.output, table.output


def test_profile_needs_compare_for_several_models_and_a_second_model_to_compare(tiny_setting):
    base_dir = yaml.safe_load(tiny_setting.read_text())["base_model"]
    several = run("profile", base_dir, "--drop", "backbone.blocks.1", "--drop", "backbone.blocks.2")
    alone = run("profile", base_dir, "--compare")
    assert several.exit_code == 2 and "--compare" in several.output
    assert alone.exit_code == 2 and "second model" in alone.output


def test_profile_refuses_bad_timing_settings_by_name(tiny_setting):
    base_dir = yaml.safe_load(tiny_setting.read_text())["base_model"]
    result = run("profile", base_dir, "--dtype", "float8", "--min-repeats", "9", "--max-repeats", "3")
    assert result.exit_code == 2
    assert "dtype" in result.output and "float16" in result.output


def test_profile_refuses_an_unknown_block(tiny_setting):
    base_dir = yaml.safe_load(tiny_setting.read_text())["base_model"]
    result = run("profile", base_dir, "--drop", "backbone.blocks.99")
    assert result.exit_code == 2 and "backbone.blocks.99" in result.output


def test_a_model_directory_without_weights_is_named(tiny_setting, tmp_path):
    base_dir = yaml.safe_load(tiny_setting.read_text())["base_model"]
    (tmp_path / "config.yaml").write_text((Path(base_dir) / "config.yaml").read_text())
    result = run("profile", tmp_path)
    assert result.exit_code == 2 and "model.safetensors" in result.output
