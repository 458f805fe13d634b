"""Studies end to end on the tiny setting: real Optuna RDB storage, a real (small) Ray Tune run."""
import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from pipeline_fixtures import spec_copy
from search.cli import app
from search.encoding import DROPS, PRIORITY
from search.launch import launch
from search.pareto import base_latency_ms
from search.spec import load_study_spec


def baseline_trials(study: optuna.Study, family: str = "greedy") -> list:
    return [t for t in study.get_trials() if t.user_attrs.get("baseline") == family]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_local_study_records_baseline_families_and_resumes(tiny_setting, tmp_path):
    # 2 greedy prefixes + 3 of the chain followed by 50% channels (0, 1 and 2 drops) + 2 search trials.
    path = spec_copy(tiny_setting, tmp_path, n_trials=7)
    result = run("study", "launch", path, "--quiet", "--max-latency-ms", "1e6")
    assert result.exit_code == 0, result.output
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 7 and len(study.directions) == 2
    assert study.metric_names == ["average_mAP", "latency_ms"]
    chain = study.user_attrs["greedy_chain"]
    assert [t.user_attrs["drops"] for t in baseline_trials(study)] == [chain[:1], chain[:2]]
    combination = baseline_trials(study, "greedy+channels")
    assert [(t.user_attrs["drops"], t.user_attrs["channel_ratios"]) for t in combination] == [
        ([], {"*": 0.5}), (chain[:1], {"*": 0.5}), (chain[:2], {"*": 0.5})]
    attrs = complete[-1].user_attrs
    for key in ("schedule", "per_tiou", "latency_median_ms", "latency_iqr_ms", "macs", "params", "latency_device",
                "wall_time_s", "cache", "checkpoint_artifacts", "alignment_compute"):
        assert key in attrs
    # The latency budget, in the attribute optuna-dashboard reads and Optuna's samplers see as constraints.
    assert complete[-1].system_attrs["constraints"][0] < 0
    assert list(complete[-1].constraints.values()) == complete[-1].system_attrs["constraints"]
    # The chain's aligned prefixes were cached when it was computed: greedy trials align nothing, the
    # combination aligns its channel step only, from the chain's prefix, and records that compute.
    assert all(t.user_attrs["cache"]["alignment_steps_run"] == 0 for t in baseline_trials(study))
    assert all(t.user_attrs["alignment_compute"]["epochs"] == 0 for t in baseline_trials(study))
    for trial in combination:
        assert trial.user_attrs["cache"]["prefix_reused"] == len(trial.user_attrs["drops"])
        assert trial.user_attrs["cache"]["alignment_steps_run"] == 1
        assert trial.user_attrs["alignment_compute"]["epochs"] == 1
        assert trial.user_attrs["alignment_compute"]["video_epochs"] == 4  # 1 epoch x 4 training videos
    assert study.user_attrs["greedy_alignment_compute"]["epochs"] == 2

    again = run("study", "launch", path, "--quiet", "--n-trials", "9", "--max-latency-ms", "1e6")
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="tiny", storage=storage)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 9
    # One latency scale: the base model's figure over each architecture's speed-up, paired with it.
    for trial in complete:
        attrs = trial.user_attrs
        assert attrs["latency_base_ms"] == study.user_attrs["base_latency_ms"] and attrs["latency_ms"] == trial.values[1]
        if attrs["latency_speedup_over_base"] is not None:
            assert trial.values[1] == pytest.approx(attrs["latency_base_ms"] / attrs["latency_speedup_over_base"]["median"])
    assert len(baseline_trials(study)) == 2 and len(baseline_trials(study, "greedy+channels")) == 3  # enqueued once
    # The resumed launch samples with its own seed (recorded), so it explores instead of proposing
    # the first launch's parameters again.
    sampled = {launch: [t.params for t in complete if t.user_attrs["launch"] == launch and "baseline" not in t.user_attrs]
               for launch in (0, 1)}
    assert len(sampled[0]) == 2 and len(sampled[1]) == 2
    assert not any(params in sampled[0] for params in sampled[1])
    assert {t.user_attrs["sampler_seed"] for t in complete} == {0, 1}

    # `--out` is a prefix: its dots stay.
    pareto = run("study", "pareto", "--storage", storage, "--study", "tiny", "--out", tmp_path / "front.v2", "--json",
                 "--map-tolerance", "0.5")
    assert pareto.exit_code == 0, pareto.output
    report = json.loads(pareto.output.strip().splitlines()[-1])
    volumes = report["hypervolume"]
    assert volumes["all"] >= max(volumes["search"], volumes["baselines"])
    assert volumes["baselines"] >= max(volumes["greedy"], volumes["greedy+channels"])
    reference = report["reference_point"]
    assert reference["average_mAP"] == pytest.approx(study.user_attrs["base_map"] - 0.5)
    # The base model's latency from the groundwork: the scale of every latency of the study.
    assert reference["cost"] == base_latency_ms(study) == study.user_attrs["base_latency_ms"]
    assert "tolerance" in reference["how"]
    assert (tmp_path / "front.v2.png").stat().st_size > 0 and (tmp_path / "front.v2.html").stat().st_size > 0
    table = run("study", "pareto", "--storage", storage, "--study", "tiny", "--out", tmp_path / "front")
    assert "reference point: mAP" in table.output and "greedy+channels" in table.output

    exported = run("study", "export", "--storage", storage, "--study", "tiny", "--min-map", "0", "--out", tmp_path / "best.json")
    assert exported.exit_code == 0, exported.output
    schedule = json.loads((tmp_path / "best.json").read_text())
    assert schedule["format"] == "tadprune.schedule" and "results" in schedule
    assert (tmp_path / "best.model" / "model.safetensors").exists()


