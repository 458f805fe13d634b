"""Commands on one model: `train`, `eval`, `profile`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, parse_floats, print_metrics, user_input_errors


def train(
    spec: Annotated[Path, typer.Argument(help="spec YAML with data, model and train sections")],
    out: Annotated[Path, typer.Option(help="model directory to write")],
    init: Annotated[Optional[Path], typer.Option(
        help="start from these weights: a backbone import (`tadprune import`) or a model directory; "
             "its architecture must be the spec's")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train the base model a spec describes; writes model.safetensors, config.yaml, metrics.json."""
    from search.spec import load_any_spec
    from tadmodels.training import train_and_save

    with user_input_errors():
        metrics = train_and_save(load_any_spec(spec), out, show_progress=not quiet, init=init)
    print_metrics(metrics)
    console.print(f"model written to {out}")


def evaluate(
    gt: Annotated[Path, typer.Option(help="ground truth, ActivityNet/THUMOS annotation JSON")],
    pred: Annotated[Path, typer.Option(help="predictions, ActivityNet results JSON")],
    subset: Annotated[Optional[str], typer.Option(help="only ground-truth videos of this subset")] = None,
    tiou: Annotated[str, typer.Option(help="comma-separated tIoU thresholds")] = "0.3,0.4,0.5,0.6,0.7",
    as_json: Annotated[bool, typer.Option("--json", help="last line: {\"per_tiou\": [...], \"average_mAP\": x}")] = False,
) -> None:
    """mAP of predictions against ground truth at each tIoU threshold, as ActionFormer's evaluator computes it."""
    from tadmodels.evaluation import evaluate_files

    thresholds = parse_floats(tiou, "--tiou")
    with user_input_errors():
        result = evaluate_files(gt, pred, subset=subset, tious=tuple(thresholds))
    if as_json:
        print(json.dumps({"per_tiou": list(result.per_tiou), "average_mAP": result.average_mAP}))
        return
    from rich.table import Table

    table = Table("tIoU", "mAP")
    for threshold, value in zip(result.tious, result.per_tiou):
        table.add_row(f"{threshold:.2f}", f"{100 * value:.2f}")
    table.add_row("average", f"{100 * result.average_mAP:.2f}")
    console.print(table)


