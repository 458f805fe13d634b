"""The demo study searched twice, with 1 and with 2 Ray workers: what the search finds against the
greedy Progressive Block Drop chain, what the caches save, and how many trials an hour it runs.

Each launch runs `studies/demo.yaml` (reusing the trained base model it names, so no training is
timed) into its own storage and artifact directory under SCRATCH, with `runner.max_concurrent`
set to 1 or 2 (`runner.resources` as in the spec). From each stored study it reports:

- hypervolume of the search trials' front against the greedy chain's at the same number of
  alignment steps spent: the greedy chain's steps (one per drop while it is computed, plus what its
  enqueued trials ran) against the search trials taken in trial order while their cumulative
  `alignment_steps_run` stays within that; reference point from `search.pareto.reference_point`
  (the base model's latency and mAP minus the spec's tolerance; `search_vs_baseline.py` is the
  comparison against both baseline families per unit of compute);
- the search schedules no greedy trial dominates (in mAP and latency, the study's objectives, and
  in mAP and MACs, which no timing noise moves);
- alignment steps the prefix cache saved (a drop step per block plus a channel step, without the
  cache, against `alignment_steps_run`), latency measurements the latency cache saved, and repeated
  schedules the result cache completed without running them;
- trials per hour over the trial phase (first trial start to last trial end) and over the whole
  `tadprune study launch` process (imports, base-model evaluation and latency, greedy chain, Ray
  start-up, trials), each launch in a fresh process.

    python benchmarks/search_demo.py [--scratch DIR] [--n-trials 14] [--workers 1 2] [--report-only]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from itertools import accumulate
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from common import add_scratch_arguments, markdown_table, scratch_dir
from search.pareto import (SEARCH, ReferencePoint, complete_trials, family, front, hypervolume, latency_ms,
                           pareto_report, reference_point)
from search.spec import StudySpec, load_study_spec
from search.study import BASELINE_ATTR, GREEDY, storage_for

ROOT = Path(__file__).resolve().parents[1]


def scratch_spec(spec: StudySpec, run_dir: Path, workers: int, n_trials: int) -> StudySpec:
    """The spec with its own storage and artifacts under `run_dir`, `workers` concurrent trials,
    and the repository's data and base model (whatever the working directory)."""
    raw = spec.model_dump()
    raw["data"]["root"] = ROOT / spec.data.root
    raw.update(base_model=ROOT / spec.base_model, storage=f"sqlite:///{run_dir / 'study.db'}",
               artifacts=run_dir / "artifacts", n_trials=n_trials)
    raw["runner"]["max_concurrent"] = workers
    return StudySpec.model_validate(raw)


def timed_launch(spec: StudySpec, run_dir: Path) -> float:
    """`tadprune study launch` on the spec (written to run_dir/spec.yaml) in a fresh process, as a
    user runs it, so neither launch inherits the other's Ray or random state. Its wall time is
    kept in run_dir/launch.json; its output in run_dir/launch.log."""
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: give a new --scratch, or --report-only to read it")
    if not (spec.base_model / "model.safetensors").exists():
        raise SystemExit(f"{spec.base_model}: no trained base model; run `make demo` first")
    run_dir.mkdir(parents=True)
    spec_path = run_dir / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    command = [sys.executable, "-m", "search.cli", "study", "launch", str(spec_path), "--quiet"]
    with open(run_dir / "launch.log", "w") as log:
        start = time.perf_counter()
        done = subprocess.run(command, check=False, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wall_s = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"launch failed (status {done.returncode}); see {run_dir / 'launch.log'}")
    (run_dir / "launch.json").write_text(json.dumps({"wall_s": wall_s}))
    return wall_s


def steps_without_cache(trial: FrozenTrial) -> int:
    return len(trial.user_attrs["drops"]) + (1 if trial.user_attrs["channel_ratios"] else 0)


def steps_run(trial: FrozenTrial) -> int:
    return trial.user_attrs["cache"]["alignment_steps_run"]


