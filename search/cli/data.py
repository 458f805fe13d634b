"""`tadprune data ...`: datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console, group, user_input_errors

app = group("Datasets: synthetic generation.")


@app.command("synth")
def synth(
    preset: Annotated[str, typer.Option(help="synthetic preset, e.g. demo, demo-videos, demo-features, thumos-like")],
    out: Annotated[Path, typer.Option(help="directory to write")],
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
) -> None:
    """Write a synthetic dataset in the THUMOS14/ActivityNet formats."""
    from tadmodels.data.synthetic import PRESETS, generate

    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}", param_hint="--preset")
    with user_input_errors():
        generate(preset, out, seed=seed)
    console.print(f"wrote {preset} (seed {seed}) to {out}")