def test_a_changed_spec_under_the_same_name_is_refused(tiny_setting, tmp_path):
    path = spec_copy(tiny_setting, tmp_path, n_trials=2)
    assert run("study", "launch", path, "--quiet").exit_code == 0
    changed = spec_copy(tiny_setting, tmp_path, n_trials=2, search={"max_drops": 1, "channel_ratios": [0.0]})
    result = run("study", "launch", changed, "--quiet")
    assert result.exit_code == 2
    assert "search.max_drops: 2 -> 1" in result.output


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tiny_setting, tmp_path, monkeypatch):
    import pruning.progressive

    def diverge(model, ratios):
        raise FloatingPointError("alignment loss is nan")

    monkeypatch.setattr(pruning.progressive, "prune_channels", diverge)
    spec = load_study_spec(spec_copy(tiny_setting, tmp_path, n_trials=8, sampler="random", seed=3))
    study = launch(spec, {"max_latency_ms": None, "min_map": None}, show_progress=False)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed, "the search space has channel ratios, some trial must have drawn one"
    assert all("alignment loss is nan" in t.user_attrs["fail_reason"] for t in failed)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 2


def test_a_repeated_schedule_is_pruned_at_no_trial_slot(tiny_setting, tmp_path):
    no_channels = {"max_drops": 2, "channel_ratios": [0.0]}  # the greedy family only: 2 baseline trials
    path = spec_copy(tiny_setting, tmp_path, n_trials=2, search=no_channels)
    assert run("study", "launch", path, "--quiet").exit_code == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    first = study.trials[0]
    # Other priority keys, the same schedule (only the highest-priority block drops), proposed as a search trial.
    study.enqueue_trial({**first.params, **{k: 0.5 for k in first.params if k.startswith(PRIORITY)
                                            and first.params[k] == 0.0}})
    study.enqueue_trial({**first.params, DROPS: 0})  # nothing dropped: the base model itself
    result = run("study", "launch", path, "--n-trials", "3")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "as a repeat (no trial slot used)" in text and "trial 2 pruned as a repeat (no trial slot used): repeat of trial 0" in text
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    again = study.trials[2]
    assert again.params != first.params and again.state == TrialState.PRUNED
    assert again.user_attrs["repeat_of"] == first.number and again.user_attrs["repeat_values"] == first.values
    assert again.user_attrs["prune_reason"].startswith(f"repeat of trial {first.number}")
    # The empty schedule is the base model, measured in the groundwork: told as its repeat.
    empty = study.trials[3]
    assert empty.state == TrialState.PRUNED and empty.user_attrs["repeat_of"] == "the base model"
    assert empty.user_attrs["repeat_values"] == [study.user_attrs["base_map"], study.user_attrs["base_latency_ms"]]
    assert empty.user_attrs["prune_reason"].startswith("the base model itself (nothing dropped or pruned")
    assert "trial 3 pruned as a repeat (no trial slot used): the base model itself" in text
    # The repeats took no slot: the launch ran another trial to reach 3 complete ones.
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert study.trials[-1].state == TrialState.COMPLETE and "repeat_of" not in study.trials[-1].user_attrs