def result_hit(trial: FrozenTrial) -> bool:
    """A repeat of a finished schedule, completed from the result cache."""
    return trial.user_attrs["cache"].get("result_hit", False)


def within_steps(trials: list[FrozenTrial], budget: int) -> list[FrozenTrial]:
    """The trials, in trial order, while their cumulative alignment steps stay within `budget`."""
    taken, spent = [], 0
    for trial in sorted(trials, key=lambda t: t.number):
        spent += steps_run(trial)
        if spent > budget:
            break
        taken.append(trial)
    return taken


def hypervolume_by_steps(trials: list[FrozenTrial], reference: ReferencePoint) -> list[tuple[int, float]]:
    """(cumulative alignment steps, hypervolume so far) after each trial, in trial order."""
    ordered = sorted(trials, key=lambda t: t.number)
    steps = accumulate(steps_run(t) for t in ordered)
    return [(s, hypervolume(ordered[:i + 1], reference)) for i, s in enumerate(steps)]


def not_dominated_in_macs(search: list[FrozenTrial], greedy: list[FrozenTrial]) -> list[FrozenTrial]:
    """Search trials no greedy trial dominates in (mAP, MACs): the noise-free twin of the latency test."""
    def dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
        mine, theirs = (a.values[0], -a.user_attrs["macs"]), (b.values[0], -b.user_attrs["macs"])
        return all(x >= y for x, y in zip(mine, theirs)) and mine != theirs
    return [t for t in search if not any(dominates(g, t) for g in greedy)]


def describe(trial: FrozenTrial) -> dict:
    return {"trial": trial.number, "drops": [d.rsplit(".", 1)[-1] for d in trial.user_attrs["drops"]],
            "channel_ratios": trial.user_attrs["channel_ratios"], "average_mAP": round(trial.values[0], 4),
            "latency_ms": round(latency_ms(trial), 2), "mmacs": round(trial.user_attrs["macs"] / 1e6, 1)}


def summarise(storage_url: str, study_name: str, workers: int, wall_s: float) -> dict:
    study = optuna.load_study(study_name=study_name, storage=storage_for(storage_url))
    trials = study.get_trials(deepcopy=False)
    complete = complete_trials(study)  # latency: re-timed at the end of the launch
    greedy = [t for t in complete if t.user_attrs.get(BASELINE_ATTR) == GREEDY]
    search = [t for t in complete if family(t) == SEARCH]
    reference = reference_point(study)
    greedy_steps = len(study.user_attrs["greedy_chain"]) + sum(steps_run(t) for t in greedy)
    matched = within_steps(search, greedy_steps)
    report = pareto_report(study)
    phase_s = (max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)).total_seconds()
    by_number = {t.number: t for t in search}
    return {
        "workers": workers, "trials": len(trials), "complete": len(complete),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "launch_wall_s": round(wall_s, 1), "trial_phase_s": round(phase_s, 1),
        "trials_per_hour": round(3600 * len(complete) / phase_s, 1),
        "trials_per_hour_whole_launch": round(3600 * len(complete) / wall_s, 1),
        "reference_point": {"average_mAP": round(reference.average_mAP, 4), "latency_ms": round(reference.cost, 3)},
        "greedy_alignment_steps": greedy_steps, "search_trials_within_those_steps": [t.number for t in matched],
        "hypervolume_search_matched": hypervolume(matched, reference),
        "hypervolume_greedy": hypervolume(greedy, reference),
        "hypervolume_search_all": hypervolume(search, reference),
        "search_alignment_steps_all": sum(steps_run(t) for t in search),
        "search_hypervolume_by_steps": hypervolume_by_steps(search, reference),
        "greedy_front": [describe(t) for t in front(greedy)],
        "search_front_matched": [describe(t) for t in front(matched)],
        "not_dominated_by_greedy": [describe(by_number[n]) for n in report.undominated_by_baselines],
        "not_dominated_by_greedy_in_macs": [describe(t) for t in not_dominated_in_macs(search, greedy)],
        "alignment_steps_without_cache": sum(steps_without_cache(t) for t in complete),
        "alignment_steps_run": sum(steps_run(t) for t in complete),
        "latency_measurements": sum(not t.user_attrs["cache"]["latency_hit"] for t in complete),
        "latency_cache_hits": sum(t.user_attrs["cache"]["latency_hit"] and not result_hit(t) for t in complete),
        "result_cache_hits": sum(result_hit(t) for t in complete),
    }


