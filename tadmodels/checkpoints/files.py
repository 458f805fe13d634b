"""Reading checkpoint files safely, and loading weights into a module with every key accounted for.

Weights come through safetensors or `torch.load(weights_only=True)`; a pickle that needs any other
Python object is refused. `allowed` lets exactly the named classes through for one load (MCG-NJU's
training script saves its `argparse.Namespace` beside the weights), nothing else.
"""
from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

LISTED_NAMES = 12  # names listed in one error message before "and N more"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is; the message names the file and the keys."""


def name_list(names: Iterable[str]) -> str:
    """`a, b, c` (sorted), cut after `LISTED_NAMES` with the count of the rest."""
    names = sorted(names)
    shown = ", ".join(names[:LISTED_NAMES])
    return shown + (f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else "")


def file_digest(path: Path) -> str:
    """sha256 of a file, for the import report."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_torch_file(path: Path, allowed: Sequence[type] = ()) -> Any:
    """`torch.load(path, weights_only=True)` with exactly the `allowed` classes let through."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"it needs the Python object {found.group(1)}" if found else str(error).splitlines()[0]
        raise CheckpointError(f"{path}: refused: {what}; checkpoints load with torch.load(weights_only=True), "
                              "which unpickles tensors and plain containers only") from None
    except (RuntimeError, EOFError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {str(error).splitlines()[0]}") from None


def read_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file: {error}") from None


def read_weights(path: Path, allowed: Sequence[type] = ()) -> Any:
    """A `.safetensors` file, or anything else as a weights-only PyTorch pickle."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    return read_safetensors(path) if path.suffix == ".safetensors" else read_torch_file(path, allowed)


def is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load `state` into `module` only if it fits exactly: the same keys and every shape equal.

    Otherwise nothing is loaded and the error names the missing keys, the unexpected keys and the
    keys whose shapes differ.
    """
    own = module.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    misshapen = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
                 for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    problems = [f"missing keys: {name_list(missing)}" if missing else "",
                f"unexpected keys: {name_list(unexpected)}" if unexpected else "",
                f"shapes differ: {name_list(misshapen)}" if misshapen else ""]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model; nothing loaded. " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def config_differences(expected: BaseModel, found: BaseModel, ignore: Iterable[str] = ("preset",)) -> list[str]:
    """`field: expected -> found` for each (dotted) field that differs, `ignore`d names left out."""
    skip = set(ignore)

    def walk(a: Any, b: Any, path: str) -> list[str]:
        if isinstance(a, BaseModel) and type(a) is type(b):
            a, b = dict(a), dict(b)
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for key in sorted(set(a) | set(b)) if key not in skip
                    for d in walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)]
        return [] if a == b else [f"{path}: {_shown(a)} -> {_shown(b)}"]

    return walk(expected, found, "")


def _shown(value: Any) -> str:
    return repr(value.model_dump(mode="json") if isinstance(value, BaseModel) else value)
