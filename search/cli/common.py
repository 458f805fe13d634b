"""What every command group shares: the consoles, how bad input ends a command, small parsers.

Kept light on purpose: a command imports what it needs inside its function, so `tadprune eval`
does not pay for torch, Optuna or Ray at start-up, nor `tadprune eval --json` for rich.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperGroup


class LazyConsole:
    """A rich `Console` made on first use: importing rich costs tens of milliseconds, which a
    command that prints plain text (`eval --json`) should not pay."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


console = LazyConsole()
errors = LazyConsole(stderr=True)

# `-h` as well as `--help`, on every command and group.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def group(help: str, cls: type[TyperGroup] | None = None) -> typer.Typer:
    """A command group (or the top-level app) with the settings every group shares; `cls`, a
    `TyperGroup` subclass, for a group that makes its sub-commands itself."""
    return typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                       context_settings=CONTEXT_SETTINGS, help=help, cls=cls)


@contextmanager
def user_input_errors() -> Iterator[None]:
    """Bad input (a spec, a file, a value) ends the command with its message and exit status 2,
    like any other usage error; a traceback is for bugs."""
    try:
        yield
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        from rich.markup import escape

        # Messages quote user text such as `[start_s, end_s]`, which rich would read as markup.
        errors.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        raise typer.Exit(2) from None


def parse_floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=option) from None


def print_metrics(metrics: dict) -> None:
    """A model's mAP per tIoU, latency, MACs and parameters as one table row."""
    from rich.table import Table

    # Short headers: the table must fit an 80-column terminal at every tIoU count the specs use.
    table = Table("mAP avg", *[f"@{t:g}" for t in metrics["tious"]], "ms", "GMACs", "M params")
    table.add_row(f"{100 * metrics['average_mAP']:.2f}", *[f"{100 * v:.2f}" for v in metrics["per_tiou"]],
                  f"{metrics['latency_ms']:.2f}", f"{metrics['macs'] / 1e9:.3f}", f"{metrics['params'] / 1e6:.3f}")
    console.print(table)


def format_speedup(speedup: dict) -> str:
    """`1.31x (1.28-1.34)`: the median of per-round ratios and its quartiles, flagged when unstable."""
    text = f"{speedup['median']:.2f}x ({speedup['q1']:.2f}-{speedup['q3']:.2f})"
    return text + (" unstable" if speedup["unstable"] else "")
