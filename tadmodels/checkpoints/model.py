"""Full-model imports: a converted detector (with its backbone, end to end) written as an ordinary
model directory, the one `tadprune train` writes (`model.safetensors`, `config.yaml`), plus the
import report. `compress`, `profile`, `predict`, `train --init` and a study's `base_model` take it
as they take a trained model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from ..spec import ExperimentSpec
from .backbone import write_directory
from .files import load_strict
from .report import REPORT_FILE, ImportReport


@dataclass
class ModelImport:
    """A converted model: the spec sections it is written with, its weights under `TADModel`'s names
    (dropped blocks already absent), and the report."""

    spec: ExperimentSpec
    state: dict[str, Tensor]
    report: ImportReport

    def write(self, out: Path) -> None:
        """Check the weights fit the model exactly, then write the model directory in one step."""
        from ..models import TADModel
        from ..training import save_model

        model = TADModel(self.spec.model)
        load_strict(model, self.state, f"{self.report.source} (converted)")

        def fill(directory: Path) -> None:
            save_model(model.eval(), self.spec, directory)
            self.report.write(directory / REPORT_FILE)

        write_directory(out, fill)


def spec_name(config: Path, given: str | None) -> str:
    """The spec's `name`: the one given, else the config file's stem with other characters as `_`."""
    return given if given is not None else re.sub(r"[^A-Za-z0-9_.-]", "_", Path(config).stem) or "imported"
