"""The importers `tadprune import` offers: each one's name, options and where its conversion lives.

Light on purpose (pydantic only, no torch): the CLI reads `IMPORTERS` when its `import` group is
used, to give each importer its sub-command with one option per field of its options model; the
module that converts is imported only when an import runs.

Adding an importer (say `foo`) takes one module and one entry:

1. `tadmodels/checkpoints/foo.py` with `convert(source: Path, options) -> ImportResult`;
2. its options model here (a pydantic model, one field per CLI option, `description` as the help)
   and an `Importer(name="foo", ..., converter="foo:convert")` in `IMPORTERS`.

Backbone imports return a `BackboneImport` (`backbone.py`), full-model imports a `ModelImport`
(`model.py`), which writes an ordinary model directory.

`run_import` does the rest: validates the options, converts, and has the result write itself
(`ImportResult.write(out)`: checks its weights load strictly, then writes a new directory in one
step), returning its report.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .report import ImportReport


class ImportResult(Protocol):
    """What a converter returns: the report, and how the result writes itself to a new directory."""

    report: ImportReport

    def write(self, out: Path) -> None: ...


class VideoMAEImportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(default=None, description=(
        "check the architecture against this VideoMAE preset (S, B, L) and take its img_size and num_frames"))
    num_heads: int | None = Field(default=None, ge=1, description=(
        "attention heads, where neither the checkpoint nor --preset tells them (released widths are known)"))
    img_size: int | None = Field(default=None, ge=1, description=(
        "frame size the imported backbone takes; default: the preset's, the Hugging Face config's, "
        "the stored position table's, else 224"))
    num_frames: int | None = Field(default=None, ge=1, description=(
        "frames per chunk; default: the preset's, the Hugging Face config's, else 16"))
    pos_table_img_size: int | None = Field(default=None, ge=1, description=(
        "make the fixed position table for this frame size and resize it to img_size, as OpenTAD and PBD "
        "do (224); default: the stored table's size, else img_size"))
    fc_norm: bool | None = Field(default=None, description=(
        "keep fc_norm (default for MCG-NJU and Hugging Face checkpoints) or drop it (default for OpenTAD, "
        "whose feature path skips it)"))
    state_key: str | None = Field(default=None, description=(
        "the entry of a training checkpoint that holds the weights; default: model, module or state_dict"))


class BLVNetImportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_frames: int = Field(default=16, ge=2, description="input frames per chunk (2T: the release's f8x2 is 16)")
    img_size: int = Field(default=224, ge=1, description="frame size the imported backbone takes")
    beta: int = Field(default=4, ge=1, description="Little branch depth divisor (the release uses 4)")
    state_key: str | None = Field(default=None, description=(
        "the entry of a training checkpoint that holds the weights; default: model, module or state_dict"))


class ModelImportOptions(BaseModel):
    """What every full-model import takes: the config the checkpoint was trained with, and what the
    model directory's spec sections say beyond the model (its name, where the dataset is)."""

    model_config = ConfigDict(extra="forbid")

    config: Path = Field(description="the config the checkpoint was trained with")
    name: str | None = Field(default=None, description="the model's name in its config.yaml; default: the config's file name")
    data_root: Path | None = Field(default=None, description=(
        "the dataset in tadprune's layout (annotations.json, features/, frames/ or videos/); default: the paths in the config"))


class ActionFormerImportOptions(ModelImportOptions):
    state_key: str = Field(default="state_dict_ema", description=(
        "the checkpoint entry with the weights: state_dict_ema (what the release's eval.py uses) or state_dict"))


class OpenTADImportOptions(ModelImportOptions):
    state_key: str | None = Field(default=None, description=(
        "the checkpoint entry with the weights; default: state_dict_ema when the config's solver.ema is on "
        "(what OpenTAD's test.py loads), else state_dict"))
    img_size: int | None = Field(default=None, ge=1, description=(
        "frame size the end-to-end backbone takes; default: the square crop of the config's test pipeline"))
    class_map: Path | None = Field(default=None, description=(
        "OpenTAD's class map (category_idx.txt, one name per line); default: the config's, else the sorted "
        "label names of the annotations, as OpenTAD writes it"))
    fps: float | None = Field(default=None, gt=0, description=(
        "frame rate of the dataset's videos, of which OpenTAD takes every snippet_stride-th frame (end to end: "
        "data.fps is this / snippet_stride); default: the annotations' fps, when every video has the same"))


@dataclass(frozen=True)
class Importer:
    name: str  # `tadprune import NAME`
    summary: str  # the command's help
    source_help: str  # what SRC is
    options: type[BaseModel]
    converter: str  # "module:function" in this package, imported when the import runs

    def convert(self, source: Path, options: Mapping[str, Any] | BaseModel) -> ImportResult:
        if not isinstance(options, self.options):
            try:
                options = self.options.model_validate(dict(options))
            except ValidationError as error:
                raise ValueError(f"import {self.name}: bad options: {error}") from None
        module_name, function_name = self.converter.split(":")
        function: Callable[[Path, BaseModel], ImportResult] = getattr(
            importlib.import_module(f"{__package__}.{module_name}"), function_name)
        return function(Path(source), options)


IMPORTERS: dict[str, Importer] = {importer.name: importer for importer in (
    Importer("videomae", "Import a VideoMAE backbone: MCG-NJU pre-training or fine-tuned .pth, a Hugging Face "
             "VideoMAE directory, or an OpenTAD/mmaction2 ViT checkpoint.",
             "checkpoint file (.pth, .bin, .safetensors) or Hugging Face model directory",
             VideoMAEImportOptions, "videomae:convert"),
    Importer("blvnet", "Import IBM's bLVNet-TAM weights as a backbone.",
             "checkpoint file (.pth.tar, .pth)", BLVNetImportOptions, "blvnet:convert"),
    Importer("actionformer", "Import an ActionFormer release checkpoint (happyharrycn/actionformer_release) with "
             "its YAML config as a feature-mode model directory.",
             "checkpoint file (.pth.tar)", ActionFormerImportOptions, "actionformer:convert"),
    Importer("opentad", "Import an OpenTAD or PBD ActionFormer checkpoint (end to end on VideoMAE, blocks dropped "
             "and LoRA unmerged allowed, or on features) with its .py or YAML config as a model directory.",
             "checkpoint file (.pth)", OpenTADImportOptions, "opentad:convert"),
)}


def get_importer(name: str) -> Importer:
    if name not in IMPORTERS:
        raise ValueError(f"no importer {name!r}; expected one of {sorted(IMPORTERS)}")
    return IMPORTERS[name]


def run_import(name: str, source: Path, out: Path, options: Mapping[str, Any] | BaseModel | None = None) -> ImportReport:
    """Convert `source` with the importer `name` and write the result to the new directory `out`."""
    result = get_importer(name).convert(Path(source), options or {})
    result.write(Path(out))
    return result.report
