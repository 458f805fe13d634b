"""What the benchmarks share: their timing options, the scratch directory of those that launch
studies, and their Markdown tables (ready for RESULTS.md)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tadmodels.profile import TimingConfig


def add_timing_arguments(parser: argparse.ArgumentParser, repeats: int, warmup: int, threads: int) -> None:
    """The options `measure_latencies` takes, with this benchmark's defaults."""
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds (median and IQR over them)")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed runs of each variant first")
    parser.add_argument("--threads", type=int, default=threads, help="torch threads while timing on CPU")


def fixed_rounds(args: argparse.Namespace) -> TimingConfig:
    """`--repeats` rounds exactly, after `--warmup` runs of each variant (the rule these benchmarks were recorded with)."""
    return TimingConfig(warmup=args.warmup, min_repeats=args.repeats, max_repeats=args.repeats)


def add_scratch_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """`--scratch` (where `what` goes) and `--report-only` (read what is already there)."""
    parser.add_argument("--scratch", type=Path, default=None, help=f"the directory for {what}; default a new temp dir")
    parser.add_argument("--report-only", action="store_true", help=f"read {what} already in --scratch")


def scratch_dir(parser: argparse.ArgumentParser, args: argparse.Namespace, prefix: str) -> Path:
    """`--scratch`, or a new temporary directory named `prefix`...; `--report-only` needs the former."""
    if args.report_only and args.scratch is None:
        parser.error("--report-only needs --scratch")
    return (args.scratch or Path(tempfile.mkdtemp(prefix=prefix))).resolve()


def markdown_table(header: list[str], rows: list[list]) -> str:
    return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in [header, ["---"] * len(header), *rows])
