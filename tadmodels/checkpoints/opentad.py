"""OpenTAD checkpoints (github.com/sming256/OpenTAD) and PBD's (its fork, nanxiaolu/Progressive_Block_Drop-TAD):
ActionFormer end to end on a VideoMAE backbone, or on precomputed features.

What they save (`opentad/utils/checkpoint.py`): `{epoch, state_dict, state_dict_ema, optimizer,
scheduler}`, `state_dict` under DDP's `module.`; `tools/test.py` evaluates `state_dict_ema` when the
config's `solver.ema` is on. Their module tree against ours:

- `backbone.model.backbone.*`: the ViT of mmaction2's `Recognizer3D` (OpenTAD's `VisionTransformerCP`,
  PBD's `VisionTransformerLongLoRA` / `...Student` / `...Teacher`), converted by the VideoMAE
  importer's OpenTAD rules (`patch_embed.projection`, `mlp.layers.0.0` / `mlp.layers.1`, the 224-px
  sine table resized to the test crop, `fc_norm` unused). PBD's LoRA (`attn.lora_qkv.A/B`,
  `attn.lora_proj.A/B`, `x @ A @ B` added to the linear's output with alpha 1) is merged as its
  `tools/model_converters/merge_model.py` does: `W + (A @ B)^T`. A dropped block is an
  `nn.Identity` in their block list, so its index has no keys: it becomes `ModelConfig.dropped`.
- `projection.*` (`Conv1DTransformerProj`) -> `detector.backbone.*`: `embed.{i}.conv/norm` ->
  `embd.{i}.conv` / `embd_norm.{i}`; stem and branch blocks keep their names; LayerNorms are
  `nn.LayerNorm` (`[C]`) where the release's are `[1, C, 1]`.
- `neck.fpn_norms.*` -> `detector.neck.fpn_norms.*`; `rpn_head.cls_convs` / `reg_convs` ->
  `detector.cls_head` / `reg_head` `.head.{i}.conv` and `.norm.{i}`; `rpn_head.cls_head` /
  `reg_head` -> `cls_head.cls_head.conv` / `reg_head.offset_head.conv`; `rpn_head.scale` ->
  `reg_head.scale`; `rpn_head.loss_normalizer` (a buffer: training state) is not imported.

Where the computation differs from the release's, the imported config says so: OpenTAD's
`ConvModule` normalises with epsilon 1e-6 and zeroes padded positions after the activation
(embedding, heads; `FPNIdentity`'s norms also use 1e-6): `conv_norm_eps`, `mask_conv_outputs`. The
backbone's features are averaged over space per tubelet step and, in PBD's configs, interpolated
linearly from 384 to 768 positions per 768-frame window (`feature_upsample`). `pad_data` pads the
detector's input to `max_seq_len` (768) as the release does (`pad_min_length`, `pad_multiple`).

The data section runs as OpenTAD tests: a `SlidingWindowDataset` test set gives the inference
windows; end to end, videos are decoded at the annotations' frame rate over the snippet stride, resized
and cropped as the test pipeline says (a step tadprune cannot do is refused), or frames are read.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import Tensor

from ..data.config import DataConfig, VideoDecoding
from ..data.formats import DataFormatError, load_annotations
from ..data.video import VIDEO_EXTENSIONS
from ..models import DetectorConfig, ModelConfig
from ..models.tad_model import PIXEL_MEAN, PIXEL_STD
from ..spec import EvalConfig, ExperimentSpec, TrainConfig, validation_problems
from .actionformer import max_div_factor
from .configs import read_config
from .files import CheckpointError, file_digest, name_list, read_weights
from .keymap import Rule, map_keys, pick_state_dict, strip_wrapper_prefixes
from .model import ModelImport, spec_name
from .registry import OpenTADImportOptions, VideoMAEImportOptions
from .report import ImportReport
from .videomae import convert_state

VIT_ROOT = "backbone.model.backbone."
# ViTs of OpenTAD and PBD that compute what tadprune's VideoMAE backbone computes (blocks dropped,
# LoRA merged); the others (adapters, ReLU attention, ...) are refused by name.
VIT_TYPES = ("VisionTransformerCP", "VisionTransformerLongLoRA", "VisionTransformerLongLoRAStudent",
             "VisionTransformerTeacher", "mmaction.VisionTransformer")
DETECTOR_TYPES = ("ActionFormer", "ActionFormerStudent", "ActionFormerTeacher")
LORA_SCALING = 1.0  # PBD's LoRALayer(alpha=1): its Attention never passes another alpha
LORA = re.compile(r"blocks\.(\d+)\.attn\.lora_(qkv|proj)\.(A|B)")
# OpenTAD's end-to-end feature path: chunks of frames through the ViT, spatial mean, chunks back in a row.
PRE_PIPELINE = ({"type": "Rearrange", "keys": ["frames"], "ops": "b n c (t1 t) h w -> (b t1) n c t h w"},)
POST_PIPELINE = ({"type": "Reduce", "keys": ["feats"], "ops": "b n c t h w -> b c t", "reduction": "mean"},
                 {"type": "Rearrange", "keys": ["feats"], "ops": "(b t1) c t -> b c (t1 t)"})
OPENTAD_NORM_EPS = 1e-6  # ConvModule's and FPNIdentity's nn.LayerNorm(eps=1e-6)
# Test datasets that are OpenTAD's SlidingWindowDataset (its test engine then merges windows per
# video), and that class's default overlap; window_size has no usable default (-1).
SLIDING_DATASETS = ("SlidingWindowDataset", "ThumosSlidingDataset", "AnetSlidingDataset", "Ego4DSlidingDataset",
                    "EpicKitchensSlidingDataset")
SLIDING_OVERLAP = 0.25
# End-to-end test pipeline steps with nothing for tadprune to copy: decord reads the file (PyAV here),
# the last ones lay the frames out as tensors.
PASSIVE_STEPS = ("mmaction.DecordInit", "mmaction.DecordDecode", "ConvertToTensor", "Collect")

_RESHAPED = "renamed; LayerNorm [C] -> [1, C, 1]"
DETECTOR_RULES: tuple[Rule, ...] = (
    Rule(r"projection\.embed\.(\d+)\.conv\.(weight|bias)", r"detector.backbone.embd.\1.conv.\2", "renamed"),
    Rule(r"projection\.embed\.(\d+)\.norm\.(weight|bias)", r"detector.backbone.embd_norm.\1.\2", _RESHAPED),
    Rule(r"projection\.(stem|branch)\.(\d+)\.(ln1|ln2|attn\.(?:query|key|value)_norm)\.(weight|bias)",
         r"detector.backbone.\1.\2.\3.\4", _RESHAPED),
    Rule(r"projection\.(stem|branch)\.(\d+)\.(attn\.(?:query|key|value)_conv\.conv\.weight"
         r"|attn\.(?:query|key|value|proj)\.(?:weight|bias)|mlp\.[03]\.(?:weight|bias)|drop_path_(?:attn|mlp)\.scale)",
         r"detector.backbone.\1.\2.\3", "copied"),
    Rule(r"neck\.fpn_norms\.(\d+)\.(weight|bias)", r"detector.neck.fpn_norms.\1.\2", _RESHAPED),
    Rule(r"rpn_head\.(cls|reg)_convs\.(\d+)\.conv\.(weight|bias)", r"detector.\1_head.head.\2.conv.\3", "renamed"),
    Rule(r"rpn_head\.(cls|reg)_convs\.(\d+)\.norm\.(weight|bias)", r"detector.\1_head.norm.\2.\3", _RESHAPED),
    Rule(r"rpn_head\.cls_head\.(weight|bias)", r"detector.cls_head.cls_head.conv.\1", "renamed"),
    Rule(r"rpn_head\.reg_head\.(weight|bias)", r"detector.reg_head.offset_head.conv.\1", "renamed"),
    Rule(r"rpn_head\.scale\.(\d+)\.scale", r"detector.reg_head.scale.\1.scale", "renamed"),
    Rule(r"rpn_head\.loss_normalizer", None, "not imported: the running loss normaliser (training state)"),
)


def convert(source: Path, options: OpenTADImportOptions) -> ModelImport:
    """An OpenTAD / PBD checkpoint and its config as a tadprune model directory."""
    report = ImportReport("opentad", str(source), file_digest(source) if source.is_file() else "")
    config = read_config(options.config)
    model_config = _section(config, "model", str(options.config))
    if model_config.get("type") not in DETECTOR_TYPES:
        raise CheckpointError(f"{options.config}: model.type {model_config.get('type')!r}; imported are {DETECTOR_TYPES}")
    state_key = options.state_key or ("state_dict_ema" if config.get("solver", {}).get("ema") else "state_dict")
    state, removed = strip_wrapper_prefixes(pick_state_dict(read_weights(source), state_key, str(source), report))
    backbone_state = {k: v for k, v in state.items() if k.startswith("backbone.")}
    detector = opentad_detector_config(model_config, config.get("post_processing", {}), report)

    weights = _detector_weights({k: v for k, v in state.items() if k not in backbone_state}, removed, str(source), report)
    if "backbone" in model_config:
        backbone, backbone_weights, upsample, dropped = _backbone(model_config["backbone"], config, backbone_state,
                                                                  removed, options, report)
        weights |= {f"backbone.{k}": v for k, v in backbone_weights.items()}
        model = ModelConfig(backbone=backbone, detector=detector, feature_upsample=upsample,
                            dropped=[f"backbone.blocks.{i}" for i in dropped])
    else:
        if backbone_state:
            raise CheckpointError(f"{source}: backbone weights {name_list(backbone_state)} but the config has no model.backbone")
        model = ModelConfig(input_dim=_projection(model_config)["in_channels"], detector=detector)
        report.layout = "OpenTAD ActionFormer on features"
    spec = ExperimentSpec(name=spec_name(options.config, options.name), data=_data_config(config, model, options, report),
                          model=model, train=_train_config(config, report), eval=_eval_config(config))
    if removed:
        report.notes.append(f"prefix {removed!r} removed from every key")
    report.notes.append(f"config: {options.config}")
    return ModelImport(spec, weights, report)


def _section(config: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    section = config.get(name)
    if not isinstance(section, dict):
        raise CheckpointError(f"{source}: no {name} section (a dict) in the config")
    return section


def _projection(model: dict[str, Any]) -> dict[str, Any]:
    projection = model.get("projection", {})
    if projection.get("type") != "Conv1DTransformerProj" or not isinstance(projection.get("in_channels"), int):
        raise CheckpointError(f"model.projection: type {projection.get('type')!r} with in_channels "
                              f"{projection.get('in_channels')!r}; imported is Conv1DTransformerProj on one input")
    return projection


def opentad_detector_config(model: dict[str, Any], post: dict[str, Any], report: ImportReport) -> DetectorConfig:
    """Our `DetectorConfig` for OpenTAD's ActionFormer (`projection`, `neck`, `rpn_head`) and its post-processing."""
    projection, neck, head = _projection(model), model.get("neck", {}), model.get("rpn_head", {})
    if neck.get("type") != "FPNIdentity" or neck.get("end_level", -1) != -1:
        raise CheckpointError(f"model.neck: {neck.get('type')!r}; imported is FPNIdentity over all levels")
    if head.get("type") != "ActionFormerHead" or head.get("prior_generator", {}).get("use_offset", False):
        raise CheckpointError(f"model.rpn_head: {head.get('type')!r}; imported is ActionFormerHead with points on the grid")
    norm = projection.get("norm_cfg")
    if norm is not None and norm.get("type") != "LN":
        raise CheckpointError(f"model.projection.norm_cfg {norm!r}: imported are LN or none")
    attn, conv = projection["attn_cfg"], projection["conv_cfg"]
    arch = tuple(projection.get("arch", (2, 2, 5)))
    window = attn["n_mha_win_size"]
    strides = list(head["prior_generator"]["strides"])
    start = neck.get("start_level", 0)
    if strides != [2 ** level for level in range(start, arch[2] + 1)]:
        raise CheckpointError(f"model.rpn_head.prior_generator.strides {strides}: expected the levels' strides "
                              f"{[2 ** level for level in range(start, arch[2] + 1)]}")
    windows = window if isinstance(window, list) else [window] * (arch[2] + 1)
    for name in ("input_pdrop",):
        if projection.get(name):
            report.notes.append(f"model.projection.{name} {projection[name]}: a training-time dropout, not kept")
    if head.get("filter_similar_gt", True):
        report.notes.append("OpenTAD's head drops near-duplicate ground truth when it makes targets; tadprune's does not")
    try:
        return DetectorConfig(
            num_classes=head["num_classes"], dim=projection["out_channels"], fpn_dim=neck["out_channels"],
            head_dim=head["feat_channels"], num_heads=attn["n_head"], window=window, arch=arch,
            embed_kernel=conv["kernel_size"], embed_with_ln=norm is not None, fpn="identity",
            fpn_with_ln=neck.get("norm_cfg", {"type": "LN"}) is not None, fpn_start_level=start,
            head_layers=head.get("num_convs", 3) + 1, head_kernel=3, head_with_ln=True,
            regression_range=[tuple(r) for r in head["prior_generator"]["regression_range"]],
            use_abs_pe=projection.get("use_abs_pe", False), max_seq_len=projection.get("max_seq_len", 2304),
            conv_norm_eps=OPENTAD_NORM_EPS, mask_conv_outputs=True,
            pad_min_length=projection.get("max_seq_len", 2304), pad_multiple=max_div_factor(strides, windows),
            train=dict(center_sample=head.get("center_sample", "radius"),
                       center_sample_radius=head.get("center_sample_radius", 1.5), loss_weight=head.get("loss_weight", 1.0),
                       cls_prior_prob=head.get("cls_prior_prob", 0.01), init_loss_norm=head.get("loss_normalizer", 100),
                       dropout=conv.get("proj_pdrop", 0.0), droppath=projection.get("path_pdrop", 0.0),
                       label_smoothing=head.get("label_smoothing", 0.0)),
            test=_inference_config(post, report))
    except (ValidationError, KeyError, TypeError) as error:
        raise CheckpointError(f"the OpenTAD config does not make a valid detector: {error}") from None


