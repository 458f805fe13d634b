"""Progressive Block Drop on the trained demo model: greedy chain, all-at-once controls, criteria.

Measured in one run on `runs/demo/base` (8 droppable VideoMAE-tiny blocks) with the alignment and
selection settings of `studies/demo.yaml`, dropping a quarter of the droppable blocks:

1. greedy PBD (`--criterion`, `map` by default): per step the block chosen and the test average
   mAP before and after alignment; final mAP@0.5, average mAP and latency against the base model;
2. the same blocks dropped at once, not aligned;
3. the same blocks dropped at once and aligned once with the progressive run's total epochs
   (steps x epochs per step), the paper's progressive-vs-all-at-once comparison;
4. greedy PBD with each selection criterion (`map`, `loss`, `mse`, `cosine`): blocks chosen, final
   mAP, wall time of the whole run and of the first selection alone.

Latency: `tadmodels.profile.measure_latencies` on one `data.max_seq_len` window, every model in
the same interleaved rounds with `--latency-threads` threads (1 by default), so the ratios to the
base model are the figures to read. The per-step latencies that `compress` logs use the same
thread count. Work other than timing runs on `--threads` threads.

    flock /tmp/cpu.lock .venv/bin/python benchmarks/pbd_demo.py [--model runs/demo/base]
        [--study studies/demo.yaml] [--criterion map] [--align-epochs N] [--threads 2] [--latency-threads 1]
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from common import markdown_table
from pruning.alignment import AlignmentConfig, align
from pruning.progressive import CompressionResult, compress
from pruning.schedule import Schedule
from pruning.selection import SelectionConfig, select_block
from search.spec import load_study_spec
from tadmodels.models import TADModel
from tadmodels.profile import TimingConfig, Timings, model_latencies
from tadmodels.training import Experiment, load_model

CRITERIA = ("map", "loss", "mse", "cosine")
PAPER = {"progressive": 70.47, "all_at_once": 68.91, "base": 70.43}  # VideoMAE-S, THUMOS14, mAP@0.5, 3 of 12 dropped
T = TypeVar("T")


@dataclass
class Setup:
    experiment: Experiment
    base: TADModel
    alignment: AlignmentConfig
    selection: SelectionConfig


@dataclass
class GreedyRun:
    result: CompressionResult
    wall_s: float
    first_selection_s: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/demo/base"), help="base model directory")
    parser.add_argument("--study", type=Path, default=Path("studies/demo.yaml"),
                        help="study spec whose alignment and selection settings are used")
    parser.add_argument("--criterion", choices=CRITERIA, default=None,
                        help="criterion of the headline greedy run; default: the study's")
    parser.add_argument("--align-epochs", type=int, default=None, help="alignment epochs per step; default: the study's")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for selection, alignment, evaluation")
    parser.add_argument("--latency-threads", type=int, default=1, help="torch threads while timing")
    parser.add_argument("--latency-repeats", type=int, default=30)
    return parser.parse_args()


def load_setup(args: argparse.Namespace) -> Setup:
    """The base model, its experiment (profiling at `--latency-threads`), and the study's settings."""
    base, spec = load_model(args.model)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"threads": args.latency_threads})})
    study = load_study_spec(args.study)
    alignment = study.alignment if args.align_epochs is None else study.alignment.model_copy(update={"epochs": args.align_epochs})
    selection = study.selection if args.criterion is None else study.selection.model_copy(update={"criterion": args.criterion})
    return Setup(Experiment.from_spec(spec, base), base, alignment, selection)


