"""ActionFormer release checkpoints (github.com/happyharrycn/actionformer_release) as feature-mode models.

The release saves `{epoch, state_dict, state_dict_ema, optimizer, scheduler}` (`train.py`, through
`libs/utils/train_utils.py: save_checkpoint`), its weights under `module.` (it trains inside
`nn.DataParallel`); `eval.py` evaluates `state_dict_ema`, so that is what is imported by default.
Our detector has the release's module tree, so every key keeps its name (under `detector.`).

The architecture comes from the YAML config the checkpoint was trained with, merged over the
release's defaults (`RELEASE_DEFAULTS`) the way its `libs/core/config.py: load_config` does. At test
time the release pads every video's features to `max_seq_len` (and longer ones to its
`max_div_factor`, `meta_archs.py: preprocessing`); the imported detector pads the same way
(`pad_min_length`, `pad_multiple`), since the outputs at the last valid positions depend on it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..data.config import DataConfig
from ..evaluation import ANET_TIOUS, THUMOS14_TIOUS
from ..models import DetectorConfig, ModelConfig
from ..spec import EvalConfig, ExperimentSpec, TrainConfig
from .configs import read_config
from .files import CheckpointError, file_digest, name_list, read_weights
from .keymap import Rule, map_keys, pick_state_dict, strip_wrapper_prefixes
from .model import ModelImport, spec_name
from .registry import ActionFormerImportOptions
from .report import ImportReport

# The release's defaults (`libs/core/config.py: DEFAULTS`), for the sections the import reads; a
# YAML config is merged over them key by key (`_merge`: a default fills a key the YAML does not set).
RELEASE_DEFAULTS: dict[str, Any] = {
    "init_rand_seed": 1234567891,
    "dataset_name": "epic",
    "train_split": ["training"],
    "val_split": ["validation"],
    "model_name": "LocPointTransformer",
    "dataset": {
        "feat_stride": 16, "num_frames": 32, "default_fps": None, "input_dim": 2304, "num_classes": 97,
        "downsample_rate": 1, "max_seq_len": 2304, "trunc_thresh": 0.5, "crop_ratio": None, "force_upsampling": False,
    },
    "loader": {"batch_size": 8, "num_workers": 4},
    "model": {
        "backbone_type": "convTransformer", "fpn_type": "identity", "backbone_arch": [2, 2, 5], "scale_factor": 2,
        "regression_range": [[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 10000]], "n_head": 4,
        "n_mha_win_size": -1, "embd_kernel_size": 3, "embd_dim": 512, "embd_with_ln": True, "fpn_dim": 512,
        "fpn_with_ln": True, "fpn_start_level": 0, "head_dim": 512, "head_kernel_size": 3, "head_num_layers": 3,
        "head_with_ln": True, "max_buffer_len_factor": 6.0, "use_abs_pe": False, "use_rel_pe": False,
    },
    "train_cfg": {
        "center_sample": "radius", "center_sample_radius": 1.5, "loss_weight": 1.0, "cls_prior_prob": 0.01,
        "init_loss_norm": 2000, "clip_grad_l2norm": -1, "head_empty_cls": [], "dropout": 0.0, "droppath": 0.1,
        "label_smoothing": 0.0,
    },
    "test_cfg": {
        "pre_nms_thresh": 0.001, "pre_nms_topk": 5000, "iou_threshold": 0.1, "min_score": 0.01, "max_seg_num": 1000,
        "nms_method": "soft", "nms_sigma": 0.5, "duration_thresh": 0.05, "multiclass_nms": True,
        "ext_score_file": None, "voting_thresh": 0.75,
    },
    "opt": {
        "type": "AdamW", "momentum": 0.9, "weight_decay": 0.0, "learning_rate": 1e-3, "epochs": 30, "warmup": True,
        "warmup_epochs": 5, "schedule_type": "cosine", "schedule_steps": [], "schedule_gamma": 0.1,
    },
}
# The release's `ModelEma` decay (`libs/utils/train_utils.py`).
RELEASE_EMA_DECAY = 0.999
# tIoU thresholds of the release's dataset classes (`libs/datasets/*.py`, `tiou_thresholds`).
RELEASE_TIOUS = {"thumos": list(THUMOS14_TIOUS), "anet": list(ANET_TIOUS),
                 "epic": [0.1, 0.2, 0.3, 0.4, 0.5], "ego4d": [0.1, 0.2, 0.3, 0.4, 0.5]}

RULES: tuple[Rule, ...] = (
    Rule(r"(backbone|neck|cls_head|reg_head)\..+", r"detector.\g<0>", "copied (the release's module tree)"),
)
TRAIN_KEYS = ("center_sample", "center_sample_radius", "loss_weight", "cls_prior_prob", "init_loss_norm",
              "head_empty_cls", "dropout", "droppath", "label_smoothing")
TEST_KEYS = ("pre_nms_thresh", "pre_nms_topk", "iou_threshold", "min_score", "max_seg_num", "nms_method", "nms_sigma",
             "duration_thresh", "multiclass_nms", "voting_thresh")


def convert(source: Path, options: ActionFormerImportOptions) -> ModelImport:
    """An ActionFormer release checkpoint and its YAML config as a feature-mode tadprune model."""
    report = ImportReport("actionformer", str(source), file_digest(source) if source.is_file() else "",
                          layout="ActionFormer release")
    config = load_release_config(options.config)
    state, removed = strip_wrapper_prefixes(pick_state_dict(read_weights(source), options.state_key, str(source), report))
    if removed:
        report.notes.append(f"prefix {removed!r} removed from every key")
    weights = {}
    for key, (target, how) in map_keys(state, "", RULES, str(source)).items():
        report.map(removed + key, target, how)
        weights[target] = state[key]
    spec = ExperimentSpec(
        name=spec_name(options.config, options.name), data=release_data_config(config, options, report),
        model=ModelConfig(input_dim=config["dataset"]["input_dim"], detector=release_detector_config(config)),
        train=_train_config(config, report), eval=EvalConfig(tious=_tious(config, report)))
    report.notes.append(f"config: {options.config} (merged over the release's defaults)")
    return ModelImport(spec, weights, report)


def load_release_config(path: Path) -> dict[str, Any]:
    """A release YAML config with the defaults filled in, as `load_config` merges them."""
    config = read_config(path)
    merged = _merge_defaults(RELEASE_DEFAULTS, config, str(path))
    unknown = sorted(set(merged["model"]) - set(RELEASE_DEFAULTS["model"]))
    if unknown:
        raise CheckpointError(f"{path}: model: keys the release's LocPointTransformer does not take: {name_list(unknown)}")
    if merged["model_name"] != "LocPointTransformer":
        raise CheckpointError(f"{path}: model_name {merged['model_name']!r}; only LocPointTransformer is imported")
    return merged


def _merge_defaults(defaults: dict[str, Any], config: dict[str, Any], source: str, where: str = "") -> dict[str, Any]:
    """The release's `_merge(defaults, config)`: defaults fill the keys the config leaves out."""
    merged = dict(config)
    for key, default in defaults.items():
        if key not in config:
            merged[key] = copy.deepcopy(default)
        elif isinstance(default, dict):
            if not isinstance(config[key], dict):
                raise CheckpointError(f"{source}: {where}{key} must be a mapping, got {config[key]!r}")
            merged[key] = _merge_defaults(default, config[key], source, f"{where}{key}.")
    return merged


