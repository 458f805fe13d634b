"""From a loaded checkpoint file to named source keys and where each one goes.

Shared by the importers: finding the weights inside a training checkpoint's wrapper dict, removing
the wrapper prefixes of data-parallel training, and mapping every key by a table of rules. A key
that no rule covers stops the import with its name: nothing is dropped unless a rule says why.
"""
from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .files import CheckpointError, is_state_dict, name_list
from .report import ImportReport

# Where training scripts keep the weights, in the order they are looked for: MCG-NJU saves `model`
# (and DeepSpeed `module`), OpenTAD and IBM's bLVNet-TAM `state_dict`.
STATE_KEYS = ("model", "module", "state_dict")
# Prefixes a whole state dict carries from the wrapper it was saved through (DataParallel/DDP, torch.compile).
WRAPPER_PREFIXES = ("module.", "model.", "_orig_mod.")


@dataclass(frozen=True)
class Rule:
    """Keys that fully match `pattern` go to `target` (a `re` replacement template), or, with
    `target=None`, are left out for the reason `how` gives."""

    pattern: str
    target: str | None
    how: str


def pick_state_dict(loaded: Any, state_key: str | None, source: str, report: ImportReport) -> dict[str, Tensor]:
    """The state dict inside a loaded file: the file itself, or the entry `state_key` (default: the
    first of `STATE_KEYS` present) of a training checkpoint. Every other entry is named in the report."""
    if is_state_dict(loaded) and state_key is None:
        return dict(loaded)
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{source}: holds a {type(loaded).__name__}, expected a state dict or a dict holding one")
    keys = [state_key] if state_key is not None else [k for k in STATE_KEYS if k in loaded]
    if not keys or keys[0] not in loaded or not is_state_dict(loaded[keys[0]]):
        raise CheckpointError(f"{source}: no weights under {state_key or ' / '.join(STATE_KEYS)}; its entries are "
                              f"{name_list(map(str, loaded))}; name the one with the weights (--state-key)")
    chosen = keys[0]
    for key, value in loaded.items():
        if key == chosen:
            continue
        if is_state_dict(value):
            report.map(f"{key}.*", None, f"not imported: other weights in the file ({chosen!r} was chosen; --state-key picks)")
        else:
            report.map(str(key), None, "not imported: training state")
        if isinstance(value, argparse.Namespace):
            report.notes.append(f"training arguments ({key}): " + ", ".join(
                f"{name}={getattr(value, name)!r}" for name in ("model", "input_size", "num_frames", "tubelet_size")
                if hasattr(value, name)))
    report.notes.append(f"weights taken from the entry {chosen!r}")
    return dict(loaded[chosen])


def strip_wrapper_prefixes(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Remove prefixes every key carries (`module.` of DataParallel, ...); returns the state and what was removed."""
    removed = ""
    while True:
        prefix = next((p for p in WRAPPER_PREFIXES if all(key.startswith(p) for key in state)), None)
        if prefix is None:
            return state, removed
        state = {key[len(prefix):]: value for key, value in state.items()}
        removed += prefix


def map_keys(state: Mapping[str, Tensor], root: str, rules: Sequence[Rule], source: str) -> dict[str, tuple[str | None, str]]:
    """`{source key: (target or None, how)}` for every key; keys under `root` are matched without it.

    Raises naming every key no rule covers."""
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]
    mapped: dict[str, tuple[str | None, str]] = {}
    unknown = []
    for key in state:
        relative = key[len(root):] if key.startswith(root) else key
        for pattern, rule in compiled:
            match = pattern.fullmatch(relative)
            if match:
                mapped[key] = (match.expand(rule.target) if rule.target is not None else None, rule.how)
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: keys this importer does not know (refused rather than dropped): {name_list(unknown)}")
    return mapped