def test_spec_errors_name_the_field(tiny_setting, tmp_path):
    path = spec_copy(tiny_setting, tmp_path, sampler="annealing")
    result = run("study", "launch", path)
    assert result.exit_code == 2 and "sampler" in result.output
    raw = yaml.safe_load(tiny_setting.read_text())
    raw["search"]["max_dorps"] = 1
    path.write_text(yaml.safe_dump(raw))
    result = run("study", "launch", path)
    assert result.exit_code == 2 and "search.max_dorps" in result.output


def test_resume_after_the_driver_is_killed(tiny_setting, tmp_path):
    grace_s = 3
    path = spec_copy(tiny_setting, tmp_path, n_trials=30, runner={"kind": "local", "heartbeat_s": 1, "grace_s": grace_s})
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "search.cli", "study", "launch", str(path), "--quiet"]
    driver = subprocess.Popen(launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            time.sleep(2)
            try:
                study = optuna.load_study(study_name="tiny", storage=storage)
            except KeyError:
                continue
            if len(study.get_trials(states=(TrialState.COMPLETE,))) >= 3:
                break
        else:
            pytest.fail("the driver completed no trials in time")
    finally:
        driver.send_signal(signal.SIGKILL)
        _, stderr = driver.communicate()
    assert stderr == ""  # --quiet: no Optuna lines, no warnings
    kept = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    left_running = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
    time.sleep(grace_s + 1)  # the killed driver's trials are stale once its heartbeat is this old
    # In its own process with a deadline: a resumed launch that waits for ever fails the test.
    resumed = subprocess.run([*launch, "--n-trials", str(len(kept) + 2)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = optuna.load_study(study_name="tiny", storage=storage)
    complete = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert kept <= complete and len(complete) == len(kept) + 2
    for number in left_running:
        assert "no heartbeat" in study.trials[number].user_attrs["fail_reason"]
    completed_baseline = [t for t in baseline_trials(study) if t.state == TrialState.COMPLETE]
    assert len(completed_baseline) == 2
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_a_trial_whose_driver_died_before_its_first_heartbeat_is_stale_too(tmp_path):
    from search.study import stale_trial_ids, storage_for

    grace_s = 1
    storage = storage_for(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_s=1, grace_s=grace_s)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    silent, beat_once, beating = (study.ask()._trial_id for _ in range(3))
    storage.record_heartbeat(beat_once)
    storage.record_heartbeat(beating)
    time.sleep(grace_s + 1.1)
    storage.record_heartbeat(beating)
    fresh = study.ask()._trial_id  # no heartbeat yet, but asked just now: its driver may beat any moment
    # Optuna alone finds only the trial that beat once; a driver killed between ask and beat is found too.
    assert storage._get_stale_trial_ids(study._study_id) == [beat_once]
    assert stale_trial_ids(study._storage, study._study_id, grace_s) == sorted([silent, beat_once])
    assert fresh not in stale_trial_ids(storage, study._study_id, grace_s)


def test_pareto_table_names_blocks_by_what_tells_them_apart():
    from search.cli.study import dotted_common_prefix

    assert dotted_common_prefix(["backbone.blocks.1", "backbone.blocks.10", "backbone.blocks.3"]) == "backbone.blocks."
    assert dotted_common_prefix(["backbone.stage2.0", "backbone.stage3.1"]) == "backbone."
    assert dotted_common_prefix(["backbone.blocks.1"]) == "" and dotted_common_prefix(["a.1", "b.1"]) == ""