def _inference_config(post: dict[str, Any], report: ImportReport) -> dict[str, Any]:
    """OpenTAD's `post_processing` (its `batched_nms` defaults where the config is silent)."""
    nms = post.get("nms")
    settings = {"pre_nms_thresh": post.get("pre_nms_thresh", 0.001), "pre_nms_topk": post.get("pre_nms_topk", 2000),
                "pre_nms_scope": "video", "duration_thresh": None}
    if nms is None:
        return settings | {"nms_method": "none"}
    if nms.get("use_soft_nms", True) and nms.get("method", 2) != 2:
        raise CheckpointError(f"post_processing.nms.method {nms['method']}: imported is Gaussian Soft-NMS (2)")
    return settings | {"nms_method": "soft" if nms.get("use_soft_nms", True) else "hard",
                       "iou_threshold": nms.get("iou_threshold", 0.0), "min_score": nms.get("min_score", 0.0),
                       "max_seg_num": nms.get("max_seg_num", 100), "multiclass_nms": nms.get("multiclass", True),
                       "nms_sigma": nms.get("sigma", 0.5), "voting_thresh": nms.get("voting_thresh", 0.0)}


def _detector_weights(state: dict[str, Tensor], removed: str, source: str, report: ImportReport) -> dict[str, Tensor]:
    weights = {}
    for key, (target, how) in map_keys(state, "", DETECTOR_RULES, source).items():
        report.map(removed + key, target, how)
        if target is not None:
            weights[target] = state[key].reshape(1, -1, 1) if how == _RESHAPED else state[key]
    return weights


