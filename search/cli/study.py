"""`tadprune study ...`: launch a search, follow it, read its Pareto front, export a schedule."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, group, user_input_errors

app = group("Search studies: launch, status, Pareto front, export.")


StorageOption = Annotated[str, typer.Option(help="SQLAlchemy URL of the study storage, e.g. sqlite:///studies/demo.db")]
StudyOption = Annotated[str, typer.Option("--study", help="study name")]


@app.command("launch")
def study_launch(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="study spec YAML")],
    storage: Annotated[Optional[str], typer.Option(help="override the spec's storage URL")] = None,
    n_trials: Annotated[Optional[int], typer.Option(
        min=1, help="complete trials the study should have in all, counting every earlier launch and every "
                    "driver; failed trials do not count")] = None,
    timeout: Annotated[Optional[float], typer.Option(min=1, help="stop starting trials after this many seconds")] = None,
    runner: Annotated[Optional[str], typer.Option(help="ray or local (overrides the spec)")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (else RAY_ADDRESS, else a local Ray)")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option(help="latency budget, stored as an Optuna constraint")] = None,
    min_map: Annotated[Optional[float], typer.Option(help="mAP floor (fraction), stored as an Optuna constraint")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress, no Optuna or Ray messages: only the final status")] = False,
) -> None:
    """Create or resume a study: train the base model if missing, enqueue the greedy PBD chain once, search.
    Several launches may share a study (one storage, one artifacts directory)."""
    from search.launch import launch
    from search.spec import load_study_spec

    with user_input_errors():
        spec = load_study_spec(spec_path).with_overrides(storage=storage, n_trials=n_trials, timeout_s=timeout,
                                                         runner=runner, address=address)
        study = launch(spec, {"max_latency_ms": max_latency_ms, "min_map": min_map}, show_progress=not quiet)
    print_status(study)


def open_existing_study(storage: str, name: str):
    import optuna

    from search.study import storage_for

    try:
        return optuna.load_study(study_name=name, storage=storage_for(storage, create=False))
    except KeyError:
        raise ValueError(f"no study {name!r} in {storage}") from None


def print_status(study) -> None:
    from optuna.trial import TrialState
    from rich.markup import escape
    from rich.table import Table

    from search.lifecycle import PRUNE_REASON
    from search.pareto import RETIMED

    trials = study.get_trials(deepcopy=False)
    table = Table("state", "trials")
    for state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED, TrialState.FAIL):
        table.add_row(state.name.lower(), str(sum(t.state == state for t in trials)))
    console.print(table)
    attrs = study.user_attrs
    if "base_map" in attrs:
        retiming = attrs.get(RETIMED)
        retimed = (f"; {retiming['by_signature'][retiming['base_signature']]['median_ms']:.2f} ms in re-timing round "
                   f"{retiming['round']}" if retiming else "")
        console.print(f"base model: mAP {100 * attrs['base_map']:.2f}, latency {attrs['base_latency_ms']:.2f} ms "
                      f"(the study's latency scale: other figures are it over their speed-up{retimed})")
    if "greedy_chain" in attrs:
        console.print(f"greedy chain: {' > '.join(attrs['greedy_chain'])}")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        from search.pareto import complete_trials, front

        console.print(f"Pareto front: {len(front(complete_trials(study)))} trials; "
                      f"best mAP {100 * max(t.values[0] for t in complete):.2f}")
        console.print(retiming_line(study), highlight=False)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    if pruned:
        where = Counter(_pruned_where(t.user_attrs) for t in pruned)
        console.print("pruned: " + ", ".join(f"{count} {key}" for key, count in sorted(where.items())), highlight=False)
        for trial in pruned[-10:]:
            line = (f"trial {trial.number} pruned {_pruned_where(trial.user_attrs)}{_rung_values(trial.user_attrs)}: "
                    f"{trial.user_attrs.get(PRUNE_REASON, 'no reason recorded')}")
            console.print(escape(line), highlight=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    for trial in failed[-5:]:
        reason = trial.user_attrs.get("fail_reason", "no reason recorded")
        console.print(f"trial {trial.number} failed: {escape(reason)}", highlight=False)


def _pruned_where(attrs: dict) -> str:
    """Where a PRUNED trial stopped, from its attributes (`search.lifecycle`)."""
    from search.lifecycle import BEFORE_ALIGNMENT, PRUNED_AT, REPEAT_OF

    if REPEAT_OF in attrs:
        return "as a repeat (no trial slot used)"
    stopped = attrs.get(PRUNED_AT)
    if stopped is None:
        return "(where not recorded)"
    return BEFORE_ALIGNMENT if stopped == BEFORE_ALIGNMENT else f"at rung {stopped}"


def _rung_values(attrs: dict) -> str:
    """The rungs a trial reached, as ` [rung 0: mAP 41.20 at 3.10 ms; ...]` (empty when none)."""
    from search.lifecycle import RUNGS

    rungs = attrs.get(RUNGS) or []
    return (" [" + "; ".join(f"rung {r['rung']} ({r['epochs']} ep, {r['split']}): mAP {100 * r['average_mAP']:.2f} at "
                             f"{r['latency_ms']:.2f} ms" for r in rungs) + "]") if rungs else ""


def retiming_line(study) -> str:
    """Which latency figures the front and export use."""
    from search.pareto import RETIMED

    retiming = study.user_attrs.get(RETIMED)
    if retiming is None:
        return "latency: first measurements (the study has not been re-timed; `study pareto --retime` does it)"
    return (f"latency: re-timed together in round {retiming['round']} ({retiming['at']}): {retiming['architectures']} "
            f"architectures on {retiming['device']}, {retiming['repeats']} rounds ({retiming['stopped_by']}), "
            f"load average {retiming['load_avg_1m']:.1f}; trials of other architectures carry their first measurement")


@app.command("status")
def study_status(storage: StorageOption, study: StudyOption) -> None:
    """Counts of trials by state, the base model, the greedy chain, the front's size."""
    with user_input_errors():
        print_status(open_existing_study(storage, study))