def profile(
    targets: Annotated[list[Path], typer.Argument(help="spec YAMLs (untrained models) or model directories; "
                                                       "with --compare, the first is the reference")],
    compare: Annotated[bool, typer.Option("--compare", help="time every model side by side in interleaved rounds; "
                                                            "speed-ups over the first")] = False,
    drop: Annotated[Optional[list[str]], typer.Option(help="comma-separated droppable blocks to remove; with "
                                                         "--compare repeatable, each a variant of the first model")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    positions: Annotated[Optional[int], typer.Option(help="grid positions of the input; default data.max_seq_len")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32, float16 or bfloat16; default: the spec's eval.latency")] = None,
    compiled: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the models")] = None,
    batch: Annotated[Optional[int], typer.Option(min=1, help="videos per forward")] = None,
    warmup: Annotated[Optional[int], typer.Option(min=0, help="untimed runs of each model first")] = None,
    min_repeats: Annotated[Optional[int], typer.Option(help="timed rounds before the spread is judged")] = None,
    max_repeats: Annotated[Optional[int], typer.Option(help="timed rounds at most")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """MACs, parameters and measured latency of a model, optionally with blocks dropped; with
    --compare, of several models timed side by side, with each one's speed-up over the first."""
    drops = [[n.strip() for n in names.split(",") if n.strip()] for names in drop or []]
    if not compare and (len(targets) > 1 or len(drops) > 1):
        raise typer.BadParameter("several models (targets or --drop variants) are timed together with --compare",
                                 param_hint="--compare")
    if compare and len(targets) + len(drops) < 2:
        raise typer.BadParameter("--compare needs a second model: another target or a --drop variant",
                                 param_hint="--compare")
    if len(set(targets)) < len(targets):
        raise typer.BadParameter("a target is named twice", param_hint="TARGETS")
    options = {"dtype": dtype, "compile": compiled, "batch": batch, "warmup": warmup, "min_repeats": min_repeats,
               "max_repeats": max_repeats}
    with user_input_errors():
        models, spec = _load_targets(targets, drops, variants_of_first=compare)
        config = _timing_config(spec.eval.latency, options)
        positions = positions or spec.eval.profile_positions or spec.data.max_seq_len
        if compare:
            _print_comparison(models, positions, device, config, threads, as_json)
        else:
            _print_profile(next(iter(models.values())), positions, device, config, threads, as_json)


def _timing_config(defaults, options: dict):
    """The spec's `eval.latency` with the options given on the command line; bad values named by option."""
    from pydantic import ValidationError

    from tadmodels.profile import TimingConfig

    try:
        return TimingConfig.model_validate({**defaults.model_dump(), **{k: v for k, v in options.items() if v is not None}})
    except ValidationError as error:
        problems = [f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" if e["loc"] else e["msg"]
                    for e in error.errors()]
        raise ValueError("; ".join(problems)) from None


def _load_targets(targets: list[Path], drops: list[list[str]], variants_of_first: bool) -> tuple[dict, object]:
    """Models by label (targets, then each drop variant of the first) and the first one's spec.
    Without `variants_of_first`, the one drop (if any) applies to the one target."""
    from search.spec import load_any_spec
    from tadmodels.models import TADModel
    from tadmodels.training import load_model

    models, spec = {}, None
    for target in targets:
        if target.is_dir():
            model, target_spec = load_model(target)
        else:
            target_spec = load_any_spec(target)
            model = TADModel(target_spec.model)
        spec = spec or target_spec
        models[str(target)] = model
    first_label, first = next(iter(models.items()))
    if not variants_of_first:
        return {first_label: first.without_blocks(drops[0]) if drops else first}, spec
    for names in drops:
        models[f"{first_label} -{','.join(names)}"] = first.without_blocks(names)
    return models, spec


def _print_profile(model, positions: int, device: str, config, threads: int | None, as_json: bool) -> None:
    from rich.table import Table

    from tadmodels.profile import profile_model

    result = profile_model(model, positions, device=device, config=config, threads=threads)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    latency = result.latency
    table = Table("MACs (G)", "params (M)", "latency ms (median)", "min ms", "IQR ms", "device", "input")
    table.add_row(f"{result.macs / 1e9:.3f}", f"{result.params / 1e6:.3f}", f"{latency.median_ms:.2f}",
                  f"{latency.min_ms:.2f}", f"{latency.iqr_ms:.2f}", latency.device, "x".join(map(str, latency.input_shape)))
    console.print(table)
    console.print(_timing_note(latency))
    console.print(f"droppable blocks: {', '.join(model.droppable_blocks())}")


def _print_comparison(models: dict, positions: int, device: str, config, threads: int | None, as_json: bool) -> None:
    """Every model timed in the same interleaved rounds; speed-ups are medians of per-round ratios."""
    from rich.table import Table

    from tadmodels.profile import count_params, model_latencies, model_macs
    from .common import format_speedup

    timings = model_latencies(models, positions, device, config, threads)
    rows = [{"name": name, "macs": model_macs(model, positions), "params": count_params(model),
             "latency": timings[name].to_json(), "speedup": timings.speedup(name).to_json()}
            for name, model in models.items()]
    if as_json:
        print(json.dumps({"models": rows}))
        return
    table = Table("GMACs", "median ms", "min ms", "IQR ms", "stable", "speed-up (quartiles)")
    table.add_column("model", overflow="fold")  # last: a long path folds instead of squeezing the figures
    for row in rows:
        latency = row["latency"]
        table.add_row(f"{row['macs'] / 1e9:.3f}", f"{latency['median_ms']:.2f}", f"{latency['min_ms']:.2f}",
                      f"{latency['iqr_ms']:.2f}", "no" if latency["unstable"] else "yes", format_speedup(row["speedup"]),
                      row["name"])
    console.print(table)
    console.print(_timing_note(timings[rows[0]["name"]]))


def _timing_note(latency) -> str:
    load = "unknown" if latency.load_avg_1m is None else f"{latency.load_avg_1m:.2f}"
    rule = latency.stop_rule
    return (f"{latency.device}, {latency.dtype}{', compiled' if latency.compile else ''}, input "
            f"{'x'.join(map(str, latency.input_shape))}: {latency.repeats} rounds after {latency.warmup} warm-up runs, "
            f"stopped by {latency.stopped_by} (IQR/median <= {rule['stable_iqr']:g}, {rule['min_repeats']} to "
            f"{rule['max_repeats']} rounds, {rule['max_time_s']:g} s at most); load average {load}")
