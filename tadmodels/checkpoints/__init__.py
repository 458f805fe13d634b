"""Checkpoints from elsewhere: reading them safely, mapping their keys, importing them.

`IMPORTERS` / `run_import` (the registry `tadprune import` reads), backbone imports
(`read_backbone_import`), and `load_strict`, which every loader uses so that no load is partial.
Importing this package imports no torch; the submodules that convert do.
"""
from .registry import IMPORTERS, Importer, ImportResult, get_importer, run_import
from .report import ImportReport, KeyRecord

__all__ = ["IMPORTERS", "ImportReport", "ImportResult", "Importer", "KeyRecord", "get_importer", "run_import"]