def timed(run: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = run()
    return value, time.perf_counter() - start


def greedy(setup: Setup, criterion: str, drops: int) -> GreedyRun:
    """Greedy PBD with `criterion`, timed whole, and its first selection timed alone."""
    selection = setup.selection.model_copy(update={"criterion": criterion})
    train_set = setup.experiment.dataset(setup.experiment.spec.data.train_subset)
    _, first_selection_s = timed(lambda: select_block(setup.base, train_set, selection, setup.experiment.spec.eval.tious))
    schedule = Schedule(base_fingerprint=setup.base.fingerprint(), alignment=setup.alignment, selection=selection)
    result, wall_s = timed(lambda: compress(setup.experiment, setup.base, schedule, greedy_blocks=drops, show_progress=False))
    return GreedyRun(result, wall_s, first_selection_s)


def all_at_once(setup: Setup, blocks: list[str], epochs: int) -> TADModel:
    """`blocks` dropped together, then one alignment of `epochs` epochs (none when 0)."""
    student = setup.base.without_blocks(blocks)
    return align(student, setup.base, setup.experiment, setup.alignment.model_copy(update={"epochs": epochs}))


def scores(setup: Setup, model: TADModel) -> dict[str, float]:
    """Test average mAP and mAP@0.5, in points."""
    metrics = setup.experiment.evaluate(model, profile=False)
    return {"average_mAP": 100 * metrics["average_mAP"], "mAP@0.5": 100 * metrics["per_tiou"][metrics["tious"].index(0.5)]}


def latencies(setup: Setup, models: dict[str, TADModel], threads: int, repeats: int) -> Timings:
    """Every model timed in the same interleaved rounds on one `max_seq_len` window, on CPU."""
    return model_latencies(models, setup.experiment.spec.data.max_seq_len, "cpu",
                           TimingConfig(warmup=5, min_repeats=repeats, max_repeats=repeats), threads)


def print_steps(run: GreedyRun, criterion: str) -> None:
    print(f"\nGreedy PBD ({criterion}), per step (test average mAP, %):")
    print(markdown_table(["step", "block dropped", "mAP before alignment", "mAP after alignment"],
                         [[step.step, step.block, f"{100 * step.map_before_alignment:.2f}",
                           f"{100 * step.map_after_alignment:.2f}"] for step in run.result.steps]))


def print_variants(rows: dict[str, dict], base_ms: float) -> None:
    print("\nVariants (test mAP in %, latency median at 1 window, interleaved rounds):")
    print(markdown_table(["model", "blocks dropped", "alignment epochs", "mAP@0.5", "average mAP", "latency ms (IQR)",
                          "latency vs base"],
                         [[name, ", ".join(row["blocks"]) or "-", row["epochs"], f"{row['mAP@0.5']:.2f}",
                           f"{row['average_mAP']:.2f}", f"{row['latency_ms']:.2f} ({row['iqr_ms']:.2f})",
                           f"{row['latency_ms'] / base_ms:.3f}"] for name, row in rows.items()]))


def print_criteria(rows: dict[str, dict]) -> None:
    print("\nSelection criteria, greedy PBD with the same alignment:")
    print(markdown_table(["criterion", "blocks chosen (in order)", "mAP@0.5", "average mAP", "wall s (whole run)",
                          "first selection s"],
                         [[criterion, " > ".join(row["blocks"]), f"{row['mAP@0.5']:.2f}", f"{row['average_mAP']:.2f}",
                           f"{row['wall_s']:.1f}", f"{row['first_selection_s']:.2f}"] for criterion, row in rows.items()]))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    setup = load_setup(args)
    drops = len(setup.base.droppable_blocks()) // 4
    headline = setup.selection.criterion
    runs = {headline: greedy(setup, headline, drops)}
    runs.update({criterion: greedy(setup, criterion, drops) for criterion in CRITERIA if criterion != headline})
    blocks = runs[headline].result.schedule.drops
    total_epochs = drops * setup.alignment.epochs
    variants = {"base": (setup.base, [], 0), f"PBD ({headline})": (runs[headline].result.model, blocks, total_epochs),
                "all at once, no alignment": (all_at_once(setup, blocks, 0), blocks, 0),
                "all at once, aligned": (all_at_once(setup, blocks, total_epochs), blocks, total_epochs)}
    timing = latencies(setup, {name: model for name, (model, _, _) in variants.items()}, args.latency_threads,
                       args.latency_repeats)
    rows = {name: {"blocks": dropped, "epochs": epochs, **scores(setup, model), "latency_ms": timing[name].median_ms,
                   "iqr_ms": timing[name].iqr_ms} for name, (model, dropped, epochs) in variants.items()}
    criteria = {criterion: {"blocks": run.result.schedule.drops, **scores(setup, run.result.model),
                            "wall_s": run.wall_s, "first_selection_s": run.first_selection_s}
                for criterion, run in runs.items()}
    print(f"{len(setup.base.droppable_blocks())} droppable blocks, {drops} dropped; alignment {setup.alignment.epochs} "
          f"epochs/step at lr {setup.alignment.lr}, teacher {setup.alignment.teacher}; selection on the train subset "
          f"at tIoU {setup.selection.tiou}; latency on {timing['base'].device}, input {timing['base'].input_shape}, "
          f"{args.latency_repeats} rounds; torch {torch.__version__}")
    print_steps(runs[headline], headline)
    print_variants(rows, rows["base"]["latency_ms"])
    print_criteria(criteria)
    print(json.dumps({"drops": drops, "criterion": headline, "alignment": setup.alignment.model_dump(mode="json"),
                      "steps": [vars(step) for step in runs[headline].result.steps], "variants": rows,
                      "criteria": criteria, "paper_thumos14_mAP@0.5": PAPER}))


if __name__ == "__main__":
    main()
