"""The `tadprune` command line: one module per command group, assembled here.

Every command imports the layers it drives inside its function, so start-up stays light.
"""
from __future__ import annotations

from . import compress, data, imports, models, study
from .common import group

app = group("Compress temporal action detection models by searching block-drop schedules.")
app.add_typer(data.app, name="data")
app.command()(models.train)
app.command()(models.predict)
app.command("eval")(models.evaluate)
app.command()(models.profile)
app.command()(compress.compress)
app.add_typer(study.app, name="study")
app.add_typer(imports.app, name="import")

__all__ = ["app"]
