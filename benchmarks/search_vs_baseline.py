"""The search against the paper's combination per unit of alignment compute, on the bench task
(issue 13): with and without multi-fidelity, over several seeds; and the bench task's properties.

For each seed, two studies of `studies/bench.yaml` (the trained base model it names is reused, so
no training is counted), each in its own storage and artifact directory under SCRATCH, run by
`tadprune study launch` in a fresh process, `--parallel` at a time: `full` (every trial aligns
fully: the spec without `fidelity`) and `mf` (the spec's multi-fidelity). Both have the same
baselines (the greedy chain and the chain followed by each channel ratio) and seeded start.

Compute is alignment epochs x training videos, as each trial records it (`alignment_compute`),
plus wall seconds. The baselines' compute is the greedy chain's (a study attribute) plus what their
trials ran (the channel step of `greedy+channels`). The search's trials (complete and pruned) are
taken in the order they ended; its hypervolume at compute C is that of its complete trials whose
cumulative compute stays within C. Reported per study:

- `HV search / baselines at equal compute`: the search's hypervolume at the baselines' compute
  over the hypervolume of the union of both families (goal >= 1.10);
- the same at the end of the study (all its compute);
- for `mf`, the compute at which it first reaches the `full` study's final hypervolume (same
  seed), as a fraction of the `full` study's search compute (goal <= 1/3). Baseline trials skip
  the rungs that align (`search.fidelity`, rule 3), so both studies' baselines cost the same.

Cost axis: MACs (a count no timing noise moves: the studies run side by side on a shared 2-core
machine, where latency medians move by tens of percent), reference point (base mAP minus
`pareto.map_tolerance`, base MACs); the latency figures (reference: base mAP minus the tolerance,
base latency) are given beside them.

The bench task's properties, measured on the base model with the study's alignment: test average
mAP; the test mAP with each droppable block dropped alone, without alignment; the greedy chain's
first two blocks dropped and aligned in both orders; and the chain's three blocks dropped
progressively (one aligned step each) against all at once (one alignment of three steps' epochs),
the paper's 70.47 vs 68.91 mAP@0.5 comparison.

    nice python benchmarks/search_vs_baseline.py [--scratch DIR] [--seeds 0 1 2] [--n-trials 19]
        [--align-epochs N] [--parallel 2] [--report-only]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState

from common import add_scratch_arguments, markdown_table, scratch_dir
from pruning.alignment import align
from pruning.progressive import drop_step
from search.objective import COMPUTE, TrialRunner
from search.pareto import SEARCH, ReferencePoint, family, hypervolume, latency_ms, macs, reference_point
from search.spec import StudySpec, load_study_spec
from search.study import storage_for
from tadmodels.profile import model_macs

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("full", "mf")


def scratch_spec(spec: StudySpec, run_dir: Path, seed: int, n_trials: int, variant: str,
                 align_epochs: int | None) -> StudySpec:
    """The spec for one study: its own storage and artifacts under `run_dir`, the seed, the local
    runner, the repository's data and base model, no multi-fidelity for `full`."""
    raw = spec.model_dump()
    raw["data"]["root"] = ROOT / spec.data.root
    raw.update(base_model=ROOT / spec.base_model, storage=f"sqlite:///{run_dir / 'study.db'}",
               artifacts=run_dir / "artifacts", n_trials=n_trials, seed=seed, runner={"kind": "local"})
    if align_epochs is not None:
        raw["alignment"]["epochs"] = align_epochs
    if variant == "full":
        raw["fidelity"] = None
    return StudySpec.model_validate(raw).resolved()


