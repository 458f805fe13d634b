"""Re-timing and the timing service: re-timed figures drive the front, the hypervolumes and export;
a study under Ray is timed by one actor on its target; targets are checked."""
import fcntl
import json
import os
import socket

import optuna
import pytest
import torch
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from pipeline_fixtures import spec_copy
from pruning.schedule import Schedule
from search.cli import app
from search.export import best_under_budget, export_schedule
from search.cache import DeviceLock
from search.launch import launch
from search.pareto import RETIMED, complete_trials, hypervolume, latency_ms, pareto_report
from search.spec import ParetoSettings
from search.spec import load_study_spec
from search.study import Groundwork, groundwork_steps, prepare_runner
from tadmodels.spec import SpecError

NO_BUDGETS = {"max_latency_ms": None, "min_map": None}


def hand_built_study(tmp_path) -> optuna.Study:
    """Four complete trials as a study stores them: trial 0 the greedy chain's, trials 1 and 3 one
    architecture (signature B: the latency cache gave both one first figure)."""
    study = optuna.create_study(study_name="hand", storage=f"sqlite:///{tmp_path / 'hand.db'}",
                                directions=["maximize", "minimize"])
    study.set_user_attr("base_latency_ms", 50.0)
    study.set_user_attr("base_map", 0.95)
    for mAP, first_ms, signature, baseline in [(0.90, 30.0, "A", True), (0.92, 40.0, "B", False),
                                               (0.85, 20.0, "C", False), (0.93, 40.0, "B", False)]:
        attrs = {"compute_signature": signature, "drops": [f"backbone.blocks.{len(signature)}"], "channel_ratios": {},
                 "macs": 1, "latency_iqr_ms": 1.0, "latency_device": "cpu (1 threads)",
                 "schedule": Schedule(base_fingerprint="f", drops=["backbone.blocks.1"]).model_dump(mode="json"),
                 **({"baseline": "greedy"} if baseline else {})}
        study.add_trial(create_trial(values=[mAP, first_ms], params={"x": 0.0},
                                     distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs))
    return study


def test_pareto_hypervolumes_and_export_use_the_retimed_figures(tmp_path):
    study = hand_built_study(tmp_path)
    before = pareto_report(study)
    assert [p.trial for p in before.front] == [2, 0, 3] and not any(p.retimed for p in before.front)
    assert before.latency["first_measurement"] == [0, 1, 2, 3] and "retiming" not in before.latency
    with pytest.raises(ValueError, match="fastest 20.00 ms"):
        best_under_budget(study, max_latency_ms=19, min_map=None)
    assert best_under_budget(study, max_latency_ms=26, min_map=None).number == 2

    # Timed together, B is faster than A: trials 1 and 3 now dominate the greedy trial. The figures
    # are the base model's 50 ms over each speed-up, whatever the round's own medians read (the
    # whole machine ran slower in it). C was stored by a version without that scale: its median.
    study.set_user_attr(RETIMED, {"round": 1, "device": "cpu (1 threads)", "base_latency_ms": 50.0, "by_signature": {
        "A": {"latency_ms": 35.0, "speedup_over_base": 50 / 35, "median_ms": 70.0, "iqr_ms": 0.5},
        "B": {"latency_ms": 25.0, "speedup_over_base": 2.0, "median_ms": 51.0, "iqr_ms": 0.4},
        "C": {"median_ms": 22.0, "iqr_ms": 0.3}}})
    after = pareto_report(study)
    assert [(p.trial, p.latency_ms, p.latency_first_ms, p.retimed) for p in after.front] == [
        (2, 22.0, 20.0, True), (3, 25.0, 40.0, True)]
    assert after.latency["retimed"] == [0, 1, 2, 3] and after.latency["retiming"]["round"] == 1
    trials = complete_trials(study)
    assert [latency_ms(t) for t in trials] == [35.0, 25.0, 22.0, 25.0]
    assert [t.values[1] for t in study.trials] == [30.0, 40.0, 20.0, 40.0]  # the stored trials stay as they were
    # Reference point: the base model's latency, the scale of every figure, and its mAP minus the tolerance.
    wide = pareto_report(study, ParetoSettings(map_tolerance=0.5))
    assert (wide.reference.average_mAP, wide.reference.cost) == (pytest.approx(0.45), 50.0)
    # The greedy trial alone: its area up to the reference point is (0.9 - 0.45) x (50 - 35).
    assert wide.hypervolume["greedy"] == pytest.approx(0.45 * (50.0 - 35.0))
    assert wide.hypervolume["greedy"] == pytest.approx(hypervolume(trials[:1], wide.reference))

    best = best_under_budget(study, max_latency_ms=26, min_map=None)
    assert best.number == 3
    export_schedule(study, best, tmp_path / "best.json")
    results = json.loads((tmp_path / "best.json").read_text())["results"]
    assert (results["latency_ms"], results["latency_first_ms"], results["latency_iqr_ms"]) == (25.0, 40.0, 0.4)
    assert results["speedup_over_base"] == 2.0
    assert results["latency_source"] == "re-timed together, round 1" and results["device"] == "cpu (1 threads)"