@app.command("pareto")
def study_pareto(
    storage: StorageOption, study: StudyOption,
    out: Annotated[Optional[Path], typer.Option(
        help="PNG/HTML prefix: writes PREFIX.png and PREFIX.html; default studies/<study>.pareto")] = None,
    map_tolerance: Annotated[Optional[float], typer.Option(
        min=0, max=1, help="reference point: the base model's mAP minus this (default: the spec's pareto.map_tolerance)")] = None,
    ref_latency_ms: Annotated[Optional[float], typer.Option(
        min=0, help="reference point's latency (default: the spec's pareto.latency_ms, else the base model's)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    retime: Annotated[bool, typer.Option(
        help="first time the base model, the greedy chain and the front again, together, and store the figures")] = False,
    runner: Annotated[str, typer.Option(help="with --retime: local (in this process) or ray (the study's timing "
                                             "actor on latency.target)")] = "local",
    address: Annotated[Optional[str], typer.Option(help="with --retime --runner ray: the Ray cluster's address "
                                                        "(else RAY_ADDRESS, else a local Ray)")] = None,
) -> None:
    """The Pareto front as a table; the hypervolume of the search's front, of each baseline family's
    (the greedy chain; the chain followed by channel pruning) and of their union, within the
    reference point; PNG (matplotlib) and HTML (plotly) plots with the families drawn. Latency is the
    study's re-timed figure where there is one (see `--retime`), else the first measurement."""
    from search.pareto import pareto_report, plot_html, plot_png
    from search.spec import ParetoSettings

    if not retime and (runner != "local" or address is not None):
        raise typer.BadParameter("goes with --retime only", param_hint="--runner / --address")
    with user_input_errors():
        handle = open_existing_study(storage, study)
        if retime:
            retime_now(handle, storage, runner, address, quiet=as_json)
        stored = ParetoSettings.model_validate(handle.user_attrs.get("pareto", {}))
        settings = stored.model_copy(update={k: v for k, v in {"map_tolerance": map_tolerance,
                                                               "latency_ms": ref_latency_ms}.items() if v is not None})
        report = pareto_report(handle, settings)
    prefix = out or Path("studies") / f"{study}.pareto"
    if prefix.suffix in (".png", ".html"):
        prefix = prefix.with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    # Appended, not swapped in: a prefix such as `front.v2` keeps its dots.
    png, html = prefix.with_name(f"{prefix.name}.png"), prefix.with_name(f"{prefix.name}.html")
    plot_png(handle, report, png)
    plot_html(handle, report, html)
    if as_json:
        print(json.dumps({**report.to_json(), "png": str(png), "html": str(html)}))
        return
    from rich.table import Table

    names = [name for point in report.front for name in [*point.drops, *point.channel_ratios] if name != "*"]
    common = dotted_common_prefix(names)
    captions = ["ms: re-timed where `first ms`, the trial's first measurement, is given"]
    if common:
        captions.append(f"blocks named without their common prefix {common!r}")
    table = Table("trial", "drops", "channel ratios", "mAP", "ms", "first ms", "GMACs", "kind", caption="; ".join(captions))
    for point in report.front:
        ratios = ", ".join(f"{k.removeprefix(common)}={v}" for k, v in point.channel_ratios.items()) or "-"
        table.add_row(str(point.trial), " > ".join(d.removeprefix(common) for d in point.drops) or "-", ratios,
                      f"{100 * point.average_mAP:.2f}", f"{point.latency_ms:.2f}",
                      f"{point.latency_first_ms:.2f}" if point.retimed else "-", f"{point.macs / 1e9:.3f}", point.kind)
    console.print(table)
    console.print(retiming_line(handle), highlight=False)
    console.print(f"reference point: {report.reference.how}", highlight=False)
    volumes, ratios = report.hypervolume, report.ratios()
    console.print("hypervolume (mAP x ms): " + ", ".join(f"{name} {value:.5g}" for name, value in volumes.items()),
                  highlight=False)
    console.print("search / baseline: " + ", ".join(
        f"{name} {ratio:.3f}" if ratio is not None else f"{name} n/a (its hypervolume is 0)"
        for name, ratio in ratios.items()), highlight=False)
    console.print(f"search trials no baseline trial dominates: {report.undominated_by_baselines or 'none'}")
    console.print(f"plots: {png}, {html}")