def start_launch(spec: StudySpec, run_dir: Path) -> tuple[subprocess.Popen, float]:
    """`tadprune study launch` on the spec (written to run_dir/spec.yaml) in a fresh process, its
    output in run_dir/launch.log."""
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: give a new --scratch, or --report-only to read it")
    if not (spec.base_model / "model.safetensors").exists():
        raise SystemExit(f"{spec.base_model}: no trained base model; run `tadprune study launch studies/bench.yaml` "
                         "once (it trains it)")
    run_dir.mkdir(parents=True)
    spec_path = run_dir / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    log = open(run_dir / "launch.log", "w")
    command = [sys.executable, "-m", "search.cli", "study", "launch", str(spec_path), "--quiet"]
    # Its own temporary directory, hence its own device lock (`search.cache.DeviceLock`): studies
    # side by side (and other users of the host) would otherwise hold each other's timings back,
    # each waiting for a moment when no other trial computes. The figures' cost axis is MACs.
    (run_dir / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(run_dir / "tmp")}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), time.perf_counter()


def run_all(jobs: list[tuple[StudySpec, Path]], parallel: int) -> None:
    """Every launch, `parallel` at a time; each one's wall time goes to run_dir/launch.json."""
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            spec, run_dir = pending.pop(0)
            print(f"launching {run_dir.name}", flush=True)
            running.append((*start_launch(spec, run_dir), run_dir))
        time.sleep(2)
        for job in list(running):
            process, start, run_dir = job
            if process.poll() is None:
                continue
            running.remove(job)
            if process.returncode != 0:
                raise SystemExit(f"launch failed (status {process.returncode}); see {run_dir / 'launch.log'}")
            (run_dir / "launch.json").write_text(json.dumps({"wall_s": time.perf_counter() - start}))
            print(f"{run_dir.name} done in {time.perf_counter() - start:.0f} s", flush=True)


def video_epochs(trial: FrozenTrial) -> int:
    return trial.user_attrs.get(COMPUTE, {}).get("video_epochs", 0)


def search_curve(search: list[FrozenTrial], references: dict) -> list[dict]:
    """After each search trial, in the order they ended: cumulative compute and the hypervolume of
    the complete ones so far, per cost axis."""
    ordered = sorted(search, key=lambda t: t.datetime_complete)
    curve, spent, done = [], 0, []
    for trial in ordered:
        spent += video_epochs(trial)
        if trial.state == TrialState.COMPLETE:
            done.append(trial)
        curve.append({"video_epochs": spent, **{axis: hypervolume(done, ref, cost) for axis, (ref, cost) in references.items()}})
    return curve


def at_compute(curve: list[dict], budget: float, axis: str) -> float:
    """The search's hypervolume within `budget` video-epochs."""
    return max([point[axis] for point in curve if point["video_epochs"] <= budget], default=0.0)


def reached_at(curve: list[dict], target: float, axis: str) -> int | None:
    """The compute at which the curve first reaches `target`, or None."""
    return next((point["video_epochs"] for point in curve if point[axis] >= target), None)


def base_macs(spec: StudySpec) -> int:
    runner = TrialRunner(spec)
    return model_macs(runner.base, spec.latency.positions or spec.data.max_seq_len)


def launch_wall_s(run_dir: Path) -> float | None:
    """The launch's wall time; None when it was stopped before it finished (its study is read as it is)."""
    path = run_dir / "launch.json"
    return json.loads(path.read_text())["wall_s"] if path.exists() else None


