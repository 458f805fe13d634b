"""Caches shared by the trials of a study, on disk so that every worker process sees them.

- `PrefixCache`: the aligned model after each drop prefix. Schedules that share a prefix share
  that work; keyed by the base model's fingerprint, the ordered prefix and the alignment settings.
- latency cache: latency depends on what the forward pass computes, not on the weights or on
  which of several identical blocks went; keyed by compute signature, input shape and device.
- result cache: what a finished schedule scored. Samplers propose a schedule again (many
  parameter vectors encode one schedule), and such a repeat completes from here without re-running;
  keyed by the study's trial-defining spec, the base model's fingerprint and the schedule.
- `DeviceLock`: trials hold a device shared while they fine-tune or evaluate, and exclusively
  while they time, so no other trial on that host runs on that device during a measurement.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from tadmodels.models import ModelConfig, TADModel


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(path)


class PrefixCache:
    def __init__(self, root: Path, base_fingerprint: str, alignment: dict) -> None:
        self.root = root / "prefixes"
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
        model = TADModel(ModelConfig.model_validate(yaml.safe_load(config.read_text())))
        model.load_state_dict(load_file(str(weights)))
        return model.eval()

    def longest(self, drops: list[str]) -> tuple[int, TADModel | None]:
        """The longest cached prefix of `drops`: its length and model (0 and None if none is cached)."""
        for length in range(len(drops), 0, -1):
            model = self.get(drops[:length])
            if model is not None:
                return length, model
        return 0, None


class JsonCache:
    """JSON records on disk, one file per key; `scope` is part of every key (a study, a base model)."""

    def __init__(self, root: Path, *scope: object) -> None:
        self.root = root
        self.scope = scope

    def _path(self, key: tuple) -> Path:
        return self.root / f"{_digest(*self.scope, *key)}.json"

    def get(self, key: tuple) -> dict | None:
        path = self._path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, key: tuple, record: dict) -> None:
        _atomic_write(self._path(key), lambda p: p.write_text(json.dumps(record)))


def latency_cache(root: Path) -> JsonCache:
    """Keys: (compute signature, input shape, device description)."""
    return JsonCache(root / "latency")


def result_cache(root: Path, spec_hash: str, base_fingerprint: str) -> JsonCache:
    """Keys: (schedule key,), within one trial-defining spec and base model."""
    return JsonCache(root / "results", spec_hash, base_fingerprint)


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