def _backbone(recognizer: dict[str, Any], config: dict[str, Any], state: dict[str, Tensor], removed: str,
              options: OpenTADImportOptions, report: ImportReport):
    """The end-to-end backbone: its `VideoMAEConfig`, its weights, the grid positions per tubelet step
    and the indices of the blocks dropped before the checkpoint was saved."""
    vit = recognizer.get("backbone", {})
    if recognizer.get("type") != "mmaction.Recognizer3D" or vit.get("type") not in VIT_TYPES:
        raise CheckpointError(f"model.backbone: {recognizer.get('type')!r} with {vit.get('type')!r}; imported are "
                              f"mmaction.Recognizer3D with {', '.join(VIT_TYPES)}")
    if not vit.get("return_feat_map", False) or not vit.get("qkv_bias", True):
        raise CheckpointError("model.backbone.backbone: imported is a ViT with return_feat_map=True and q/v biases")
    _check_preprocessor(recognizer.get("data_preprocessor", {}))
    upsample = _feature_upsample(recognizer.get("custom", {}), vit)
    state = _merge_lora(state, removed, report)
    depth = vit.get("depth", 12)
    present = {int(m.group(1)) for key in state if (m := re.match(re.escape(VIT_ROOT) + r"blocks\.(\d+)\.", key))}
    if present and max(present) >= depth:
        raise CheckpointError(f"the weights hold block {max(present)} but the config's ViT has depth {depth}")
    dropped = sorted(set(range(depth)) - present)
    if vit.get("drop_idx") and sorted(vit["drop_idx"]) != dropped:
        raise CheckpointError(f"the config drops blocks {sorted(vit['drop_idx'])} but the weights lack {dropped}")
    if dropped:
        report.notes.append(f"blocks {dropped} have no weights: dropped (their nn.Identity in OpenTAD's block list)")
    img_size = options.img_size or _test_crop(config)
    vit_options = VideoMAEImportOptions(num_heads=vit.get("num_heads"), img_size=img_size, num_frames=vit.get("num_frames", 16))
    backbone, weights, layout = convert_state(state, vit_options, report, report.source, removed=removed,
                                              dropped=dropped, target_prefix="backbone.")
    report.layout = f"OpenTAD end to end ({vit['type']}: {layout}; ActionFormer)"
    # mmcv's LN takes PyTorch's default epsilon unless norm_cfg gives one (the configs give 1e-6).
    backbone = backbone.model_copy(update={"norm_eps": vit.get("norm_cfg", {}).get("eps", 1e-5)})
    expected = {"dim": vit.get("embed_dims"), "depth": depth, "patch_size": vit.get("patch_size", 16),
                "tubelet_size": vit.get("tubelet_size", 2), "mlp_ratio": float(vit.get("mlp_ratio", 4))}
    clashes = [f"{name}: weights {getattr(backbone, name)}, config {value}" for name, value in expected.items()
               if value is not None and getattr(backbone, name) != value]
    table_size = backbone.pos_table_img_size or backbone.img_size
    if vit.get("img_size", 224) != table_size:
        clashes.append(f"position table: weights {table_size} px, config img_size {vit.get('img_size', 224)}")
    if clashes:
        raise CheckpointError("the backbone's weights do not match the config: " + "; ".join(clashes))
    return backbone, weights, upsample, dropped