def schedule_text(point: dict) -> str:
    drops = " > ".join(point["drops"]) or "no drop"
    ratios = ", ".join(f"{k}={v}" for k, v in point["channel_ratios"].items())
    channels = f" + channels {ratios}" if ratios else ""
    return (f"#{point['trial']} {drops}{channels} "
            f"(mAP {point['average_mAP']}, {point['latency_ms']} ms, {point['mmacs']} MMACs)")


def schedules_text(points: list[dict]) -> str:
    return "; ".join(schedule_text(p) for p in points) or "none"


def markdown(rows: list[dict]) -> str:
    columns = ["workers", "launch s", "trial phase s", "trials/h (phase)", "trials/h (launch)", "greedy steps",
               "search trials within them", "HV search (matched)", "HV greedy", "HV search (all trials; steps)",
               "align steps run / without cache", "latency measured / cache hits", "repeats from result cache"]
    cells = []
    for r in rows:
        cells.append([r["workers"], r["launch_wall_s"], r["trial_phase_s"], r["trials_per_hour"],
                      r["trials_per_hour_whole_launch"], r["greedy_alignment_steps"],
                      len(r["search_trials_within_those_steps"]), f"{r['hypervolume_search_matched']:.3f}",
                      f"{r['hypervolume_greedy']:.3f}", f"{r['hypervolume_search_all']:.3f}; {r['search_alignment_steps_all']}",
                      f"{r['alignment_steps_run']} / {r['alignment_steps_without_cache']}",
                      f"{r['latency_measurements']} / {r['latency_cache_hits']}", r["result_cache_hits"]])
    lines = [markdown_table(columns, cells)]
    for r in rows:
        ref = r["reference_point"]
        lines += ["", f"{r['workers']} worker(s), reference point (mAP {ref['average_mAP']}, latency {ref['latency_ms']} ms):",
                  f"- greedy front: {schedules_text(r['greedy_front'])}",
                  f"- search front within the greedy steps (trials {r['search_trials_within_those_steps']}): "
                  + schedules_text(r["search_front_matched"]),
                  "- search hypervolume after each search trial (cumulative steps: HV): "
                  + ", ".join(f"{steps}: {hv:.2f}" for steps, hv in r["search_hypervolume_by_steps"]),
                  f"- search schedules no greedy trial dominates: {schedules_text(r['not_dominated_by_greedy'])}",
                  "- the same in (mAP, MACs) instead of (mAP, latency): "
                  + schedules_text(r["not_dominated_by_greedy_in_macs"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "studies" / "demo.yaml")
    add_scratch_arguments(parser, "the studies")
    parser.add_argument("--n-trials", type=int, default=14)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="runner.max_concurrent per launch")
    args = parser.parse_args()
    scratch = scratch_dir(parser, args, "search-demo-")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = load_study_spec(args.spec)
    rows = []
    for workers in args.workers:
        run_dir = scratch / f"workers-{workers}"
        spec = scratch_spec(base, run_dir, workers, args.n_trials)
        if args.report_only:
            wall_s = json.loads((run_dir / "launch.json").read_text())["wall_s"]
        else:
            print(f"launching {spec.name} with {workers} worker(s) into {run_dir}", flush=True)
            wall_s = timed_launch(spec, run_dir)
        rows.append(summarise(spec.storage_url, spec.name, workers, wall_s))
    print(markdown(rows))
    print(json.dumps({"scratch": str(scratch), "runs": rows}))


if __name__ == "__main__":
    main()
