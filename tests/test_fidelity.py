"""Multi-fidelity, the reference point and baseline families, the seeded start and the samplers
with PRUNED trials: rules on hand-built inputs, then real studies on the tiny setting (real Optuna
storage, a real Ray run)."""
import json
import math
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from pipeline_fixtures import spec_copy
from search.claims import StudyClaims
from search.cli import app
from search.encoding import ScheduleEncoding
from search.fidelity import ScoredPoint, StopBeforeAlignment, judge, rung_alignment
from search.launch import launch
from search.lifecycle import StudyDriver, attempt
from search.objective import TrialRunner, Work
from search.pareto import pareto_report
from search.samplers import _PrunedAsComplete, make_sampler
from search.seeding import cost_factors, draw_order, seeded_params
from search.spec import FidelitySettings, ParetoSettings, SearchSpace, SeededStart, load_study_spec
from search.study import storage_for
from pruning.alignment import AlignmentConfig
from tadmodels.data import DataFormatError
from tadmodels.inference import evaluate_model
from tadmodels.training import Experiment

NO_BUDGETS = {"max_latency_ms": None, "min_map": None}
BLOCKS = [f"b.{i}" for i in range(5)]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# -- rules on hand-built inputs ------------------------------------------------------------------


def test_promotion_is_successive_halving_among_trials_at_similar_or_lower_latency():
    settings = FidelitySettings(rungs=[{"epochs": 0}], eta=2, latency_slack=0.05, min_peers=2)
    peers = [ScoredPoint("trial 1", 0.70, 10.0), ScoredPoint("trial 2", 0.60, 10.2), ScoredPoint("trial 3", 0.90, 30.0)]
    # At 10 ms: trials 1 and 2 are its peers (trial 3 is far slower and does not count).
    assert judge(ScoredPoint("trial 9", 0.65, 10.0), peers, settings, "rung 0").promote  # 1 of 2 better: ceil(3/2)=2 allowed
    lost = judge(ScoredPoint("trial 9", 0.50, 10.0), peers, settings, "rung 0")
    assert not lost.promote and "2 of 2 trials at similar or lower latency score higher" in lost.reason
    assert "trial 1 (0.7000" in lost.reason
    # Slower than everyone: all three are peers and two beat it, fewer than ceil(4/2)=2 may.
    assert not judge(ScoredPoint("trial 9", 0.65, 40.0), peers, settings, "rung 0").promote
    # The fastest trial has no peer that could dominate it: it goes up whatever its mAP.
    assert judge(ScoredPoint("trial 9", 0.01, 5.0), peers, settings, "rung 0").promote
    # A stricter eta keeps fewer; min_peers lets trials up while a rung says too little.
    strict = settings.model_copy(update={"eta": 4})
    assert not judge(ScoredPoint("trial 9", 0.65, 10.0), peers, strict, "rung 0").promote
    assert judge(ScoredPoint("trial 9", 0.0, 40.0), peers[:1], settings, "rung 0").promote


def test_stop_before_alignment_by_budget_and_by_an_optimistic_mAP():
    front = (ScoredPoint("the base model", 0.70, 20.0), ScoredPoint("trial 4", 0.72, 12.0))
    stop = StopBeforeAlignment(optimistic_map=0.70, front=front, max_latency_ms=25.0)
    assert stop.reason(26.0).startswith("over the latency budget before alignment: 26.000 ms > 25 ms")
    assert "dominated before alignment: trial 4 (mAP 0.7200, 12.000 ms)" in stop.reason(15.0)
    assert stop.reason(21.0).startswith("dominated before alignment: the base model")
    assert stop.reason(11.0) is None  # faster than every known point: it may reach the front
    assert StopBeforeAlignment(0.73, front).reason(15.0) is None  # a higher optimistic mAP is not dominated


def test_a_rung_is_the_full_alignment_shortened():
    full = AlignmentConfig(preset="pbd")
    rung = rung_alignment(full, 6)
    assert rung.epochs == 6 and rung.warmup_epochs == pytest.approx(0.5) and rung.lr == full.lr


def _trial(number_map_latency, family=None, state=TrialState.COMPLETE, **attrs):
    mAP, latency = number_map_latency
    user_attrs = {"drops": [], "channel_ratios": {}, "macs": 1, **attrs}
    if family:
        user_attrs["baseline"] = family
    return create_trial(state=state, values=[mAP, latency] if state == TrialState.COMPLETE else None,
                        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, user_attrs=user_attrs)