def _check_preprocessor(preprocessor: dict[str, Any]) -> None:
    """OpenTAD normalises frames with the data preprocessor's mean and std; tadprune with ImageNet's."""
    mean, std = [255 * m for m in PIXEL_MEAN], [255 * s for s in PIXEL_STD]
    found = preprocessor.get("mean"), preprocessor.get("std")
    if any(f is None or len(f) != 3 or max(abs(a - b) for a, b in zip(f, e)) > 1e-3 for f, e in zip(found, (mean, std))):
        raise CheckpointError(f"model.backbone.data_preprocessor mean {found[0]} / std {found[1]}: tadprune normalises "
                              f"with ImageNet's {[round(m, 3) for m in mean]} / {[round(s, 3) for s in std]}")
    if preprocessor.get("format_shape", "NCTHW") != "NCTHW" or preprocessor.get("to_rgb", False):
        raise CheckpointError(f"model.backbone.data_preprocessor {preprocessor}: imported is NCTHW without channel swaps")


def _feature_upsample(custom: dict[str, Any], vit: dict[str, Any]) -> int:
    """Grid positions per tubelet step: OpenTAD's `Interpolate` to the window size after the chunks'
    features are put back in a row (1 without it)."""
    pre, post = custom.get("pre_processing_pipeline", []), custom.get("post_processing_pipeline", [])
    strip = lambda steps: tuple({k: v for k, v in step.items() if k != "t1"} for step in steps)  # noqa: E731
    interpolate = post[2:]
    if strip(pre) != PRE_PIPELINE or strip(post[:2]) != POST_PIPELINE or len(interpolate) > 1 or any(
            step.get("type") != "Interpolate" or step.get("mode", "linear") != "linear" for step in interpolate):
        raise CheckpointError(f"model.backbone.custom: pipelines {pre} / {post}; imported is OpenTAD's chunked "
                              "feature path (Rearrange, ViT, Reduce mean over space, Rearrange[, linear Interpolate])")
    chunks = pre[0]["t1"]
    if post[1]["t1"] != chunks:
        raise CheckpointError(f"model.backbone.custom: {chunks} chunks in, {post[1]['t1']} out")
    if not interpolate:
        return 1
    steps = chunks * vit.get("num_frames", 16) // vit.get("tubelet_size", 2)
    size = interpolate[0]["size"]
    if not isinstance(size, int) or size % steps:
        raise CheckpointError(f"model.backbone.custom: Interpolate to {size} positions from {steps} steps; "
                              "imported are whole multiples")
    return size // steps


