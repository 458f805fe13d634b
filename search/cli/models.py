"""Commands on one model: `train`, `predict`, `eval`, `profile`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import console, parse_floats, print_metrics, user_input_errors


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


def predict(
    model: Annotated[Path, typer.Option(help="model directory (written by train or compress)")],
    data: Annotated[Path, typer.Option(help="a spec YAML whose data section to read, or a dataset ROOT: "
                                            "annotations.json with features/, frames/ or videos/")],
    out: Annotated[Path, typer.Option(help="ActivityNet results JSON to write")],
    subset: Annotated[str, typer.Option(help="annotation subset to run on")] = "test",
    batch: Annotated[int, typer.Option(min=1, help="windows per forward pass")] = 1,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Detections of a model on a dataset, as the ActivityNet results JSON that eval reads."""
    from search.spec import load_any_spec
    from tadmodels.data import write_predictions
    from tadmodels.inference import predict as run_model
    from tadmodels.training import Experiment, load_model

    with user_input_errors():
        loaded, spec = load_model(model)
        data_config = spec.data_at(data) if data.is_dir() else load_any_spec(data).data
        experiment = Experiment.from_spec(spec.with_data(data_config), model=loaded)
        dataset = experiment.dataset(subset)
        results = run_model(loaded.to(experiment.device), dataset, batch_size=batch, show_progress=not quiet)
        write_predictions(out, results)
    count = sum(len(detections) for detections in results.values())
    console.print(f"{count} detections in {len(results)} videos written to {out}")


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
    from rich.table import Table

    table = Table("tIoU", "mAP")
    for threshold, value in zip(result.tious, result.per_tiou):
        table.add_row(f"{threshold:.2f}", f"{100 * value:.2f}")
    table.add_row("average", f"{100 * result.average_mAP:.2f}")
    console.print(table)


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
    from rich.table import Table

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
