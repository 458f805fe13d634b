"""The `tadprune` command line."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Compress temporal action detection models by searching block-drop schedules.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: synthetic generation.")
app.add_typer(data_app, name="data")
study_app = typer.Typer(no_args_is_help=True, help="Search studies: launch, status, Pareto front, export.")
app.add_typer(study_app, name="study")

console = Console()
errors = Console(stderr=True)


@contextmanager
def user_input_errors() -> Iterator[None]:
    """Bad input (a spec, a file, a value) ends the command with its message and exit status 2,
    like any other usage error; a traceback is for bugs."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=option) from None


@data_app.command("synth")
def data_synth(
    preset: Annotated[str, typer.Option(help="synthetic preset, e.g. demo, demo-features, thumos-like")],
    out: Annotated[Path, typer.Option(help="directory to write")],
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
) -> None:
    """Write a synthetic dataset in the THUMOS14/ActivityNet formats."""
    from tadmodels.data.synthetic import PRESETS, generate

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}", param_hint="--preset")
    with user_input_errors():
        generate(preset, out, seed=seed)
    console.print(f"wrote {preset} (seed {seed}) to {out}")


@app.command()
def train(
    spec: Annotated[Path, typer.Argument(help="spec YAML with data, model and train sections")],
    out: Annotated[Path, typer.Option(help="model directory to write")],
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train the base model a spec describes; writes model.safetensors, config.yaml, metrics.json."""
    from search.spec import load_any_spec
    from tadmodels.training import train_and_save

    with user_input_errors():
        metrics = train_and_save(load_any_spec(spec), out, show_progress=not quiet)
    print_metrics(metrics)
    console.print(f"model written to {out}")


@app.command("eval")
def evaluate(
    gt: Annotated[Path, typer.Option(help="ground truth, ActivityNet/THUMOS annotation JSON")],
    pred: Annotated[Path, typer.Option(help="predictions, ActivityNet results JSON")],
    subset: Annotated[Optional[str], typer.Option(help="only ground-truth videos of this subset")] = None,
    tiou: Annotated[str, typer.Option(help="comma-separated tIoU thresholds")] = "0.3,0.4,0.5,0.6,0.7",
    as_json: Annotated[bool, typer.Option("--json", help="last line: {\"per_tiou\": [...], \"average_mAP\": x}")] = False,
) -> None:
    """mAP of predictions against ground truth at each tIoU threshold (ActivityNet semantics)."""
    from tadmodels.evaluation import evaluate_files

    thresholds = parse_floats(tiou, "--tiou")
    with user_input_errors():
        result = evaluate_files(gt, pred, subset=subset, tious=tuple(thresholds))
    if as_json:
        print(json.dumps({"per_tiou": list(result.per_tiou), "average_mAP": result.average_mAP}))
        return
    table = Table("tIoU", "mAP")
    for threshold, value in zip(result.tious, result.per_tiou):
        table.add_row(f"{threshold:.2f}", f"{100 * value:.2f}")
    table.add_row("average", f"{100 * result.average_mAP:.2f}")
    console.print(table)


@app.command()
def profile(
    target: Annotated[Path, typer.Argument(help="a spec YAML (untrained model) or a model directory")],
    drop: Annotated[str, typer.Option(help="comma-separated droppable block names to remove first")] = "",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    positions: Annotated[Optional[int], typer.Option(help="grid positions of the input; default data.max_seq_len")] = None,
    repeats: Annotated[int, typer.Option(min=1)] = 20,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """MACs, parameters and measured latency of a model, optionally with blocks dropped."""
    from search.spec import load_any_spec
    from tadmodels.models import TADModel
    from tadmodels.profile import profile_model
    from tadmodels.training import load_model

    with user_input_errors():
        if target.is_dir():
            model, spec = load_model(target)
        else:
            spec = load_any_spec(target)
            model = TADModel(spec.model)
        names = [n.strip() for n in drop.split(",") if n.strip()]
        if names:
            model = model.without_blocks(names)
        result = profile_model(model, positions or spec.eval.profile_positions or spec.data.max_seq_len,
                               device=device, repeats=repeats, threads=threads)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    latency = result.latency
    table = Table("MACs (G)", "params (M)", "latency ms (median)", "IQR ms", "device", "input")
    table.add_row(f"{result.macs / 1e9:.3f}", f"{result.params / 1e6:.3f}", f"{latency.median_ms:.2f}",
                  f"{latency.iqr_ms:.2f}", latency.device, "x".join(map(str, latency.input_shape)))
    console.print(table)
    console.print(f"droppable blocks: {', '.join(model.droppable_blocks())}")


@app.command()
def compress(
    model: Annotated[Path, typer.Option(help="model directory written by `tadprune train` (or `compress`)")],
    out: Annotated[Path, typer.Option(help="directory for the compressed model")],
    schedule: Annotated[Optional[Path], typer.Option(help="schedule JSON to follow")] = None,
    greedy: Annotated[bool, typer.Option(help="choose the drops with greedy Progressive Block Drop")] = False,
    blocks: Annotated[Optional[int], typer.Option(min=1, help="with --greedy: how many blocks to drop")] = None,
    criterion: Annotated[str, typer.Option(help="with --greedy: map, loss, mse or cosine")] = "map",
    align_epochs: Annotated[Optional[int], typer.Option(min=0, help="with --greedy: alignment epochs per step")] = None,
    teacher: Annotated[str, typer.Option(help="with --greedy: original or previous")] = "original",
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Apply a schedule (drop, align, ..., then channel pruning and a final alignment), or run greedy
    PBD and write the schedule it found. Writes model.safetensors, config.yaml, schedule.json, metrics.json."""
    from pruning.alignment import AlignmentConfig
    from pruning.progressive import compress as run_compression
    from pruning.schedule import Schedule, load_schedule
    from pruning.selection import SelectionConfig
    from tadmodels.training import Experiment, load_model, save_model

    if (schedule is None) == (not greedy):
        raise typer.BadParameter("give exactly one of --schedule and --greedy", param_hint="--schedule/--greedy")
    if greedy and blocks is None:
        raise typer.BadParameter("--greedy needs --blocks K", param_hint="--blocks")
    with user_input_errors():
        base, spec = load_model(model)
        if schedule is not None:
            plan = load_schedule(schedule)
        else:
            alignment = AlignmentConfig(teacher=teacher, **({} if align_epochs is None else {"epochs": align_epochs}))
            plan = Schedule(base_fingerprint=base.fingerprint(), alignment=alignment,
                            selection=SelectionConfig(criterion=criterion))
        plan.check_fits(base)
        experiment = Experiment.from_spec(spec, base)
        result = run_compression(experiment, base.to(experiment.device), plan,
                                 greedy_blocks=blocks if greedy else None, show_progress=not quiet)
    save_model(result.model, spec, out, result.metrics)
    result.schedule.save(out / "schedule.json")
    table = Table("step", "action", "block", "mAP before align", "mAP after align", "GMACs", "latency ms")
    for step in result.steps:
        table.add_row(str(step.step), step.action, step.block or "-", f"{100 * step.map_before_alignment:.2f}",
                      f"{100 * step.map_after_alignment:.2f}", f"{step.macs / 1e9:.3f}", f"{step.latency_ms:.2f}")
    console.print(table)
    print_metrics(result.metrics)
    console.print(f"compressed model and schedule written to {out}")


StorageOption = Annotated[str, typer.Option(help="SQLAlchemy URL of the study storage, e.g. sqlite:///studies/demo.db")]
StudyOption = Annotated[str, typer.Option("--study", help="study name")]


@study_app.command("launch")
def study_launch(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="study spec YAML")],
    storage: Annotated[Optional[str], typer.Option(help="override the spec's storage URL")] = None,
    n_trials: Annotated[Optional[int], typer.Option(min=1, help="finished trials the study should have in all")] = None,
    timeout: Annotated[Optional[float], typer.Option(min=1, help="stop starting trials after this many seconds")] = None,
    runner: Annotated[Optional[str], typer.Option(help="ray or local (overrides the spec)")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (else RAY_ADDRESS, else a local Ray)")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option(help="latency budget, stored as an Optuna constraint")] = None,
    min_map: Annotated[Optional[float], typer.Option(help="mAP floor (fraction), stored as an Optuna constraint")] = None,
    quiet: Annotated[bool, typer.Option(help="no live progress")] = False,
) -> None:
    """Create or resume a study: train the base model if missing, enqueue the greedy PBD chain once, search."""
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
        return optuna.load_study(study_name=name, storage=storage_for(storage))
    except KeyError:
        raise ValueError(f"no study {name!r} in {storage}") from None


