"""Cross-depth alignment: a short LoRA fine-tune that lets the remaining blocks cover for a dropped one.

After each drop, LoRA adapters (peft) go on the attention projections of every remaining block,
the norms and the input embedding of the compressed part train with them (and, as PBD's release
does, the whole detector when `train_detector` is set), everything else stays frozen. The
optimisation is the loop training uses (`tadmodels.training.loop.fit`: warm-up and cosine, EMA,
mixed precision, clipping). The loss ties the student to a teacher: task loss + feature MSE per remaining block against
the teacher's block of the same original index + temperature-scaled KL on class scores + DIoU
between student and teacher segments at positive points. The adapters are merged afterwards, so
the aligned model is a plain model that costs nothing extra at inference.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from peft import LoraConfig
from peft.tuners.lora import LoraLayer, LoraModel
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from tadmodels.models import DetectorOutput, TADModel
from tadmodels.models.actionformer.losses import diou_loss_1d
from tadmodels.presets import fill_from_preset
from tadmodels.spec import PRECISION_HELP, Precision, added_field
from tadmodels.training import Experiment
from tadmodels.training.loop import fit
from tadmodels.training.trainer import seed_everything

from .alignment_presets import ALIGNMENT_PRESETS

ADAPTER = "alignment"


class AlignmentConfig(BaseModel):
    """Settings of one alignment step. `preset` fills the fields not given: `cheap` (the defaults:
    all loss weights 1 and T = 3.5 as in the paper, a short fp32 run of adapters, norms and input
    embedding) or `pbd` (PBD's release recipe, facts and sources in `pruning.alignment_presets`)."""

    model_config = ConfigDict(extra="forbid")

    preset: Literal["cheap", "pbd"] | None = added_field(None)
    epochs: int = Field(default=3, ge=0)
    lr: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_epochs: float = added_field(0.0, ge=0, description="linear warm-up, then cosine decay to zero")
    ema_decay: float | None = added_field(None, ge=0, lt=1, description="keep the EMA of the weights; None: the last weights")
    precision: Precision = added_field("fp32", description=PRECISION_HELP)
    train_detector: bool = added_field(False, description=(
        "also train the whole detector (embedding, its transformer, neck, heads), as PBD's release does; "
        "False: only the adapters and the compressed part's norms and input embedding train"))
    rank: int | None = Field(default=None, ge=1, description="LoRA rank; None: a quarter of the block width")
    lora_alpha: float | None = added_field(None, gt=0, description="LoRA scaling is lora_alpha / rank; None: the rank (scaling 1)")
    lora_init: Literal["kaiming_uniform", "normal"] = added_field("kaiming_uniform", description=(
        "LoRA A: peft's default (kaiming-uniform, std 1/sqrt(3 * fan_in)) or normal with std 1/sqrt(rank) as "
        "PBD's release; B starts at zero either way"))
    teacher: Literal["original", "previous"] = "original"
    task_weight: float = Field(default=1.0, ge=0)
    feature_weight: float = Field(default=1.0, ge=0)
    kl_weight: float = Field(default=1.0, ge=0)
    diou_weight: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=3.5, gt=0)
    grad_clip: float = Field(default=1.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        return fill_from_preset(data, ALIGNMENT_PRESETS)


def compressed_part(model: TADModel) -> str:
    """The module whose blocks are dropped: the backbone end to end, the detector on features."""
    return "backbone" if model.backbone is not None else "detector"


def lora_targets(model: TADModel) -> str:
    """Regex (peft matches it against full module names) of the layers that get adapters."""
    if model.backbone is None:
        return r"detector\.pyramid\.levels\.\d+\.blocks\.\d+\.attn\.(qkv|proj)"
    if model.architecture.backbone.type == "videomae":
        return r"backbone\.blocks\.\d+\.attn\.(qkv|proj)"
    return r"backbone\.stages\.\d+\.(big|little|fusion|blocks)\.\d+\.conv[123]"


def block_width(model: TADModel) -> int:
    if model.backbone is None:
        return model.architecture.detector.dim
    if model.architecture.backbone.type == "videomae":
        return model.architecture.backbone.dim
    return model.architecture.backbone.base_width


_NORMS = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)
_EMBEDDINGS = re.compile(r"^backbone\.(patch_embed|stem)\b|^detector\.pyramid\.embed\b")