def test_a_study_is_retimed_at_the_end_of_a_launch_and_on_demand(tiny_setting, tmp_path):
    path = spec_copy(tiny_setting, tmp_path, n_trials=3)
    study = launch(load_study_spec(path), NO_BUDGETS, show_progress=False)
    retiming = study.user_attrs[RETIMED]
    assert retiming["round"] == 1 and retiming["timed_by"] == f"{socket.gethostname()} pid {os.getpid()}"
    # One figure per architecture: the base model's and every trial's compute signature at most.
    # (The trials that ran: with the greedy+channels family queued, some baseline trials wait.)
    signatures = ({t.user_attrs["compute_signature"] for t in study.get_trials(states=(TrialState.COMPLETE,))}
                  | {retiming["base_signature"]})
    assert set(retiming["by_signature"]) <= signatures and retiming["architectures"] == len(retiming["by_signature"])
    # Every figure on the study's scale: the groundwork's base model latency over the paired speed-up.
    base_ms = study.user_attrs["base_latency_ms"]
    assert retiming["by_signature"][retiming["base_signature"]]["latency_ms"] == base_ms == retiming["base_latency_ms"]
    for figure in retiming["by_signature"].values():
        assert figure["latency_ms"] == pytest.approx(base_ms / figure["speedup_over_base"])
    report = pareto_report(study)
    assert all(p.retimed for p in report.front + report.families["greedy"])

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = CliRunner().invoke(app, ["study", "pareto", "--storage", storage, "--study", "tiny", "--retime",
                                      "--out", str(tmp_path / "front")])
    assert result.exit_code == 0, result.output
    assert "re-timing" in result.output and "re-timed together in round 2" in result.output
    again = optuna.load_study(study_name="tiny", storage=storage).user_attrs[RETIMED]
    assert again["round"] == 2 and again["by_signature"] != retiming["by_signature"]
    exported = CliRunner().invoke(app, ["study", "export", "--storage", storage, "--study", "tiny", "--min-map", "0",
                                        "--out", str(tmp_path / "best.json")])
    assert exported.exit_code == 0 and "(re-timed together, round 2)" in exported.output
    misplaced = CliRunner().invoke(app, ["study", "pareto", "--storage", storage, "--study", "tiny", "--runner", "ray"])
    assert misplaced.exit_code == 2 and "goes with --retime only" in misplaced.output