def print_status(study) -> None:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    table = Table("state", "trials")
    for state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL):
        table.add_row(state.name.lower(), str(sum(t.state == state for t in trials)))
    console.print(table)
    attrs = study.user_attrs
    if "base_map" in attrs:
        console.print(f"base model: mAP {100 * attrs['base_map']:.2f}, latency {attrs['base_latency_ms']:.2f} ms")
    if "greedy_chain" in attrs:
        console.print(f"greedy chain: {' > '.join(attrs['greedy_chain'])}")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        console.print(f"Pareto front: {len(study.best_trials)} trials; best mAP {100 * max(t.values[0] for t in complete):.2f}")
        repeats = sum(t.user_attrs.get("cache", {}).get("result_hit", False) for t in complete)
        if repeats:
            console.print(f"{repeats} trials took their result from the result cache (a schedule already run)")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    for trial in failed[-5:]:
        console.print(f"trial {trial.number} failed: {trial.user_attrs.get('fail_reason', 'no reason recorded')}")


@study_app.command("status")
def study_status(storage: StorageOption, study: StudyOption) -> None:
    """Counts of trials by state, the base model, the greedy chain, the front's size."""
    with user_input_errors():
        print_status(open_existing_study(storage, study))


@study_app.command("pareto")
def study_pareto(
    storage: StorageOption, study: StudyOption,
    out: Annotated[Optional[Path], typer.Option(help="PNG/HTML prefix; default studies/<study>.pareto")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The Pareto front as a table, the hypervolume of the search's front against the greedy chain's,
    and PNG (matplotlib) and HTML (plotly) plots with the greedy chain drawn."""
    from search.pareto import pareto_report, plot_html, plot_png

    with user_input_errors():
        handle = open_existing_study(storage, study)
        report = pareto_report(handle)
    prefix = out or Path("studies") / f"{study}.pareto"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, html = prefix.with_suffix(".png"), prefix.with_suffix(".html")
    plot_png(handle, report, png)
    plot_html(handle, report, html)
    if as_json:
        print(json.dumps({**report.to_json(), "png": str(png), "html": str(html)}))
        return
    names = [name for point in report.front for name in [*point.drops, *point.channel_ratios] if name != "*"]
    common = dotted_common_prefix(names)
    table = Table("trial", "drops", "channel ratios", "mAP", "latency ms", "GMACs", "kind",
                  caption=f"blocks named without their common prefix {common!r}" if common else None)
    for point in report.front:
        ratios = ", ".join(f"{k.removeprefix(common)}={v}" for k, v in point.channel_ratios.items()) or "-"
        table.add_row(str(point.trial), " > ".join(d.removeprefix(common) for d in point.drops) or "-", ratios,
                      f"{100 * point.average_mAP:.2f}", f"{point.latency_ms:.2f}", f"{point.macs / 1e9:.3f}", point.kind)
    console.print(table)
    mAP_ref, latency_ref = report.reference
    console.print(f"hypervolume (reference point: mAP {mAP_ref:.2f}, latency {latency_ref:.2f} ms): "
                  f"search {report.hypervolume_search:.4f}, greedy chain {report.hypervolume_greedy:.4f}, "
                  f"all {report.hypervolume_all:.4f}")
    console.print(f"search trials no greedy trial dominates: {report.undominated_by_greedy or 'none'}")
    console.print(f"plots: {png}, {html}")


def dotted_common_prefix(names: list[str]) -> str:
    """The dotted prefix several block names share (`backbone.blocks.`), so tables show what tells
    them apart; '' for fewer than two names or none shared."""
    if len(names) < 2:
        return ""
    head = os.path.commonprefix(names).rpartition(".")[0]
    return f"{head}." if head else ""


@study_app.command("export")
def study_export(
    storage: StorageOption, study: StudyOption,
    out: Annotated[Path, typer.Option(help="schedule JSON to write")],
    max_latency_ms: Annotated[Optional[float], typer.Option(help="best mAP within this latency")] = None,
    min_map: Annotated[Optional[float], typer.Option(help="fastest schedule with at least this mAP (fraction)")] = None,
) -> None:
    """Write the best schedule under the budget (and its checkpoint, when the study stored one)."""
    from search.export import best_under_budget, export_schedule

    with user_input_errors():
        handle = open_existing_study(storage, study)
        trial = best_under_budget(handle, max_latency_ms, min_map)
        model_dir = export_schedule(handle, trial, out)
    console.print(f"trial {trial.number}: mAP {100 * trial.values[0]:.2f}, latency {trial.values[1]:.2f} ms, "
                  f"drops {trial.user_attrs.get('drops')} -> {out}" + (f", checkpoint {model_dir}" if model_dir else ""))


def print_metrics(metrics: dict) -> None:
    # Short headers: the table must fit an 80-column terminal at every tIoU count the specs use.
    table = Table("mAP avg", *[f"@{t:g}" for t in metrics["tious"]], "ms", "GMACs", "M params")
    table.add_row(f"{100 * metrics['average_mAP']:.2f}", *[f"{100 * v:.2f}" for v in metrics["per_tiou"]],
                  f"{metrics['latency_ms']:.2f}", f"{metrics['macs'] / 1e9:.3f}", f"{metrics['params'] / 1e6:.3f}")
    console.print(table)


if __name__ == "__main__":
    app()
