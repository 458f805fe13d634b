"""Training the base TAD model a spec describes, and writing it out with its metrics."""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..data.dataset import GridGeometry, TADDataset, collate, seed_worker
from ..data.formats import Annotations, load_annotations
from ..data.config import DataConfig
from ..data.synthetic import generate
from ..inference import evaluate_model
from ..models import TADModel
from ..profile import profile_model, resolve_device
from ..spec import ExperimentSpec, load_spec

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

    def evaluate(self, model: TADModel | None = None, profile: bool = True) -> dict:
        """mAP on the test subset and, with `profile`, MACs, parameters and latency of one
        `profile_positions` window."""
        model = model if model is not None else self.model
        result = evaluate_model(model, self.dataset(self.spec.data.test_subset), self.spec.eval.tious)
        scores = {"average_mAP": result.average_mAP, "per_tiou": list(result.per_tiou), "tious": list(result.tious)}
        if not profile:
            return scores
        positions = self.spec.eval.profile_positions or self.spec.data.max_seq_len
        profile = profile_model(model, positions, device=self.spec.train.device, repeats=self.spec.eval.latency_repeats,
                                threads=self.spec.train.threads)
        return {
            **scores, "latency_ms": profile.latency.median_ms, "latency": profile.latency.to_json(),
            "macs": profile.macs, "params": profile.params, "droppable_blocks": model.droppable_blocks(),
            "dropped_blocks": list(model.architecture.dropped), "fingerprint": model.fingerprint(),
        }


def lr_lambda(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to the base rate, then cosine decay to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no decay on biases and norm scales (1-D parameters), as ActionFormer trains."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def train(experiment: Experiment, show_progress: bool = True) -> TADModel:
    """Train `experiment.model` on the train subset; returns the EMA of its weights."""
    config = experiment.spec.train
    seed_everything(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = experiment.device
    model = experiment.model.to(device).train()
    loader = experiment.loader(experiment.spec.data.train_subset)
    total = config.epochs * len(loader)
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    warmup = round(config.warmup_epochs * len(loader))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_lambda, warmup_steps=max(1, warmup), total_steps=total))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task("train", total=total, loss=float("nan"))
        for epoch in range(config.epochs):
            for batch in loader:
                batch = batch.to(device)
                losses = model.detector.loss(model(batch.inputs, batch.mask), batch.segments, batch.labels)
                loss = losses["total"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss is {loss.item()} at epoch {epoch}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                ema.update_parameters(model)
                progress.update(task, advance=1, loss=loss.item(), description=f"train epoch {epoch + 1}/{config.epochs}")
    trained: TADModel = ema.module.to("cpu").eval()
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
    """A model directory written by `save_model`: weights through safetensors, never pickle."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / MODEL_FILE
    for path in (config_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; expected a model directory written by `tadprune train`")
    spec = load_spec(config_path)
    model = TADModel(spec.model)
    state = load_file(str(weights_path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights_path}: does not match {config_path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval(), spec


def train_and_save(spec: ExperimentSpec, out: Path, show_progress: bool = True) -> dict:
    experiment = Experiment.from_spec(spec)
    model = train(experiment, show_progress)
    metrics = experiment.evaluate(model)
    save_model(model, spec, out, metrics)
    return metrics