def retime_now(study, storage: str, runner: str, address: str | None, quiet: bool) -> None:
    """`--retime`: time the study again on the timing service `runner` names (`search.retime`)."""
    from rich.markup import escape

    from search.retime import retime_study, stored_spec
    from search.timing import LocalTiming

    spec = stored_spec(study, storage).with_overrides(runner=runner, address=address)
    say = (lambda line: None) if quiet else (lambda line: console.print(escape(line), highlight=False))
    if spec.runner.kind == "ray":
        from search.ray_runner import check_timing_target, connect, start_timing_service

        connect(spec, quiet=True)
        check_timing_target(spec)
        timing = start_timing_service(spec, say)
    else:
        timing = LocalTiming.for_study(spec)
    retime_study(study, spec, timing, say)


def dotted_common_prefix(names: list[str]) -> str:
    """The dotted prefix several block names share (`backbone.blocks.`), so tables show what tells
    them apart; '' for fewer than two names or none shared."""
    if len(names) < 2:
        return ""
    head = os.path.commonprefix(names).rpartition(".")[0]
    return f"{head}." if head else ""


@app.command("export")
def study_export(
    storage: StorageOption, study: StudyOption,
    out: Annotated[Path, typer.Option(help="schedule JSON to write")],
    max_latency_ms: Annotated[Optional[float], typer.Option(help="best mAP within this latency")] = None,
    min_map: Annotated[Optional[float], typer.Option(help="fastest schedule with at least this mAP (fraction)")] = None,
) -> None:
    """Write the best schedule under the budget (and its checkpoint, when the study stored one)."""
    from search.export import best_under_budget, export_schedule, latency_results

    with user_input_errors():
        handle = open_existing_study(storage, study)
        trial = best_under_budget(handle, max_latency_ms, min_map)
        model_dir = export_schedule(handle, trial, out)
    latency = latency_results(trial)
    console.print(f"trial {trial.number}: mAP {100 * trial.values[0]:.2f}, latency {latency['latency_ms']:.2f} ms "
                  f"({latency['latency_source']}), drops {trial.user_attrs.get('drops')} -> {out}"
                  + (f", checkpoint {model_dir}" if model_dir else ""), highlight=False)