def test_reference_point_and_hypervolume_per_family_on_a_hand_built_study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("base_map", 0.80)
    study.set_user_attr("base_latency_ms", 10.0)
    study.add_trial(_trial((0.78, 8.0), "greedy"))
    study.add_trial(_trial((0.75, 6.0), "greedy+channels"))
    study.add_trial(_trial((0.79, 7.0)))
    study.add_trial(_trial((0.60, 2.0)))  # below the reference mAP: adds nothing
    study.add_trial(_trial((0.85, 11.0)))  # slower than the base model: adds nothing
    report = pareto_report(study, ParetoSettings(map_tolerance=0.1))
    assert report.reference.average_mAP == pytest.approx(0.70) and report.reference.cost == 10.0
    assert "the base model's minus the tolerance" in report.reference.how
    volumes = report.hypervolume
    assert volumes["greedy"] == pytest.approx(0.08 * 2.0)
    assert volumes["greedy+channels"] == pytest.approx(0.05 * 4.0)
    # The union of the families: 0.05 x 4 from the channel trial plus (0.78 - 0.75) x 2 above it.
    assert volumes["baselines"] == pytest.approx(0.05 * 4 + 0.03 * 2)
    assert volumes["search"] == pytest.approx(0.09 * 3.0)
    assert report.ratios()["baselines"] == pytest.approx(0.27 / 0.26)
    assert report.undominated_by_baselines == [2, 3, 4]
    wide = pareto_report(study, ParetoSettings(map_tolerance=0.8, latency_ms=20.0))
    assert wide.hypervolume["search"] > volumes["search"] and "20.000 ms" in wide.reference.how


def test_the_seeded_start_draws_around_the_greedy_order():
    # Step 1 on the base model: b.2 is best, b.0 nearly as good, b.4 far worse; step 2 after dropping b.2.
    selections = [{"higher_is_better": True, "scores": {"b.0": 0.76, "b.1": 0.60, "b.2": 0.80, "b.3": 0.65, "b.4": 0.10}},
                  {"higher_is_better": True, "scores": {"b.0": 0.78, "b.1": 0.60, "b.3": 0.65, "b.4": 0.05}}]
    rng = np.random.default_rng(0)
    cold = [draw_order(selections, BLOCKS, 0.01, rng) for _ in range(20)]
    assert all(order[:2] == ["b.2", "b.0"] for order in cold)  # the greedy chain itself
    warm = [draw_order(selections, BLOCKS, 0.5, rng) for _ in range(400)]
    firsts = {b: sum(o[0] == b for o in warm) for b in BLOCKS}
    assert firsts["b.2"] > firsts["b.0"] > firsts["b.3"] > firsts["b.4"] and firsts["b.4"] <= 4
    assert 0.1 < firsts["b.0"] / 400 < 0.5  # a close second is swapped in often, not always
    assert all(sorted(order) == BLOCKS for order in warm)
    encoding = ScheduleEncoding(SearchSpace(max_drops=2, channel_ratios=[0.0, 0.5]), BLOCKS)
    equal_macs = dict.fromkeys(BLOCKS, 100)
    params = seeded_params(selections, encoding, SeededStart(trials=4, temperature=0.01), equal_macs, seed=0)
    decoded = [encoding.decode(p) for p in params]
    assert [d.drops for d in decoded] == [["b.2"], ["b.2", "b.0"], ["b.2"], ["b.2", "b.0"]]
    assert [d.channel_ratios for d in decoded] == [{}, {}, {"*": 0.5}, {"*": 0.5}]