def add_adapters(model: TADModel, config: AlignmentConfig) -> LoraModel:
    """LoRA (peft) on `lora_targets(model)`, initialised as `config.lora_init` says."""
    rank = config.rank or max(1, block_width(model) // 4)
    alpha = config.lora_alpha if config.lora_alpha is not None else rank
    lora = LoraModel(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=lora_targets(model),
                                       lora_dropout=0.0, init_lora_weights=True), ADAPTER)
    if config.lora_init == "normal":
        for module in lora.model.modules():
            if isinstance(module, LoraLayer):
                nn.init.normal_(module.lora_A[ADAPTER].weight, std=rank ** -0.5)
    return lora


def set_trainable(model: TADModel, config: AlignmentConfig) -> None:
    """Adapters, norms of the compressed part and its input embedding train, and with
    `config.train_detector` every detector parameter (chosen by module, `model.detector`); nothing
    else does."""
    part = compressed_part(model)
    trainable_modules = {name for name, module in model.named_modules()
                         if name.startswith(part) and (isinstance(module, _NORMS) or _EMBEDDINGS.match(name))}
    detector = {id(p) for p in model.detector.parameters()} if config.train_detector else set()
    for name, param in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        param.requires_grad = "lora_" in name or id(param) in detector or any(
            owner == m or owner.startswith(m + ".") for m in trainable_modules)


@contextmanager
def capture_block_outputs(model: TADModel, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """Record the output of each named block on every forward while the context is open."""
    outputs: dict[str, Tensor] = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: outputs.__setitem__(name, out)) for name in names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def distillation_losses(student: DetectorOutput, teacher: DetectorOutput, positive: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """KL between temperature-softened class distributions over valid points (times T^2), and DIoU
    between the student's and the teacher's segments at positive points."""
    valid = student.valid
    log_p_student = F.log_softmax(student.cls_logits[valid] / temperature, dim=-1)
    p_teacher = F.softmax(teacher.cls_logits[valid] / temperature, dim=-1)
    kl = F.kl_div(log_p_student, p_teacher, reduction="batchmean") * temperature ** 2
    if not positive.any():
        return kl, kl.new_zeros(())
    diou = diou_loss_1d(student.offsets[positive], teacher.offsets[positive]).mean()
    return kl, diou


def align(student: TADModel, teacher: TADModel, experiment: Experiment, config: AlignmentConfig,
          show_progress: bool = False) -> TADModel:
    """Fine-tune `student` towards `teacher` with merged-in LoRA; returns the plain aligned model
    (with `config.ema_decay`, the EMA of its weights).

    The student is modified in place (its adapters are merged into its weights).
    """
    if config.epochs == 0:
        return student
    # LoRA's initial weights come from the global RNG, which torch seeds at random in each process:
    # seeded here, the same student, teacher and data give the same aligned model in any process.
    seed_everything(experiment.spec.train.seed)
    lora = add_adapters(student, config)
    model = lora.model
    set_trainable(model, config)
    teacher = teacher.eval()
    blocks = student.droppable_blocks()
    fit(model, experiment.loader(experiment.spec.data.train_subset),
        lambda batch: alignment_loss(model, teacher, blocks, batch, config), config, "alignment", show_progress)
    merged: TADModel = lora.merge_and_unload()
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged.eval()


def alignment_loss(student: TADModel, teacher: TADModel, blocks: list[str], batch, config: AlignmentConfig) -> Tensor:
    segments, labels = batch.segments, batch.labels
    with torch.no_grad(), capture_block_outputs(teacher, blocks) as teacher_features:
        teacher_out = teacher(batch.inputs, batch.mask)
    with capture_block_outputs(student, blocks) as student_features:
        student_out = student(batch.inputs, batch.mask)
    task = student.detector.loss(student_out, segments, labels)["total"]
    feature = torch.stack([F.mse_loss(student_features[b], teacher_features[b]) for b in blocks]).mean()
    cls_targets, _ = student.detector.targets(student_out, segments, labels)
    positive = (cls_targets.sum(-1) > 0) & student_out.valid
    kl, diou = distillation_losses(student_out, teacher_out, positive, config.temperature)
    return (config.task_weight * task + config.feature_weight * feature
            + config.kl_weight * kl + config.diou_weight * diou)