def _merge_lora(state: dict[str, Tensor], removed: str, report: ImportReport) -> dict[str, Tensor]:
    """The backbone state with PBD's unmerged LoRA folded into the linears it adapts."""
    pairs: dict[tuple[int, str], dict[str, str]] = {}
    for key in state:
        if key.startswith(VIT_ROOT) and (match := LORA.fullmatch(key[len(VIT_ROOT):])):
            pairs.setdefault((int(match.group(1)), match.group(2)), {})[match.group(3)] = key
    if not pairs:
        return state
    merged = {k: v for k, v in state.items() if not any(k in pair.values() for pair in pairs.values())}
    for (block, linear), pair in sorted(pairs.items()):
        target = f"{VIT_ROOT}blocks.{block}.attn.{linear}.weight"
        if set(pair) != {"A", "B"} or target not in state:
            raise CheckpointError(f"LoRA of block {block} {linear}: {sorted(pair.values())} without "
                                  f"{'its A/B pair' if set(pair) != {'A', 'B'} else target}")
        a, b = state[pair["A"]], state[pair["B"]]
        if a.ndim != 2 or b.ndim != 2 or (b.shape[1], a.shape[0]) != tuple(state[target].shape) or a.shape[1] != b.shape[0]:
            raise CheckpointError(f"LoRA {pair['A']} {tuple(a.shape)} / {pair['B']} {tuple(b.shape)} do not fit "
                                  f"{target} {tuple(state[target].shape)}")
        merged[target] = state[target] + LORA_SCALING * (a @ b).T
        for key in pair.values():
            report.map(removed + key, f"backbone.blocks.{block}.attn.{linear}.weight",
                       f"LoRA merged into the weight: W + (A @ B)^T, scaling {LORA_SCALING:g}, rank {a.shape[1]}")
    report.notes.append(f"LoRA merged into {len(pairs)} linears of {len({block for block, _ in pairs})} blocks")
    return merged


