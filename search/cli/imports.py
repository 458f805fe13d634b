"""`tadprune import NAME SRC --out DIR`: one sub-command per importer of `tadmodels.checkpoints`.

The commands are made from the registry: each importer's options model gives its `--options`
(field name, type, default and description), so a new importer needs no change here. They are
made when the `import` group is used (run, listed, completed), not when the CLI starts: reading
the registry builds the importers' pydantic options models, tens of milliseconds that
`tadprune eval` should not pay.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from .common import console, group, user_input_errors

if TYPE_CHECKING:
    from typer._click import Command, Context

    from tadmodels.checkpoints.registry import Importer

HELP = ("Convert released checkpoints into tadprune's format (weights through safetensors or "
        "torch.load(weights_only=True); every key accounted for in import_report.json).")


class _ImporterCommands(TyperGroup):
    """The `import` group: its sub-commands are made from the registry on first use (click's
    documented way to load sub-commands lazily: `list_commands` and `get_command`)."""

    def list_commands(self, ctx: Context) -> list[str]:
        self._add_importers()
        return super().list_commands(ctx)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        self._add_importers()
        return super().get_command(ctx, cmd_name)

    def _add_importers(self) -> None:
        if self.commands:
            return
        from tadmodels.checkpoints.registry import IMPORTERS

        importers = group(HELP)
        for importer in IMPORTERS.values():
            importers.command(importer.name)(_command(importer))
        self.commands.update(typer.main.get_group(importers).commands)


app = group(HELP, cls=_ImporterCommands)
def _command(importer: Importer) -> Callable[..., None]:
    def command(source: Path, out: Path, **options: object) -> None:
        from tadmodels.checkpoints import run_import

        with user_input_errors():
            report = run_import(importer.name, source, out, {k: v for k, v in options.items() if v is not None})
        console.print(f"{importer.name}: {report.layout} from {source}", highlight=False)
        for line in report.summary():
            console.print(f"  {line}", highlight=False, markup=False)
        console.print(f"written to {out} (key by key: {out / 'import_report.json'})", highlight=False)

    parameters = [
        inspect.Parameter("source", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=Annotated[Path, typer.Argument(help=importer.source_help, show_default=False)]),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY,
                          annotation=Annotated[Path, typer.Option(help="new directory to write")]),
        *[inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=... if field.is_required() else field.default,
                            annotation=Annotated[field.annotation, typer.Option(help=field.description)])
          for name, field in importer.options.model_fields.items()],
    ]
    command.__signature__ = inspect.Signature(parameters)  # what typer reads the options from
    command.__doc__ = importer.summary
    return command