def summarise(run_dir: Path, base_mac_count: int) -> dict:
    spec = load_study_spec(run_dir / "spec.yaml")
    study = optuna.load_study(study_name=spec.name, storage=storage_for(spec.storage_url, create=False))
    trials = study.get_trials(deepcopy=False)
    ended = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    baselines = [t for t in ended if family(t) != SEARCH]
    search = [t for t in ended if family(t) == SEARCH]
    latency_ref = reference_point(study, spec.pareto)
    tolerance = spec.pareto.map_tolerance
    macs_ref = ReferencePoint(study.user_attrs["base_map"] - tolerance, base_mac_count,
                              f"mAP {study.user_attrs['base_map']:.4f} - {tolerance:g}, base MACs {base_mac_count}")
    references = {"macs": (macs_ref, macs), "latency": (latency_ref, latency_ms)}
    baseline_compute = study.user_attrs["greedy_alignment_compute"]["video_epochs"] + sum(map(video_epochs, baselines))
    curve = search_curve(search, references)
    complete_baselines = [t for t in baselines if t.state == TrialState.COMPLETE]
    pruned = [t for t in search if t.state == TrialState.PRUNED]
    return {
        "run": run_dir.name, "launch_wall_s": launch_wall_s(run_dir),
        "alignment_s": sum(t.user_attrs.get(COMPUTE, {}).get("seconds", 0.0) for t in ended)
        + study.user_attrs["greedy_alignment_compute"]["seconds"],
        "search_complete": len(search) - len(pruned),
        "pruned_before_alignment": sum(t.user_attrs.get("pruned_at") == "before alignment" for t in pruned),
        "pruned_at_rung": sum(isinstance(t.user_attrs.get("pruned_at"), int) for t in pruned),
        "repeats": sum("repeat_of" in t.user_attrs for t in pruned),
        "baseline_video_epochs": baseline_compute, "search_video_epochs": curve[-1]["video_epochs"] if curve else 0,
        "hv_baselines": {axis: hypervolume(complete_baselines, ref, cost) for axis, (ref, cost) in references.items()},
        "hv_search_at_baseline_compute": {axis: at_compute(curve, baseline_compute, axis) for axis in references},
        "hv_search_final": {axis: curve[-1][axis] if curve else 0.0 for axis in references},
        "reference": {axis: ref.how for axis, (ref, _) in references.items()}, "curve": curve,
        "chain": study.user_attrs["greedy_chain"],
    }


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def properties(spec: StudySpec, chain: list[str]) -> dict:
    """The bench task's properties (module docstring), test split, in points."""
    runner = TrialRunner(spec)
    experiment, base, alignment = runner.experiment, runner.base, spec.alignment

    def score(model) -> dict:
        metrics = experiment.evaluate(model, profile=False)
        return {"average_mAP": 100 * metrics["average_mAP"], "mAP@0.5": 100 * metrics["per_tiou"][metrics["tious"].index(0.5)]}

    def progressive(blocks: list[str]):
        model = base
        for block in blocks:
            model = drop_step(experiment, base, model, block, alignment)
        return model

    base_score = score(base)
    single = {block: base_score["average_mAP"] - score(base.without_blocks([block]))["average_mAP"]
              for block in runner.encoding.blocks}
    first_two = chain[:2]
    orders = {" > ".join(order): score(progressive(order)) for order in (first_two, first_two[::-1])}
    epochs = alignment.epochs * len(chain)
    at_once = align(base.without_blocks(chain), base, experiment, alignment.model_copy(update={"epochs": epochs}))
    return {"base": base_score, "single_drop_cost": single, "orders": orders,
            "progressive": {"blocks": chain, "epochs": epochs, **score(progressive(chain))},
            "all_at_once": {"blocks": chain, "epochs": epochs, **score(at_once)},
            "alignment_epochs_per_step": alignment.epochs}