def max_div_factor(strides: list[int], windows: list[int]) -> int:
    """The release's padding multiple (`LocPointTransformer.__init__`): per level its stride, times
    the window's `(w // 2) * 2` where attention is local; the largest."""
    return max(stride * (window // 2) * 2 if window > 1 else stride for stride, window in zip(strides, windows))


def release_detector_config(config: dict[str, Any]) -> DetectorConfig:
    """Our `DetectorConfig` for a merged release config (its `model`, `dataset`, `train_cfg`, `test_cfg`)."""
    model, dataset, test = config["model"], config["dataset"], config["test_cfg"]
    unsupported = {"model.backbone_type": (model["backbone_type"], "convTransformer"),
                   "model.use_rel_pe": (model["use_rel_pe"], False), "test_cfg.ext_score_file": (test["ext_score_file"], None)}
    for name, (value, supported) in unsupported.items():
        if value != supported:
            raise CheckpointError(f"{name}: {value!r} is not supported (tadprune's detector has {supported!r} only)")
    arch = tuple(model["backbone_arch"])
    window = model["n_mha_win_size"]
    windows = window if isinstance(window, list) else [window] * (arch[2] + 1)
    strides = [model["scale_factor"] ** level for level in range(arch[2] + 1)]
    try:
        return DetectorConfig(
            num_classes=dataset["num_classes"], dim=model["embd_dim"], fpn_dim=model["fpn_dim"], head_dim=model["head_dim"],
            num_heads=model["n_head"], window=window, arch=arch, scale_factor=model["scale_factor"],
            embed_kernel=model["embd_kernel_size"], embed_with_ln=model["embd_with_ln"], fpn=model["fpn_type"],
            fpn_with_ln=model["fpn_with_ln"], fpn_start_level=model["fpn_start_level"],
            head_layers=model["head_num_layers"], head_kernel=model["head_kernel_size"], head_with_ln=model["head_with_ln"],
            regression_range=[tuple(r) for r in model["regression_range"]], use_abs_pe=model["use_abs_pe"],
            max_seq_len=dataset["max_seq_len"], pad_min_length=dataset["max_seq_len"],
            pad_multiple=max_div_factor(strides, windows),
            train={k: config["train_cfg"][k] for k in TRAIN_KEYS}, test={k: test[k] for k in TEST_KEYS})
    except ValidationError as error:
        raise CheckpointError(f"the release config does not make a valid detector: {error}") from None


def release_data_config(config: dict[str, Any], options: ActionFormerImportOptions, report: ImportReport) -> DataConfig:
    """The dataset section: grid geometry and subsets from the config; where the files are from
    `--data-root` (tadprune's layout), else from the config's `json_file` and `feat_folder`."""
    dataset = config["dataset"]
    for name, plain in (("downsample_rate", 1), ("force_upsampling", False)):
        if dataset[name] != plain:
            raise CheckpointError(f"dataset.{name}: {dataset[name]!r}; tadprune reads features as they are stored "
                                  f"({name} {plain!r})")
    if dataset.get("file_prefix") or dataset.get("file_ext", ".npy") != ".npy":
        report.notes.append(f"the release reads {dataset.get('file_prefix') or ''}<video>{dataset.get('file_ext')}; "
                            "tadprune reads <video>.npy")
    for split in ("train_split", "val_split"):
        if len(config[split]) > 1:
            report.notes.append(f"{split} {config[split]}: the data section takes the first")
    paths: dict[str, Any] = {"root": options.data_root} if options.data_root is not None else _release_paths(dataset)
    return DataConfig(kind="features", fps=dataset["default_fps"], feature_stride=dataset["feat_stride"],
                      clip_length=dataset["num_frames"], train_subset=config["train_split"][0],
                      test_subset=config["val_split"][0], max_seq_len=dataset["max_seq_len"], **paths)


def _release_paths(dataset: dict[str, Any]) -> dict[str, Any]:
    """`root`, `annotations`, `inputs_dir` from the config's paths (relative to where the release ran)."""
    if "json_file" not in dataset or "feat_folder" not in dataset:
        raise CheckpointError("dataset: json_file and feat_folder are not in the config; give --data-root")
    json_file, folder = os.path.normpath(dataset["json_file"]), os.path.normpath(dataset["feat_folder"])
    try:
        root = os.path.commonpath([os.path.dirname(json_file), folder])
    except ValueError:  # one absolute, one relative
        root = ""
    return {"root": Path(root or "."), "annotations": os.path.relpath(json_file, root or "."),
            "inputs_dir": os.path.relpath(folder, root or ".")}


def _train_config(config: dict[str, Any], report: ImportReport) -> TrainConfig:
    """The release's `opt`, `loader` and seed as our training loop's settings (for `train --init`)."""
    opt = config["opt"]
    if opt["type"] != "AdamW" or opt["schedule_type"] != "cosine":
        report.notes.append(f"opt: {opt['type']} with a {opt['schedule_type']} schedule; tadprune trains with AdamW "
                            "and a cosine schedule")
    warmup = opt["warmup_epochs"] if opt["warmup"] else 0
    clip = config["train_cfg"]["clip_grad_l2norm"]
    if clip <= 0:
        report.notes.append("train_cfg.clip_grad_l2norm <= 0 (no clipping); tadprune always clips, at 1.0")
    return TrainConfig(epochs=opt["epochs"] + warmup, batch_size=config["loader"]["batch_size"], lr=opt["learning_rate"],
                       weight_decay=opt["weight_decay"], warmup_epochs=warmup, ema_decay=RELEASE_EMA_DECAY,
                       grad_clip=clip if clip > 0 else 1.0, seed=config["init_rand_seed"])


def _tious(config: dict[str, Any], report: ImportReport) -> list[float]:
    name = config["dataset_name"]
    if name not in RELEASE_TIOUS:
        report.notes.append(f"dataset_name {name!r}: tIoU thresholds unknown, THUMOS14's used")
    return RELEASE_TIOUS.get(name, list(THUMOS14_TIOUS))