def test_the_seeded_start_prefers_blocks_that_run_more_macs():
    # The chain's scores tie (a saturated selection); b.0 and b.1 run 4 times the MACs of the others.
    selections = [{"higher_is_better": True, "scores": dict.fromkeys(BLOCKS, 1.0)}]
    block_macs = {"b.0": 400, "b.1": 400, "b.2": 100, "b.3": 100, "b.4": 100}
    assert cost_factors(block_macs, BLOCKS, 0.0) == dict.fromkeys(BLOCKS, 1.0)
    factors = cost_factors(block_macs, BLOCKS, 1.0)
    assert factors == {"b.0": 1.0, "b.1": 1.0, "b.2": 0.25, "b.3": 0.25, "b.4": 0.25}
    rng = np.random.default_rng(0)
    firsts = [draw_order(selections, BLOCKS, 0.5, rng, factors)[0] for _ in range(1100)]
    share = sum(b in ("b.0", "b.1") for b in firsts) / len(firsts)
    assert 0.68 < share < 0.78  # 2 x 1 against 3 x 0.25: 8 / 11 of the draws
    blind = [draw_order(selections, BLOCKS, 0.5, rng, cost_factors(block_macs, BLOCKS, 0.0))[0] for _ in range(1000)]
    assert 0.33 < sum(b in ("b.0", "b.1") for b in blind) / len(blind) < 0.47  # 2 of 5 blocks
    # A score far below the best still keeps a costly block out.
    selections[0]["scores"]["b.0"] = 0.2
    assert sum(draw_order(selections, BLOCKS, 0.5, rng, factors)[0] == "b.0" for _ in range(400)) <= 4


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "gp", "random"])
def test_every_sampler_proposes_with_pruned_trials_in_the_study(tiny_setting, tmp_path, sampler):
    spec = load_study_spec(spec_copy(tiny_setting, tmp_path, sampler=sampler, population_size=2))
    encoding = ScheduleEncoding(spec.search, [f"backbone.blocks.{i}" for i in range(4)])
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(spec, 0))
    distributions = encoding.distributions()
    rng = np.random.default_rng(0)
    for index in range(12):  # enough for TPE and GP to model rather than sample at random
        order = list(rng.permutation(encoding.blocks))
        params = encoding.encode(order, int(rng.integers(0, 3)), [0.0, 0.5][index % 2])
        kind = index % 3  # complete, pruned at a rung, pruned as a repeat
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if kind == 0 else TrialState.PRUNED, params=params, distributions=distributions,
            values=[0.5 + 0.01 * index, 10.0 - 0.5 * index] if kind == 0 else None,
            user_attrs={1: {"rungs": [{"rung": 0, "average_mAP": 0.3, "latency_ms": 9.0}]},
                        2: {"repeat_values": [0.5, 10.0]}}.get(kind, {})))
    for _ in range(3):
        trial = study.ask(distributions)
        assert set(trial.params) == set(distributions)
        study.tell(trial, state=TrialState.PRUNED)
    shown = _PrunedAsComplete(study)._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(shown) == 12  # the pruned trials asked above have no result and stay unseen


# -- real trials ---------------------------------------------------------------------------------


MF = {"alignment": {"epochs": 2, "lr": 1e-3},
      "fidelity": {"rungs": [{"epochs": 0, "split": "train"}, {"epochs": 1, "split": "train"}], "min_peers": 100},
      "search": {"max_drops": 2, "channel_ratios": [0.0]}}


def test_a_trial_stopped_before_alignment_aligns_nothing(tiny_setting, tmp_path):
    spec = load_study_spec(spec_copy(tiny_setting, tmp_path, **MF)).resolved()
    runner = TrialRunner(spec)
    params = runner.encoding.encode(runner.encoding.blocks[:2])
    stop = StopBeforeAlignment(0.5, (ScoredPoint("trial 7", 0.9, 1e-6),))
    outcome = attempt(runner, Work(params, "trial-0", 0, stop))
    assert outcome.state == TrialState.PRUNED and outcome.reason.startswith("dominated before alignment: trial 7")
    assert outcome.attrs["latency_median_ms"] > 0 and outcome.attrs["macs"] > 0 and "alignment_compute" not in outcome.attrs
    assert not (tmp_path / "artifacts" / "cache" / "prefixes").exists()
    # Without a stop, rung 1 aligns each drop for the rung's single epoch and caches that rung's prefixes.
    rung = attempt(runner, Work(params, "trial-0", 1))
    assert rung.state == TrialState.RUNNING and rung.attrs["rung"]["split"] == "train"
    assert rung.attrs["alignment_compute"]["epochs"] == 2 and rung.attrs["alignment_compute"]["video_epochs"] == 8
    assert runner.prefix_caches[1].longest(runner.encoding.blocks[:2])[0] == 2
    assert runner.prefix_caches[2].longest(runner.encoding.blocks[:2])[0] == 0  # the full rung has its own