def report(summaries: dict[tuple[int, str], dict], props: dict | None) -> str:
    columns = ["seed", "study", "launch s", "search complete / pruned before alignment / at a rung / repeats",
               "baseline compute (video-epochs)", "search compute (video-epochs)", "HV baselines (MACs)",
               "HV search at baseline compute / baselines (MACs)", "same, latency", "HV search at end / baselines (MACs)",
               "mf: compute to reach full's final HV / full's compute"]
    rows = []
    for (seed, variant), s in sorted(summaries.items()):
        full = summaries.get((seed, "full"))
        reach = None
        if variant == "mf" and full is not None:
            at = reached_at(s["curve"], full["hv_search_final"]["macs"], "macs")
            reach = f"{at} / {full['search_video_epochs']} = {fmt(ratio(at, full['search_video_epochs']))}" if at is not None \
                else f"not reached ({s['hv_search_final']['macs'] / full['hv_search_final']['macs']:.3f} of it)"
        rows.append([seed, variant, fmt(s["launch_wall_s"], 0) + ("" if s["launch_wall_s"] else " (stopped)"),
                     f"{s['search_complete']} / {s['pruned_before_alignment']} / {s['pruned_at_rung']} / {s['repeats']}",
                     s["baseline_video_epochs"], s["search_video_epochs"],
                     f"{s['hv_baselines']['macs']:.4g}",
                     fmt(ratio(s["hv_search_at_baseline_compute"]["macs"], s["hv_baselines"]["macs"])),
                     fmt(ratio(s["hv_search_at_baseline_compute"]["latency"], s["hv_baselines"]["latency"])),
                     fmt(ratio(s["hv_search_final"]["macs"], s["hv_baselines"]["macs"])), reach or "-"])
    lines = [markdown_table(columns, rows), ""]
    first = next(iter(summaries.values()))
    lines += [f"reference points: MACs axis {first['reference']['macs']}; latency axis {first['reference']['latency']}",
              f"greedy chain: {' > '.join(first['chain'])}"]
    if props:
        lines += ["", f"bench task (test split, %): base average mAP {props['base']['average_mAP']:.2f}, mAP@0.5 "
                  f"{props['base']['mAP@0.5']:.2f}; alignment {props['alignment_epochs_per_step']} epochs per step",
                  "single block dropped without alignment, average mAP lost (points): "
                  + ", ".join(f"{b.rsplit('.', 2)[-2]}.{b.rsplit('.', 1)[-1]} {cost:.2f}"
                              for b, cost in sorted(props["single_drop_cost"].items(), key=lambda kv: kv[1])),
                  "the chain's first two blocks in both orders, aligned after each drop: "
                  + "; ".join(f"{order}: average {s['average_mAP']:.2f}, @0.5 {s['mAP@0.5']:.2f}"
                              for order, s in props["orders"].items()),
                  f"3 blocks progressively vs at once ({props['progressive']['epochs']} epochs in all each): "
                  f"average {props['progressive']['average_mAP']:.2f} vs {props['all_at_once']['average_mAP']:.2f}, "
                  f"mAP@0.5 {props['progressive']['mAP@0.5']:.2f} vs {props['all_at_once']['mAP@0.5']:.2f} "
                  "(paper, VideoMAE-S THUMOS14 mAP@0.5: 70.47 vs 68.91)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "studies" / "bench.yaml")
    add_scratch_arguments(parser, "the studies")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, default=None, help="complete trials per study (default: the spec's)")
    parser.add_argument("--align-epochs", type=int, default=None, help="alignment epochs per step (default: the spec's)")
    parser.add_argument("--parallel", type=int, default=2, help="launches at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the properties")
    parser.add_argument("--no-properties", action="store_true")
    args = parser.parse_args()
    scratch = scratch_dir(parser, args, "search-vs-baseline-")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(args.threads)
    base_spec = load_study_spec(args.spec)
    specs = {(seed, variant): scratch_spec(base_spec, scratch / f"seed{seed}-{variant}", seed,
                                           args.n_trials or base_spec.n_trials, variant, args.align_epochs)
             for seed in args.seeds for variant in VARIANTS}
    if not args.report_only:
        run_all([(spec, scratch / f"seed{seed}-{variant}") for (seed, variant), spec in specs.items()], args.parallel)
    mac_count = base_macs(next(iter(specs.values())))
    summaries = {key: summarise(scratch / f"seed{key[0]}-{key[1]}", mac_count) for key in specs}
    props = None
    if not args.no_properties:
        props_path = scratch / "properties.json"
        if not props_path.exists():
            props_path.write_text(json.dumps(properties(next(iter(specs.values())), next(iter(summaries.values()))["chain"])))
        props = json.loads(props_path.read_text())
    print(f"scratch: {scratch}; torch {torch.__version__}")
    print(report(summaries, props))
    (scratch / "summary.json").write_text(json.dumps({f"seed{s}-{v}": summary for (s, v), summary in summaries.items()}))


if __name__ == "__main__":
    main()
