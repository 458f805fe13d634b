"""A tiny end-to-end setting the pruning and search tests share: a few synthetic videos, a small
VideoMAE-style model trained for a moment, saved as a model directory."""
from __future__ import annotations

from pathlib import Path

import yaml

from search.spec import StudySpec
from tadmodels.data import generate
from tadmodels.training import train_and_save

SPEC = {
    "name": "tiny",
    "data": {"root": None, "kind": "frames", "max_seq_len": 64},
    "model": {"backbone": {"type": "videomae", "preset": "tiny", "depth": 4, "dim": 32, "num_heads": 2},
              "detector": {"num_classes": 4, "dim": 32, "num_heads": 2, "window": 9, "levels": 5}},
    "train": {"epochs": 1, "batch_size": 2, "lr": 1e-3, "warmup_epochs": 0, "threads": 1},
    "eval": {"latency": {"min_repeats": 2, "max_repeats": 3, "warmup": 1}},
    "base_model": None,
    "search": {"max_drops": 2, "channel_ratios": [0.0, 0.5]},
    "alignment": {"epochs": 1, "lr": 1e-3},
    "selection": {"criterion": "mse"},
    "latency": {"device": "cpu", "min_repeats": 2, "max_repeats": 3, "warmup": 1, "threads": 1},
    "sampler": "random",
    "n_trials": 4,
    "runner": {"kind": "local", "max_concurrent": 2},
}


def build_setting(root: Path) -> Path:
    """Data, a trained base model and a study spec under `root`; returns the spec's path."""
    data = generate("demo", root / "data", max_videos=4)
    spec = {**SPEC, "data": {**SPEC["data"], "root": str(data)}, "base_model": str(root / "base"),
            "storage": f"sqlite:///{root / 'study.db'}", "artifacts": str(root / "artifacts")}
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    train_and_save(StudySpec.model_validate(spec), root / "base", show_progress=False)
    return path
