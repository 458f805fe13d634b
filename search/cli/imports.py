"""`tadprune import NAME SRC --out DIR`: one sub-command per importer of `tadmodels.checkpoints`.

The commands are made from the registry: each importer's options model gives its `--options`
(field name, type, default and description), so a new importer needs no change here.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from tadmodels.checkpoints.registry import IMPORTERS, Importer

from .common import console, group, user_input_errors

app = group("Convert released checkpoints into tadprune's format (weights through safetensors or "
            "torch.load(weights_only=True); every key accounted for in import_report.json).")


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


for _importer in IMPORTERS.values():
    app.command(_importer.name)(_command(_importer))
