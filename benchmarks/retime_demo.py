"""One demo study launched in stages: the same architectures timed again at the end of every
launch (how far those figures spread), and the front before and after re-timing.

The study (`studies/demo.yaml`, its own data, base model, storage and artifacts under SCRATCH)
is launched once per stage with a growing `n_trials` (default 3, 6, 9, 12, 14: the first launch
trains the base model, runs the groundwork and the greedy chain's 3 trials), each launch a
`tadprune study launch` in a fresh process. Every launch ends by re-timing the base model, the
greedy chain and the front together (`search.retime`), so the base model and the greedy chain's
architectures are timed once per stage, at different moments of the study, by the study's timing
service. `--retimes N` adds N rounds of `tadprune study pareto --retime` after the launches (or,
with `--stages` given no value, to a study already in SCRATCH). Reported from the stored study:

- per architecture timed in every round: each round's own median and the figure the study uses
  (the base model's latency from the groundwork over the round's paired speed-up, `search.timing`),
  and the spread of each as the largest distance of a round's value from the median of the rounds,
  in percent of it; the 1-minute load average of each round;
- the front (trials, mAP, latency) from the first figures (each trial's objective value, measured
  once when its architecture first ran) and from the last re-timing, and the search trials no
  greedy trial dominates in either.

    nice python benchmarks/retime_demo.py [--scratch DIR] [--stages 3 6 9 12 14] [--retimes 0]
        [--runner ray|local] [--report-only]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from common import add_scratch_arguments, markdown_table, scratch_dir
from search.pareto import RETIMED, complete_trials, front, latency_ms, not_dominated_by
from search.spec import StudySpec, load_study_spec
from search.study import BASELINE_ATTR, GREEDY, storage_for

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = "retiming_rounds.json"  # in SCRATCH: each launch's re-timing, as the study stored it


def scratch_spec(spec: StudySpec, scratch: Path, runner: str) -> StudySpec:
    """The spec with its data, base model, storage and artifacts under `scratch`, and `runner`."""
    raw = spec.model_dump()
    raw["data"]["root"] = scratch / "data"
    raw["runner"]["kind"] = runner
    raw.update(base_model=scratch / "base", storage=f"sqlite:///{scratch / 'study.db'}", artifacts=scratch / "artifacts")
    return StudySpec.model_validate(raw)


def run_stage(command: list[str], scratch: Path) -> float:
    """`tadprune COMMAND...` in a fresh process, as a user runs it; its output appended to launch.log."""
    command = [sys.executable, "-m", "search.cli", *command]
    with open(scratch / "launch.log", "a") as log:
        log.write(f"\n=== {' '.join(command)}\n")
        log.flush()
        start = time.perf_counter()
        done = subprocess.run(command, check=False, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (status {done.returncode}); see {scratch / 'launch.log'}")
    return time.perf_counter() - start


def spread_percent(values: list[float]) -> float:
    """Largest distance from the median, in percent of the median."""
    middle = statistics.median(values)
    return 100 * max(abs(v - middle) for v in values) / middle


def architecture_names(study: optuna.Study) -> dict[str, str]:
    """Compute signature -> a readable name: the base model, or a trial's schedule."""
    names = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        drops = " > ".join(d.rsplit(".", 1)[-1] for d in trial.user_attrs["drops"]) or "no drop"
        ratios = "".join(f" + {100 * r:g}% channels" for r in set(trial.user_attrs["channel_ratios"].values()))
        kind = "greedy" if trial.user_attrs.get(BASELINE_ATTR) == GREEDY else "search"
        names.setdefault(trial.user_attrs["compute_signature"], f"{drops}{ratios} ({kind})")
    return names