def test_the_driver_prunes_before_alignment_and_at_a_rung_and_status_shows_why(tiny_setting, tmp_path):
    fidelity = {**MF["fidelity"], "min_peers": 1, "eta": 10, "optimism": 0.5}
    path = spec_copy(tiny_setting, tmp_path, n_trials=2, **{**MF, "fidelity": fidelity})
    study = launch(load_study_spec(path), NO_BUDGETS, show_progress=False)
    # The 2 greedy trials are scored at the free rung 0, skip rung 1 (it aligns) and are never
    # stopped (local runner).
    assert [[r["rung"] for r in t.user_attrs["rungs"]] for t in study.trials] == [[0, 2], [0, 2]]
    assert [[r["split"] for r in t.user_attrs["rungs"]] for t in study.trials] == [["train", "test"]] * 2
    assert [t.user_attrs["alignment_compute"]["epochs"] for t in study.trials] == [0, 0]  # the chain's prefixes
    base_map, base_latency = study.user_attrs["base_map"], study.user_attrs["base_latency_ms"]
    one_drop_latency = study.trials[0].user_attrs["latency_ms"]  # the tiny model's blocks are alike
    assert base_map < 0.5 and one_drop_latency != base_latency
    spec = load_study_spec(path).with_overrides(n_trials=10).resolved()
    encoding = ScheduleEncoding(spec.search, [f"backbone.blocks.{i}" for i in range(4)])
    # Two schedules whose latencies are cached already: the greedy trials' architectures, other
    # blocks or another order. On a busy machine either may time slower; the slower is queued first.
    chain, two_drop_latency = study.user_attrs["greedy_chain"], study.trials[1].user_attrs["latency_ms"]
    schedules = sorted([(one_drop_latency, encoding.encode([chain[1]], 1)),
                        (two_drop_latency, encoding.encode(chain[1::-1], 2))], key=lambda pair: -pair[0])
    slow = schedules[0][0]
    # Hand-built: a peer that beats everyone at rung 0 at no latency (trial 2), and a complete trial
    # at the slower latency that beats the optimistic mAP (the base model's + 0.5) (trial 3).
    template = study.trials[0]
    study.add_trial(create_trial(state=TrialState.PRUNED, params=template.params, distributions=template.distributions,
                                 user_attrs={"rungs": [{"rung": 0, "epochs": 0, "split": "train", "average_mAP": 1.0,
                                                       "latency_ms": 0.0}]}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, params=template.params, distributions=template.distributions,
                                 values=[1.0, slow]))
    for _, params in schedules:
        study.enqueue_trial(params)
    runner, lines = TrialRunner(spec), []
    storage = storage_for(spec.storage_url, heartbeat_s=spec.runner.heartbeat_s, grace_s=spec.runner.grace_s)
    study = optuna.load_study(study_name="tiny", storage=storage)
    claims = StudyClaims(storage, study._study_id, lease_s=60)
    with StudyDriver(study, spec, encoding, claims, launch=1, seed=1, say=lines.append) as driver:
        for _ in range(2):
            flight = driver.next_trial()
            driver.finish(flight, attempt(runner, driver.work(flight)))
    loaded = optuna.load_study(study_name="tiny", storage=storage_for(spec.storage_url, create=False))
    stopped, lost = loaded.trials[4], loaded.trials[5]
    assert stopped.state == lost.state == TrialState.PRUNED
    assert stopped.user_attrs["pruned_at"] == "before alignment"
    assert stopped.user_attrs["prune_reason"].startswith("dominated before alignment: trial 3 (mAP 1.0000")
    assert stopped.user_attrs["alignment_compute"]["epochs"] == 0 and "rungs" not in stopped.user_attrs
    assert lost.user_attrs["pruned_at"] == 0 and "trial 2 (1.0000, 0.00 ms)" in lost.user_attrs["prune_reason"]
    # Its peers at rung 0: trial 2 and the greedy trials scored there (at least the 2-drop one, as fast).
    assert int(re.search(r"1 of (\d+) trials at similar or lower latency", lost.user_attrs["prune_reason"])[1]) >= 2
    assert [r["rung"] for r in lost.user_attrs["rungs"]] == [0]
    status = run("study", "status", "--storage", spec.storage_url, "--study", "tiny")
    text = " ".join(status.output.split())
    assert status.exit_code == 0 and "pruned │ 3" in text
    assert "pruned: 1 (where not recorded), 1 at rung 0, 1 before alignment" in text
    rung = lost.user_attrs["rungs"][0]
    assert (f"trial 5 pruned at rung 0 [rung 0 (0 ep, train): mAP {100 * rung['average_mAP']:.2f} at "
            f"{rung['latency_ms']:.2f} ms]: rung 0 (0 epoch(s), train split): mAP") in text
    assert "trial 4 pruned before alignment: dominated before alignment: trial 3" in text


