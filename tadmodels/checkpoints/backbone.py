"""Backbone imports: a converted backbone's weights and architecture in a directory of their own.

A backbone alone detects nothing, so an import of one is not a model directory: it is
`backbone.safetensors` (the backbone's state dict under tadprune's names), `backbone.yaml` (its
`VideoMAEConfig` or `BLVNetConfig`) and `import_report.json`. `tadprune train SPEC --init DIR` puts
it into the backbone of the spec's model, once the spec's `model.backbone` is the same architecture;
the model directory that training writes is what `compress`, `predict` and `study launch` take.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError
from safetensors.torch import save_file
from torch import Tensor

from ..models.tad_model import BackboneConfig, build_backbone
from .files import CheckpointError, load_strict, read_safetensors
from .report import REPORT_FILE, ImportReport

BACKBONE_WEIGHTS, BACKBONE_CONFIG = "backbone.safetensors", "backbone.yaml"


@dataclass
class BackboneImport:
    """A converted backbone: its architecture, its weights under tadprune's names, and the report."""

    config: BackboneConfig
    state: dict[str, Tensor]
    report: ImportReport

    def write(self, out: Path) -> None:
        """Check the weights fit the architecture exactly, then write the directory in one step."""
        backbone = build_backbone(self.config)
        load_strict(backbone, self.state, f"{self.report.source} (converted)")
        state = {k: v.detach().contiguous() for k, v in backbone.state_dict().items()}
        metadata = {"importer": self.report.importer, "source_sha256": self.report.sha256}
        config = yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)

        def fill(directory: Path) -> None:
            save_file(state, str(directory / BACKBONE_WEIGHTS), metadata=metadata)
            (directory / BACKBONE_CONFIG).write_text(config)
            self.report.write(directory / REPORT_FILE)

        write_directory(out, fill)


def write_directory(out: Path, fill: Callable[[Path], None]) -> None:
    """Make the new directory `out` with what `fill(directory)` writes into it, all or nothing:
    filled as a sibling temporary directory first, renamed to `out` at the end. An `out` that
    exists with anything in it is refused."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not empty; give a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_backbone_import(directory: Path) -> bool:
    return (Path(directory) / BACKBONE_CONFIG).is_file()


def read_backbone_import(directory: Path) -> tuple[BackboneConfig, dict[str, Tensor]]:
    """The architecture and weights of a backbone import (written by `BackboneImport.write`)."""
    directory = Path(directory)
    config_path, weights_path = directory / BACKBONE_CONFIG, directory / BACKBONE_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; expected a backbone import written by `tadprune import`")
    try:
        config = TypeAdapter(BackboneConfig).validate_python(yaml.safe_load(config_path.read_text()))
    except (ValidationError, yaml.YAMLError) as error:
        raise CheckpointError(f"{config_path}: not a backbone config: {error}") from None
    return config, read_safetensors(weights_path)