def repeat_table(rounds: list[dict], study: optuna.Study) -> str:
    """Architectures timed in every round: medians per round, spread of medians and of speed-ups."""
    names = architecture_names(study)
    base = rounds[-1]["base_signature"]
    names[base] = "base model"
    every = [s for s in rounds[-1]["by_signature"] if all(s in r["by_signature"] for r in rounds)]
    header = ["architecture", "first ms"] + [f"round {r['round']}: median, figure ms" for r in rounds] + [
        "spread of medians", "spread of figures"]
    first = {t.user_attrs["compute_signature"]: t.values[1]
             for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    first[base] = study.user_attrs["base_latency_ms"]
    rows = []
    for signature in sorted(every, key=lambda s: (s != base, names.get(s, s))):
        medians = [r["by_signature"][signature]["median_ms"] for r in rounds]
        figures = [r["by_signature"][signature]["latency_ms"] for r in rounds]
        rows.append([names.get(signature, signature), f"{first[signature]:.2f}"]
                    + [f"{m:.2f}, {f:.2f}" for m, f in zip(medians, figures)]
                    + [f"{spread_percent(medians):.1f}%", "-" if signature == base else f"{spread_percent(figures):.1f}%"])
    rows.append(["load avg 1 min", ""] + [f"{r['load_avg_1m']:.2f}" for r in rounds] + ["", ""])
    rows.append(["rounds (stopped by)", ""] + [f"{r['repeats']} ({r['stopped_by']})" for r in rounds] + ["", ""])
    return markdown_table(header, rows)


def front_text(trials: list[FrozenTrial]) -> str:
    return "; ".join(f"#{t.number} {t.values[0]:.4f} mAP {latency_ms(t):.2f} ms" for t in front(trials))


def split(trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(greedy chain's trials, search trials)."""
    greedy = [t for t in trials if t.user_attrs.get(BASELINE_ATTR) == GREEDY]
    return greedy, [t for t in trials if t.user_attrs.get(BASELINE_ATTR) != GREEDY]


def report(scratch: Path, spec: StudySpec) -> str:
    study = optuna.load_study(study_name=spec.name, storage=storage_for(spec.storage_url))
    rounds = json.loads((scratch / ROUNDS).read_text())
    # Trials as stored carry no re-timed figure, so `latency_ms` reads their first one.
    first = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    retimed = complete_trials(study)
    undominated = {name: [t.number for t in not_dominated_by(search, greedy)]
                   for name, (greedy, search) in (("first", split(first)), ("re-timed", split(retimed)))}
    return "\n".join([repeat_table(rounds, study), "",
                      f"front, first figures: {front_text(first)}",
                      f"front, re-timed (round {study.user_attrs[RETIMED]['round']}): {front_text(retimed)}",
                      f"search trials no greedy trial dominates: {undominated}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "studies" / "demo.yaml")
    add_scratch_arguments(parser, "the study")
    parser.add_argument("--stages", type=int, nargs="*", default=[3, 6, 9, 12, 14], help="n_trials of each launch")
    parser.add_argument("--retimes", type=int, default=0,
                        help="then re-time this many times more with `study pareto --retime` (no new trials)")
    parser.add_argument("--runner", choices=["ray", "local"], default="ray",
                        help="local: trials and timing in the launch's process (Ray runs its workers at niceness 15, "
                             "which a loaded shared machine starves)")
    args = parser.parse_args()
    scratch = scratch_dir(parser, args, "retime-demo-")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = scratch_spec(load_study_spec(args.spec), scratch, args.runner)
    if not args.report_only:
        if (scratch / "study.db").exists() and args.stages:
            raise SystemExit(f"{scratch} holds a study: give a new --scratch, --stages with no value and --retimes "
                             "to re-time it further, or --report-only to read it")
        scratch.mkdir(parents=True, exist_ok=True)
        spec_path = scratch / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        stages = [["study", "launch", str(spec_path), "--n-trials", str(n), "--quiet"] for n in args.stages]
        stages += [["study", "pareto", "--storage", spec.storage_url, "--study", spec.name, "--retime", "--json",
                    "--out", str(scratch / "front")]] * args.retimes
        rounds = json.loads((scratch / ROUNDS).read_text()) if (scratch / ROUNDS).exists() else []
        for command in stages:
            wall_s = run_stage(command, scratch)
            study = optuna.load_study(study_name=spec.name, storage=storage_for(spec.storage_url))
            rounds.append({**study.user_attrs[RETIMED], "stage": " ".join(command[:2] + command[3:5]),
                           "wall_s": round(wall_s, 1)})
            print(f"{rounds[-1]['stage']}: {wall_s:.0f} s, re-timing round {rounds[-1]['round']}", flush=True)
            (scratch / ROUNDS).write_text(json.dumps(rounds, indent=1))
    print(f"scratch: {scratch}")
    print(report(scratch, spec))


if __name__ == "__main__":
    main()