def held_out_copy(tiny_setting, tmp_path, names: list[str]) -> dict:
    """The tiny setting's data section for a copy of its dataset whose test videos `names` are
    relabelled `heldout` (the frames are the original's, linked)."""
    raw = yaml.safe_load(tiny_setting.read_text())["data"]
    original, root = Path(raw["root"]), tmp_path / "data"
    root.mkdir()
    (root / "frames").symlink_to(original / "frames")
    annotations = json.loads((original / "annotations.json").read_text())
    for name in names:
        assert annotations["database"][name]["subset"] == "test"
        annotations["database"][name]["subset"] = "heldout"
    (root / "annotations.json").write_text(json.dumps(annotations))
    return {**raw, "root": str(root), "heldout_subset": "heldout"}


def test_a_rung_on_the_held_out_split_scores_those_videos_and_needs_them(tiny_setting, tmp_path):
    rungs = {**MF, "fidelity": {**MF["fidelity"], "rungs": [{"epochs": 0, "split": "heldout"}]}}
    with pytest.raises(ValueError, match=r"fidelity.rungs\[0\].split: heldout, but data.heldout_subset is not set"):
        load_study_spec(spec_copy(tiny_setting, tmp_path, **rungs))
    held_out = ["video_test_0000001", "video_test_0000003"]
    spec = load_study_spec(spec_copy(tiny_setting, tmp_path, data=held_out_copy(tiny_setting, tmp_path, held_out),
                                     **rungs)).resolved()
    runner = TrialRunner(spec)
    outside = torch.get_num_threads()
    with runner.computing():  # alignment and scoring with the spec's threads, not torch's default
        assert torch.get_num_threads() == spec.train.threads == 1
    assert torch.get_num_threads() == outside
    drops = runner.encoding.blocks[:1]
    outcome = attempt(runner, Work(runner.encoding.encode(drops), "trial-0", 0))
    assert outcome.state == TrialState.RUNNING and outcome.attrs["rung"]["split"] == "heldout"
    videos = runner.experiment.dataset("heldout")
    assert [v.video_id for v in videos.videos] == held_out
    unaligned = runner.base.without_blocks(drops)
    assert outcome.attrs["rung"]["average_mAP"] == evaluate_model(unaligned, videos, spec.eval.tious).average_mAP
    # A dataset without the subset the data section names is refused, naming the field.
    missing = spec.model_copy(update={"data": spec.data.model_copy(update={"heldout_subset": "holdout"})})
    with pytest.raises(DataFormatError, match="data.heldout_subset: .* no videos in subset 'holdout'"):
        Experiment.from_spec(missing)


@pytest.mark.parametrize("runner_kind", ["local", "ray"])
def test_a_multi_fidelity_study_runs_under_both_runners(tiny_setting, tmp_path, runner_kind, request):
    if runner_kind == "ray":
        request.getfixturevalue("ray_cluster")
    path = spec_copy(tiny_setting, tmp_path, n_trials=3, seeded_start={"trials": 1, "temperature": 0.5},
                     runner={"kind": runner_kind, "max_concurrent": 2, "resources": {"cpu": 1}}, **MF)
    study = launch(load_study_spec(path), NO_BUDGETS, show_progress=False)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    states = [(t.number, t.state.name, t.user_attrs.get("prune_reason") or t.user_attrs.get("fail_reason"))
              for t in study.trials]
    assert len(complete) == 3 and not study.get_trials(states=(TrialState.FAIL,)), states
    assert study.trials[2].user_attrs.get("seeded_start") is True
    for trial in complete:
        rungs = trial.user_attrs["rungs"]
        if trial.user_attrs.get("baseline"):  # the free rung, then the full alignment, under either runner
            assert [(r["rung"], r["epochs"], r["split"]) for r in rungs] == [(0, 0, "train"), (2, 2, "test")]
            continue
        assert [(r["rung"], r["epochs"], r["split"]) for r in rungs] == [(0, 0, "train"), (1, 1, "train"), (2, 2, "test")]
        assert rungs[-1]["average_mAP"] == trial.values[0] and not math.isnan(rungs[0]["average_mAP"])
        # Epochs spent: at most each drop at rung 1 and at the full rung (cached prefixes cost nothing).
        assert 0 <= trial.user_attrs["alignment_compute"]["epochs"] <= 3 * len(trial.user_attrs["drops"])
    # A seeded trial the same as a greedy one is a repeat: pruned, at no trial slot. No trial stops
    # at a rung (min_peers is above the study's size); one may stop before alignment.
    for trial in study.get_trials(states=(TrialState.PRUNED,)):
        assert "repeat_of" in trial.user_attrs or trial.user_attrs["pruned_at"] == "before alignment", states
