"""`tadprune compress`: greedy Progressive Block Drop, or a given schedule, on one model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, format_speedup, print_metrics, user_input_errors


def compress(
    model: Annotated[Path, typer.Option(help="model directory written by `tadprune train` (or `compress`)")],
    out: Annotated[Path, typer.Option(help="directory for the compressed model")],
    schedule: Annotated[Optional[Path], typer.Option(help="schedule JSON to follow")] = None,
    greedy: Annotated[bool, typer.Option(help="choose the drops with greedy Progressive Block Drop")] = False,
    blocks: Annotated[Optional[int], typer.Option(min=1, help="with --greedy: how many blocks to drop")] = None,
    criterion: Annotated[str, typer.Option(help="with --greedy: map, loss, mse or cosine")] = "map",
    align_preset: Annotated[Optional[str], typer.Option(
        help="with --greedy: alignment settings, cheap (the default) or pbd (PBD's release recipe)")] = None,
    align_epochs: Annotated[Optional[int], typer.Option(min=0, help="with --greedy: alignment epochs per step")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="with --greedy: original or previous (default: the preset's)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Apply a schedule (drop, align, ..., then channel pruning and a final alignment), or run greedy
    PBD and write the schedule it found. Writes model.safetensors, config.yaml, schedule.json, metrics.json."""
    from rich.table import Table

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
            given = {"preset": align_preset, "epochs": align_epochs, "teacher": teacher}
            alignment = AlignmentConfig(**{key: value for key, value in given.items() if value is not None})
            plan = Schedule(base_fingerprint=base.fingerprint(), alignment=alignment,
                            selection=SelectionConfig(criterion=criterion))
        plan.check_fits(base)
        experiment = Experiment.from_spec(spec, base)
        result = run_compression(experiment, base.to(experiment.device), plan,
                                 greedy_blocks=blocks if greedy else None, show_progress=not quiet)
    save_model(result.model, spec, out, result.metrics)
    result.schedule.save(out / "schedule.json")
    table = Table("step", "action", "block", "mAP before align", "mAP after align", "GMACs", "latency ms", "speed-up")
    for step in result.steps:
        flag = "*" if step.speedup["unstable"] else ""
        table.add_row(str(step.step), step.action, step.block or "-", f"{100 * step.map_before_alignment:.2f}",
                      f"{100 * step.map_after_alignment:.2f}", f"{step.macs / 1e9:.3f}", f"{step.latency_ms:.2f}",
                      f"{step.speedup['median']:.2f}x{flag}")
    console.print(table)
    if any(step.speedup["unstable"] for step in result.steps):
        console.print("* unstable: the per-round ratios to the base model spread wider than eval.latency.stable_iqr")
    print_metrics(result.metrics)
    base_ms = result.metrics["baseline_latency"]["median_ms"]
    console.print(f"speed-up over the base model: {format_speedup(result.metrics['speedup'])}, "
                  f"{result.metrics['latency_ms']:.2f} ms against {base_ms:.2f} ms, "
                  f"timed side by side in {result.metrics['speedup']['rounds']} interleaved rounds")
    console.print(f"compressed model and schedule written to {out}")