def _test_crop(config: dict[str, Any]) -> int:
    """The frame size the test pipeline gives the ViT (its CenterCrop, or its last square Resize)."""
    pipeline = config.get("dataset", {}).get("test", {}).get("pipeline", [])
    sizes = [step["crop_size"] for step in pipeline if step.get("type") == "mmaction.CenterCrop"]
    sizes += [step["scale"] for step in pipeline if step.get("type") == "mmaction.Resize" and not step.get("keep_ratio", True)]
    sizes = [size if isinstance(size, int) else size[0] for size in sizes if isinstance(size, int) or size[0] == size[1]]
    if not sizes:
        raise CheckpointError("dataset.test.pipeline: no square crop found to tell the frame size; give --img-size")
    return sizes[-1]


def _data_config(config: dict[str, Any], model: ModelConfig, options: OpenTADImportOptions,
                 report: ImportReport) -> DataConfig:
    """The dataset section: subsets, training and test windows and labels from the config; the grid
    from the model; end to end, the frame rate and decoding from the annotations and test pipeline."""
    train, test = config.get("dataset", {}).get("train", {}), config.get("dataset", {}).get("test", {})
    subsets = {}
    for name, part in (("train", train), ("test", test)):
        subset = part.get("subset_name", "training" if name == "train" else "validation")
        subsets[name] = subset[0] if isinstance(subset, list) else subset
    stride = test.get("feature_stride", 1) * test.get("sample_stride", 1)
    paths = {"root": options.data_root} if options.data_root is not None else _paths(test)
    if model.backbone is not None:
        inputs = _end_to_end_inputs(test, stride, paths, options, report)
    elif options.fps is not None:
        raise CheckpointError(f"--fps {options.fps:g}: a frame rate to decode videos at, and this model reads features")
    else:
        offset = test.get("offset_frames", 0)
        inputs = {"kind": "features", "feature_stride": stride, "clip_length": max(2 * offset, 1)}
    labels = _labels(test, options, paths)
    return DataConfig(train_subset=subsets["train"], test_subset=subsets["test"], labels=labels,
                      max_seq_len=model.detector.max_seq_len, **inputs, **paths, **_test_windows(test, model, report))