def test_under_ray_one_actor_on_the_target_times_every_latency(tiny_setting, tmp_path, ray_cluster):
    import ray

    node = ray.util.get_node_ip_address()
    # One greedy step, so the groundwork is short; no channel ratios, so the search trial drops at
    # most one block: an architecture the groundwork or the greedy trial has timed (the actor's cache).
    path = spec_copy(tiny_setting, tmp_path, n_trials=2, search={"max_drops": 1, "channel_ratios": [0.0]}, latency={
        **yaml.safe_load(tiny_setting.read_text())["latency"], "target": {"node": node}},
        runner={"kind": "ray", "max_concurrent": 2, "resources": {"cpu": 1}})
    study = launch(load_study_spec(path), NO_BUDGETS, show_progress=False)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    timed_by = {t.user_attrs["latency_timed_by"] for t in complete}
    # Trials on Ray workers, the base model in the groundwork task, the re-timing asked by the
    # driver: all measured in the one actor's process, which is none of those.
    cached = {json.loads(p.read_text())["timed_by"] for p in (tmp_path / "artifacts" / "cache" / "latency").glob("*.json")}
    assert len(complete) == 2 and len(timed_by) == 1 and cached == timed_by
    assert study.user_attrs[RETIMED]["timed_by"] in timed_by
    assert timed_by != {f"{socket.gethostname()} pid {os.getpid()}"}
    # Ray's workers keep the driver's priority (Ray's default lowers it by 15, which a busy node punishes).
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == os.nice(0)

    # A target no node has is refused, naming what the nodes offer, before anything is written.
    other = tmp_path / "other"
    other.mkdir()
    wrong = spec_copy(tiny_setting, other, n_trials=1, latency={"target": {"resources": {"accelerator_type:H100": 0.001}}},
                      runner={"kind": "ray"})
    with pytest.raises(ValueError, match=rf"latency.target: no node .*accelerator_type:H100.*offer: {node}: CPU 2"):
        launch(load_study_spec(wrong), NO_BUDGETS, show_progress=False)
    assert not (other / "study.db").exists()


@pytest.mark.parametrize("latency, message", [
    ({"device": "cuda"}, "latency.target.gpu is 0"),
    ({"device": "cpu", "target": {"gpu": 0.5}}, "a GPU share it does not time on"),
    ({"target": {"node": "gpu-node-3"}}, "'gpu-node-3' is not an IP address"),
    ({"target": {"resources": {"GPU": 1}}}, "give a node as `node` and a GPU share as `gpu`"),
])
def test_timing_targets_are_checked_by_field(tiny_setting, tmp_path, latency, message):
    path = spec_copy(tiny_setting, tmp_path, latency=latency, runner={"kind": "ray"})
    with pytest.raises(SpecError, match=message):
        load_study_spec(path)
    # The local runner times in its own process: a target does not concern it.
    if "target" not in latency:
        load_study_spec(spec_copy(tiny_setting, tmp_path, latency=latency, runner={"kind": "local"}))


def held_by_anyone(lock: DeviceLock) -> bool:
    """Whether some holder has the lock now: an exclusive claim that would wait is refused."""
    with open(lock.path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_the_groundwork_computes_as_a_trial_does_holding_its_device(tiny_setting, tmp_path):
    runner = prepare_runner(load_study_spec(spec_copy(tiny_setting, tmp_path, search={"max_drops": 1})))
    lock = DeviceLock(torch.device("cpu"), tmp_path)  # this test's own, not the host's
    runner.locks = [lock]
    held = {}
    evaluate = runner.experiment.evaluate

    def evaluate_noting_the_lock(*args, **kwargs):
        held.setdefault("evaluating", []).append(held_by_anyone(lock))
        return evaluate(*args, **kwargs)

    runner.experiment.evaluate = evaluate_noting_the_lock
    for step in groundwork_steps(runner, {"base": True, "chain": True}):
        if not isinstance(step, Groundwork):
            held[step.split(":")[0]] = held.get(step.split(":")[0], []) + [held_by_anyone(lock)]
    # The base model is timed with the device free; its mAP and the greedy chain (scoring, aligning)
    # are computed holding it, so no timing of it on this host runs meanwhile.
    assert held == {"base model": [False, False], "evaluating": [True], "greedy step 1/1": [True, True]}
    assert not held_by_anyone(lock)
