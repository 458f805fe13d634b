"""Training the base TAD model a spec describes, and writing it out with its metrics."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from ..checkpoints.backbone import BACKBONE_WEIGHTS, is_backbone_import, read_backbone_import
from ..checkpoints.files import config_differences, load_strict
from ..data.dataset import GridGeometry, TADDataset, collate, seed_worker
from ..data.formats import Annotations, DataFormatError, load_annotations
from ..data.config import DataConfig
from ..data.synthetic import generate
from ..inference import evaluate_model
from ..models import TADModel
from ..profile import profile_model, resolve_device
from ..spec import ExperimentSpec, load_spec
from .loop import fit

MODEL_FILE, CONFIG_FILE, METRICS_FILE = "model.safetensors", "config.yaml", "metrics.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def ensure_dataset(config: DataConfig) -> None:
    """Generate the synthetic dataset a spec names when its root does not exist yet."""
    if config.annotations_path.exists():
        return
    if config.synthetic is None:
        raise FileNotFoundError(f"data.root: {config.annotations_path} does not exist and data.synthetic is not set")
    generate(config.synthetic.preset, config.root, seed=config.synthetic.seed)


def grid_geometry(data: DataConfig, model: TADModel) -> GridGeometry:
    if model.backbone is None:
        return GridGeometry(data.feature_stride, data.clip_length, model.sequence_multiple)
    return GridGeometry(model.temporal_stride, model.temporal_stride, model.sequence_multiple)


@dataclass
class Experiment:
    """A spec with its dataset read and its model built: what training, evaluation and compression share."""

    spec: ExperimentSpec
    annotations: Annotations
    model: TADModel

    @classmethod
    def from_spec(cls, spec: ExperimentSpec, model: TADModel | None = None) -> "Experiment":
        ensure_dataset(spec.data)
        annotations = load_annotations(spec.data.annotations_path, spec.data.labels)
        if spec.data.heldout_subset is not None:
            try:
                annotations.subset(spec.data.heldout_subset)
            except DataFormatError as error:
                hint = (" (a synthetic dataset generated before its preset had one: delete data.root to regenerate it)"
                        if spec.data.synthetic is not None else "")
                raise DataFormatError(f"data.heldout_subset: {error}{hint}") from None
        classes = spec.model.detector.num_classes
        if classes != len(annotations.label_names):
            raise ValueError(f"model.detector.num_classes is {classes} but {spec.data.annotations_path} "
                             f"has {len(annotations.label_names)} labels")
        if model is None:
            seed_everything(spec.train.seed)  # the initial weights are part of what the seed repeats
            model = TADModel(spec.model)
        return cls(spec, annotations, model)

    @property
    def device(self) -> torch.device:
        """Where training, alignment, block selection and evaluation run (`train.device`)."""
        return resolve_device(self.spec.train.device)

    def dataset(self, subset: str, train: bool = False) -> TADDataset:
        window = self.spec.data.max_seq_len if train else None
        return TADDataset(self.spec.data, self.annotations, subset, grid_geometry(self.spec.data, self.model),
                          window=window, seed=self.spec.train.seed)

    def loader(self, subset: str) -> DataLoader:
        """Shuffled training batches; videos are read (and decoded) in `data.num_workers` worker
        processes, each seeded from the loader's generator, so a run repeats with the same settings."""
        dataset = self.dataset(subset, train=True)
        frames = self.model.backbone is not None
        generator = torch.Generator().manual_seed(self.spec.train.seed)
        workers = self.spec.data.num_workers
        return DataLoader(dataset, batch_size=self.spec.train.batch_size, shuffle=True, generator=generator,
                          collate_fn=partial(collate, geometry=dataset.geometry, frames=frames,
                                             min_length=self.spec.data.max_seq_len),
                          num_workers=workers, worker_init_fn=seed_worker if workers else None)

    def evaluate(self, model: TADModel | None = None, profile: bool = True, baseline: TADModel | None = None) -> dict:
        """mAP on the test subset and, with `profile`, MACs, parameters and latency of one
        `profile_positions` window, timed as `eval.latency` says. With `baseline`, the two are
        timed side by side in the same rounds and the result adds `speedup` (the median of
        per-round ratios, with its quartiles) and `baseline_latency`."""
        model = model if model is not None else self.model
        result = evaluate_model(model, self.dataset(self.spec.data.test_subset), self.spec.eval.tious)
        scores = {"average_mAP": result.average_mAP, "per_tiou": list(result.per_tiou), "tious": list(result.tious)}
        if not profile:
            return scores
        positions = self.spec.eval.profile_positions or self.spec.data.max_seq_len
        profile = profile_model(model, positions, device=self.spec.train.device, config=self.spec.eval.latency,
                                threads=self.spec.train.threads, baseline=baseline)
        figures = profile.to_json()
        return {
            **scores, "latency_ms": profile.latency.median_ms, **figures, "droppable_blocks": model.droppable_blocks(),
            "dropped_blocks": list(model.architecture.dropped), "fingerprint": model.fingerprint(),
        }


