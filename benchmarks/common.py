"""What the benchmarks share: their timing options and their Markdown tables (ready for RESULTS.md)."""
from __future__ import annotations

import argparse

from tadmodels.profile import TimingConfig


def add_timing_arguments(parser: argparse.ArgumentParser, repeats: int, warmup: int, threads: int) -> None:
    """The options `measure_latencies` takes, with this benchmark's defaults."""
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds (median and IQR over them)")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed runs of each variant first")
    parser.add_argument("--threads", type=int, default=threads, help="torch threads while timing on CPU")


def fixed_rounds(args: argparse.Namespace) -> TimingConfig:
    """`--repeats` rounds exactly, after `--warmup` runs of each variant (the rule these benchmarks were recorded with)."""
    return TimingConfig(warmup=args.warmup, min_repeats=args.repeats, max_repeats=args.repeats)


def markdown_table(header: list[str], rows: list[list]) -> str:
    return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in [header, ["---"] * len(header), *rows])