def _paths(test: dict[str, Any]) -> dict[str, Any]:
    if "ann_file" not in test or "data_path" not in test:
        raise CheckpointError("dataset.test: ann_file and data_path are not in the config; give --data-root")
    return {"root": Path("."), "annotations": str(test["ann_file"]), "inputs_dir": str(test["data_path"])}


def _test_windows(test: dict[str, Any], model: ModelConfig, report: ImportReport) -> dict[str, Any]:
    """OpenTAD's test windows in grid positions when its test dataset is a `SlidingWindowDataset`:
    `window_size` snippets (input frames end to end) every `int(window_size * (1 - window_overlap_ratio))`."""
    if test.get("type") not in SLIDING_DATASETS:
        return {}
    size, overlap = test.get("window_size", -1), test.get("window_overlap_ratio", SLIDING_OVERLAP)
    frames = model.backbone.tubelet_size // model.feature_upsample if model.backbone is not None else 1
    if not isinstance(size, int) or size < 1 or size % frames:
        raise CheckpointError(f"dataset.test.window_size {size!r}: {test['type']} needs a positive number of snippets"
                              f"{f', a multiple of the {frames} frames per grid position' if frames > 1 else ''}")
    if not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise CheckpointError(f"dataset.test.window_overlap_ratio {overlap!r}: expected a fraction in [0, 1)")
    report.notes.append(f"test windows of {size // frames} positions overlapping by {overlap:g}: OpenTAD keeps each "
                        "window's top candidates and runs one NMS per video over them all, tadprune runs the detector's "
                        "NMS in each window and again over the video's union (tadmodels.inference)")
    return {"inference_window": size // frames, "inference_overlap": overlap}


def _end_to_end_inputs(test: dict[str, Any], stride: int, paths: dict[str, Any], options: OpenTADImportOptions,
                       report: ImportReport) -> dict[str, Any]:
    """Kind, grid, frame rate and decoding of an end-to-end model's data: videos where the dataset has
    them (`ROOT/videos/`, or the config's `data_path`, OpenTAD's directory of video files), else frames."""
    root = Path(paths["root"])
    kind = "videos" if (root / paths.get("inputs_dir", "videos")).is_dir() else "frames"
    settings = {"kind": kind, "feature_stride": 1, "clip_length": 1,
                "fps": _frame_rate(root / paths.get("annotations", "annotations.json"), stride, kind, options, report)}
    if kind == "videos":
        settings["video"] = _video_decoding(test.get("pipeline", []))
    report.notes.append(f"OpenTAD maps grid position i to frame i x {stride} of the video, tadprune's grid to the centre "
                        "of the position (half a position later); OpenTAD fills a video's short last window by "
                        "repeating its last frame, tadprune pads with zero frames")
    return settings


def _frame_rate(annotations: Path, stride: int, kind: str, options: OpenTADImportOptions,
                report: ImportReport) -> float | None:
    """`data.fps`: OpenTAD's `LoadFrames` takes every `stride`-th frame of a video, which is one rate
    for tadprune when the videos share theirs (`--fps`, else the annotations')."""
    if options.fps is not None:
        return options.fps / stride
    if kind == "frames" and not annotations.is_file():
        report.notes.append(f"data.fps is not set ({annotations} is not there to read the videos' frame rate): the frames "
                            f"must be every {stride}-th frame of the videos, set data.fps to their rate")
        return None
    try:
        rates = sorted({video.fps for video in load_annotations(annotations).videos.values()})
    except DataFormatError as error:
        raise CheckpointError(f"{error}; the videos' frame rate is read from it: give --fps") from None
    if len(rates) != 1:
        raise CheckpointError(f"{annotations}: the videos' fps are {', '.join(f'{r:g}' for r in rates) or 'absent'}; "
                              f"OpenTAD takes every {stride}-th frame of each, tadprune reads all at one rate: give "
                              f"--fps (the frame rate to take every {stride}-th frame of)")
    return rates[0] / stride


def _video_decoding(pipeline: list[dict[str, Any]]) -> VideoDecoding:
    """`data.video` from OpenTAD's end-to-end test pipeline, whose every step must be one tadprune's
    decoding does: the short side resized keeping the ratio, then a square centre crop."""
    settings: dict[str, int] = {}
    for index, step in enumerate(pipeline):
        problem = _decoding_problem(step, settings)
        if problem:
            raise CheckpointError(f"dataset.test.pipeline[{index}] {step}: {problem}")
    if set(settings) != {"short_side", "crop"}:
        raise CheckpointError(f"dataset.test.pipeline {pipeline}: no mmaction.Resize of the short side followed by "
                              "mmaction.CenterCrop, which tell how to decode the videos")
    try:
        return VideoDecoding(**settings)
    except ValidationError as error:
        raise CheckpointError(f"dataset.test.pipeline: {validation_problems(error)[0]}") from None


def _decoding_problem(step: dict[str, Any], settings: dict[str, int]) -> str:
    """What of one test pipeline step tadprune's decoding cannot do ('' when nothing); its resize and
    crop go into `settings`."""
    kind = step.get("type")
    if kind in PASSIVE_STEPS:
        return ""
    if kind == "PrepareVideoInfo":
        if step.get("format", "mp4") in VIDEO_EXTENSIONS and not step.get("prefix") and step.get("modality", "RGB") == "RGB":
            return ""
        return f"tadprune reads RGB video files named <video id>.{{{','.join(VIDEO_EXTENSIONS)}}}"
    if kind == "LoadFrames":
        if step.get("method", "resize") == "sliding_window" and step.get("scale_factor", 1) == 1 and step.get("num_clips", 1) == 1:
            return ""
        return "tadprune takes every snippet_stride-th frame of a video (method sliding_window, scale_factor 1, one clip)"
    if kind == "mmaction.Resize":
        scale = step.get("scale")
        if (not settings and step.get("keep_ratio", True) and step.get("interpolation", "bilinear") == "bilinear"
                and isinstance(scale, (list, tuple)) and len(scale) == 2 and min(scale) == -1 and max(scale) > 0):
            settings["short_side"] = max(scale)
            return ""
        return "tadprune resizes once, bilinearly, the short side keeping the ratio (scale (-1, S)), before the crop"
    if kind == "mmaction.CenterCrop":
        size = step.get("crop_size")
        size = size[0] if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1] else size
        if set(settings) == {"short_side"} and isinstance(size, int):
            settings["crop"] = size
            return ""
        return "tadprune cuts one square centre crop, after the resize"
    if kind == "mmaction.FormatShape" and step.get("input_format") == "NCTHW":
        return ""
    return ("a step tadprune's video decoding does not have (it reads frames, resizes the short side, "
            "cuts a centre crop)")