def train(experiment: Experiment, show_progress: bool = True) -> TADModel:
    """Train `experiment.model` on the train subset; returns it with the EMA of its weights."""
    config = experiment.spec.train
    seed_everything(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model = experiment.model.to(experiment.device)

    def loss(batch) -> torch.Tensor:
        return model.detector.loss(model(batch.inputs, batch.mask), batch.segments, batch.labels)["total"]

    fit(model, experiment.loader(experiment.spec.data.train_subset), loss, config, "training", show_progress)
    trained: TADModel = model.to("cpu").eval()
    experiment.model = trained
    return trained


def experiment_sections(spec: ExperimentSpec, model: TADModel) -> dict:
    """The experiment part of a (possibly larger, study) spec, with the model's current architecture."""
    sections = spec.model_dump(mode="json", include=set(ExperimentSpec.model_fields))
    return {**sections, "model": model.architecture.model_dump(mode="json")}


def save_model(model: TADModel, spec: ExperimentSpec, out: Path, metrics: dict | None = None) -> None:
    """`model.safetensors` (weights), `config.yaml` (the spec, with the model's current architecture)
    and, when given, `metrics.json`. Written to temporary names first so a crash never leaves a
    half-written model next to a good config."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    files = {MODEL_FILE: lambda p: save_file(state, str(p), metadata={"fingerprint": model.fingerprint()}),
             CONFIG_FILE: lambda p: p.write_text(yaml.safe_dump(experiment_sections(spec, model), sort_keys=False))}
    if metrics is not None:
        files[METRICS_FILE] = lambda p: p.write_text(json.dumps(metrics, indent=2))
    for name, write in files.items():
        tmp = out / f".{name}.tmp"
        write(tmp)
        tmp.replace(out / name)


def load_model(directory: Path | str) -> tuple[TADModel, ExperimentSpec]:
    """A model directory written by `save_model`: weights through safetensors, never pickle, every
    key of the model and of the file matched."""
    directory = Path(directory)
    if is_backbone_import(directory):
        raise ValueError(f"{directory}: a backbone import, not a model; train a detector on it first: "
                         f"`tadprune train SPEC --init {directory}`")
    config_path, weights_path = directory / CONFIG_FILE, directory / MODEL_FILE
    for path in (config_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; expected a model directory written by `tadprune train`")
    spec = load_spec(config_path)
    model = TADModel(spec.model)
    load_strict(model, load_file(str(weights_path)), f"{weights_path} (against {config_path})")
    return model.eval(), spec


def initial_model(spec: ExperimentSpec, init: Path) -> TADModel:
    """The spec's model with the weights of `init`: a backbone import (its backbone; the detector
    starts fresh from `train.seed`) or a model directory (everything). The architectures must be
    equal; the fields that differ are named."""
    init = Path(init)
    if is_backbone_import(init):
        config, state = read_backbone_import(init)
        if spec.model.backbone is None:
            raise ValueError(f"--init {init}: a backbone import, but the spec's model runs on features (model.input_dim)")
        _refuse_differences(init, "model.backbone", config_differences(spec.model.backbone, config))
        seed_everything(spec.train.seed)
        model = TADModel(spec.model)
        load_strict(model.backbone, state, str(init / BACKBONE_WEIGHTS))
        return model
    model, saved = load_model(init)
    _refuse_differences(init, "model", config_differences(spec.model, saved.model))
    return model


def _refuse_differences(init: Path, section: str, differences: list[str]) -> None:
    if differences:
        raise ValueError(f"--init {init}: its architecture differs from the spec's {section} "
                         "(spec -> init): " + "; ".join(differences))


def train_and_save(spec: ExperimentSpec, out: Path, show_progress: bool = True, init: Path | None = None) -> dict:
    """Train the spec's model (from the weights of `init`, see `initial_model`), evaluate it, save it."""
    experiment = Experiment.from_spec(spec, initial_model(spec, init) if init is not None else None)
    model = train(experiment, show_progress)
    metrics = experiment.evaluate(model)
    save_model(model, spec, out, metrics)
    return metrics
