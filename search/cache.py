"""Caches shared by the trials of a study, on disk so that every worker process sees them.

- `PrefixCache`: the aligned model after each drop prefix. Schedules that share a prefix share
  that work; keyed by the base model's fingerprint, the ordered prefix and the alignment settings.
- `LatencyCache`: latency depends on what the forward pass computes, not on the weights or on
  which of several identical blocks went; keyed by compute signature, input shape and device. The
  first measurement stored stays, so an architecture has one latency in a study.
- `DeviceLock`: trials hold a device shared while they fine-tune or evaluate, and exclusively
  while they time, so no other trial on that host runs on that device during a measurement.

Every file is written under a temporary name and renamed into place, so a killed process never
leaves half an entry. An entry that does not read all the same (a disk error, a hand edit) is
deleted, named in `discarded` and reported as a miss, so the work is done again instead of the
same trial failing on every launch.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tadmodels.models import ModelConfig, TADModel

# What reading a damaged entry raises: missing or short files, bad bytes, text that does not
# parse (UnicodeDecodeError and JSONDecodeError are ValueErrors), weights that do not fit.
UNREADABLE = (OSError, ValueError, RuntimeError, yaml.YAMLError, SafetensorError)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:6]}.tmp")


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same directory, then rename: readers never see half a file."""
    tmp = _temporary(path)
    write(tmp)
    tmp.replace(path)


def _write_if_absent(path: Path, write: Callable[[Path], None]) -> bool:
    """Like `_atomic_write`, but an existing file wins (a hard link fails on an existing name,
    atomically, where a rename would replace it). True when this call's file is the one stored."""
    tmp = _temporary(path)
    write(tmp)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


class _Entries:
    """What the caches share: where entries are, and how a damaged one is discarded."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.discarded: list[str] = []

    def discard(self, paths: list[Path], error: Exception) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
        self.discarded.append(f"{paths[0]}: {type(error).__name__}: {error}")

    def take_discarded(self) -> list[str]:
        """The entries discarded since the last call (a trial reports those it met)."""
        taken, self.discarded = self.discarded, []
        return taken


class PrefixCache(_Entries):
    def __init__(self, root: Path, base_fingerprint: str, alignment: dict) -> None:
        super().__init__(root / "prefixes")
        self.base_fingerprint = base_fingerprint
        self.alignment = alignment

    def _paths(self, prefix: list[str]) -> tuple[Path, Path]:
        key = _digest(self.base_fingerprint, prefix, self.alignment)
        return self.root / f"{key}.safetensors", self.root / f"{key}.yaml"

    def put(self, prefix: list[str], model: TADModel) -> None:
        weights, config = self._paths(prefix)
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        _atomic_write(weights, lambda p: save_file(state, str(p)))
        # The architecture goes last: its presence marks a complete entry.
        _atomic_write(config, lambda p: p.write_text(yaml.safe_dump(model.architecture.model_dump(mode="json"))))

    def get(self, prefix: list[str]) -> TADModel | None:
        weights, config = self._paths(prefix)
        if not config.exists():
            return None
        try:
            model = TADModel(ModelConfig.model_validate(yaml.safe_load(config.read_text())))
            model.load_state_dict(load_file(str(weights)))  # strict: every key used, or it raises
        except UNREADABLE as error:
            self.discard([weights, config], error)
            return None
        return model.eval()

    def longest(self, drops: list[str]) -> tuple[int, TADModel | None]:
        """The longest cached prefix of `drops`: its length and model (0 and None if none is cached)."""
        for length in range(len(drops), 0, -1):
            model = self.get(drops[:length])
            if model is not None:
                return length, model
        return 0, None


class LatencyCache(_Entries):
    """Latency records (JSON), one file per (compute signature, input shape, device)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "latency")

    def _path(self, key: tuple) -> Path:
        return self.root / f"{_digest(*key)}.json"

    def get(self, key: tuple) -> dict | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or not isinstance(record.get("latency_ms"), (int, float)):
                raise ValueError("not a latency record")
        except UNREADABLE as error:
            self.discard([path], error)
            return None
        return record

    def put(self, key: tuple, record: dict) -> dict:
        """Store `record` unless a record is already there; returns the stored one, which every
        trial of that architecture then reports."""
        text = json.dumps(record)
        if _write_if_absent(self._path(key), lambda p: p.write_text(text)):
            return record
        stored = self.get(key)
        if stored is None:  # the one there was damaged and has been discarded: this one replaces it
            return self.put(key, record)
        return stored


class DeviceLock:
    """A readers-writer lock on one physical device, through `flock`.

    A device belongs to one host, so the lock file lives in the host's temporary directory (not
    the shared artifact directory, where every node's `cuda:0` would meet and where network file
    systems make `flock` unreliable). A GPU is named by its UUID, since Ray numbers each worker's
    visible GPUs from 0; the CPU is one device whatever thread count a trial uses."""

    def __init__(self, device: torch.device, directory: Path | None = None) -> None:
        directory = directory or Path(tempfile.gettempdir()) / "tadprune-device-locks"
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{physical_device_id(device)}.lock"

    @contextmanager
    def _hold(self, mode: int) -> Iterator[None]:
        with open(self.path, "a") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def shared(self):
        return self._hold(fcntl.LOCK_SH)

    def exclusive(self):
        return self._hold(fcntl.LOCK_EX)


def physical_device_id(device: torch.device) -> str:
    """`cpu`, or `cuda-<uuid>` for a GPU: the same name in every process of the host."""
    if device.type != "cuda":
        return device.type
    return f"cuda-{torch.cuda.get_device_properties(device).uuid}"