def _labels(test: dict[str, Any], options: OpenTADImportOptions, paths: dict[str, Any]) -> list[str]:
    """OpenTAD's class order: its class map file (one name per line), which it writes, when missing,
    as the sorted names in the annotations (`datasets/builder.py: get_class_index`)."""
    class_map = options.class_map or (Path(test["class_map"]) if "class_map" in test else None)
    if class_map is not None and class_map.is_file():
        return [line.rstrip("\n") for line in class_map.read_text().splitlines() if line.strip()]
    annotations = Path(paths["root"]) / paths.get("annotations", "annotations.json")
    if annotations.is_file():
        return sorted(load_annotations(annotations).label_names)
    raise CheckpointError(f"class names: neither the class map {class_map} nor the annotations {annotations} can be "
                          "read; give --class-map (OpenTAD's category_idx.txt)")


def _train_config(config: dict[str, Any], report: ImportReport) -> TrainConfig:
    optimizer, scheduler, solver = config.get("optimizer", {}), config.get("scheduler", {}), config.get("solver", {})
    report.notes.append("train: OpenTAD's optimizer lr / weight decay, scheduler epochs and batch size; its per-part "
                        "learning rates (backbone, LoRA) are not kept")
    return TrainConfig(epochs=scheduler.get("max_epoch", 30), batch_size=solver.get("train", {}).get("batch_size", 2),
                       lr=optimizer.get("lr", 1e-4), weight_decay=optimizer.get("weight_decay", 0.05),
                       warmup_epochs=scheduler.get("warmup_epoch", 5), grad_clip=solver.get("clip_grad_norm", 1.0))


def _eval_config(config: dict[str, Any]) -> EvalConfig:
    tious = config.get("evaluation", {}).get("tiou_thresholds")
    return EvalConfig(tious=list(tious)) if tious else EvalConfig()
