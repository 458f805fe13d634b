"""VideoMAE checkpoints in the layouts they are released in, converted to tadprune's backbone.

The layout is told by the patch embedding's key, wherever it sits under prefixes (`encoder.` of a
pre-training checkpoint, `backbone.` of OpenTAD/mmaction2, `videomae.` of a Hugging Face
classifier, `module.` of data-parallel training):

- MCG-NJU `modeling_pretrain.py` / `modeling_finetune.py` (`patch_embed.proj.weight`): tadprune's
  own names. Pre-training checkpoints add the decoder (`decoder.*`, `encoder_to_decoder`,
  `mask_token`), fine-tuned ones the classifier `head`, `fc_norm` instead of `norm` (mean pooling),
  optionally LayerScale `gamma_1/2` and a learned `pos_embed`.
- OpenTAD / mmaction2 `VisionTransformer` (`patch_embed.projection.weight`): MLP as
  `mlp.layers.0.0` / `mlp.layers.1`, the sine table stored as the buffer `pos_embed` at the size the
  ViT was built for (224 px), resized to the input at run time; `cls_head` is the classifier.
  OpenTAD and PBD take the last block's tokens without `fc_norm`, so it is dropped by default.
- Hugging Face `VideoMAEModel` / `VideoMAEForVideoClassification` / `VideoMAEForPreTraining`
  directories (`config.json` + `model.safetensors` or `pytorch_model.bin`): q, k, v as separate
  linears (concatenated here into `qkv`; the biases `q_bias`, `v_bias`), LayerNorm epsilon
  from the config (1e-12 by default), `fc_norm` with PyTorch's default 1e-5.

The architecture comes from the weights (depth, width, MLP width, patch and tubelet size,
LayerScale, pooling, positions), the number of heads from the Hugging Face config, `--num-heads`,
`--preset` or the released widths (384: 6, 768: 12, 1024: 16, 1280: 16), and is cross-checked
against `--preset` when given.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..models.videomae import VIDEOMAE_PRESETS, VideoMAEConfig, resize_position_table, sinusoid_position_table
from .backbone import BackboneImport
from .files import CheckpointError, file_digest, read_safetensors, read_torch_file, read_weights
from .keymap import Rule, map_keys, pick_state_dict, strip_wrapper_prefixes
from .registry import VideoMAEImportOptions
from .report import ImportReport

# Heads of the released VideoMAE widths (S, B, L, H), for checkpoints that do not say.
RELEASED_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16}
# A stored table closer than this to the sine table is the fixed table (OpenTAD keeps it as a buffer).
FIXED_TABLE_TOLERANCE = 1e-5

_BLOCK_PARTS = r"(norm1|norm2|attn\.qkv|attn\.proj)\.(weight|bias)"
_COMMON_RULES = (
    Rule(rf"blocks\.(\d+)\.{_BLOCK_PARTS}", r"blocks.\1.\2.\3", "copied"),
    Rule(r"blocks\.(\d+)\.attn\.(q_bias|v_bias)", r"blocks.\1.attn.\2", "copied"),
    Rule(r"blocks\.(\d+)\.(gamma_1|gamma_2)", r"blocks.\1.\2", "copied (LayerScale)"),
    Rule(r"(norm|fc_norm)\.(weight|bias)", r"\1.\2", "copied"),
    Rule(r"pos_embed", "pos_embed", "position table"),
)
_DECODER = Rule(r"decoder\..*|encoder_to_decoder\.weight|mask_token", None, "not imported: pre-training decoder")

LAYOUTS: dict[str, tuple[str, tuple[Rule, ...]]] = {
    # name: (patch-embedding key below the ViT's root, rules)
    "MCG-NJU": ("patch_embed.proj.weight", (
        Rule(r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1", "copied"),
        Rule(r"blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3", "copied"),
        *_COMMON_RULES,
        Rule(r"head\.(weight|bias)", None, "not imported: classifier head"),
        _DECODER,
    )),
    "OpenTAD": ("patch_embed.projection.weight", (
        Rule(r"patch_embed\.projection\.(weight|bias)", r"patch_embed.proj.\1", "renamed"),
        Rule(r"blocks\.(\d+)\.mlp\.layers\.0\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2", "renamed"),
        Rule(r"blocks\.(\d+)\.mlp\.layers\.1\.(weight|bias)", r"blocks.\1.mlp.fc2.\2", "renamed"),
        *_COMMON_RULES,
        Rule(r"cls_head\..*", None, "not imported: classifier head"),
    )),
    "Hugging Face": ("embeddings.patch_embeddings.projection.weight", (
        Rule(r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1", "renamed"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.attention\.query\.weight", r"blocks.\1.attn.qkv.weight#0", "q rows of qkv"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.attention\.key\.weight", r"blocks.\1.attn.qkv.weight#1", "k rows of qkv"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.attention\.value\.weight", r"blocks.\1.attn.qkv.weight#2", "v rows of qkv"),
        # Saved files name the biases q_bias / v_bias; transformers 5 holds them as query.bias / value.bias.
        Rule(r"encoder\.layer\.(\d+)\.attention\.attention\.(?:q_bias|query\.bias)", r"blocks.\1.attn.q_bias", "renamed"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.attention\.(?:v_bias|value\.bias)", r"blocks.\1.attn.v_bias", "renamed"),
        Rule(r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2", "renamed"),
        Rule(r"encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2", "renamed"),
        Rule(r"encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2", "renamed"),
        Rule(r"encoder\.layer\.(\d+)\.layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2", "renamed"),
        Rule(r"encoder\.layer\.(\d+)\.layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2", "renamed"),
        Rule(r"layernorm\.(weight|bias)", r"norm.\1", "renamed"),
        Rule(r"fc_norm\.(weight|bias)", r"fc_norm.\1", "copied"),
        Rule(r"classifier\.(weight|bias)", None, "not imported: classifier head"),
        _DECODER,
    )),
}


def convert(source: Path, options: VideoMAEImportOptions) -> BackboneImport:
    """A VideoMAE checkpoint (file or Hugging Face directory) as a tadprune backbone import."""
    source = Path(source)
    report = ImportReport("videomae", str(source), "")
    hf_config, loaded, digest_path = _read(source)
    report.sha256 = file_digest(digest_path)
    state, removed = strip_wrapper_prefixes(pick_state_dict(loaded, options.state_key, str(source), report))
    config, weights, report.layout = convert_state(state, options, report, str(source), removed=removed, hf_config=hf_config)
    return BackboneImport(config, weights, report)


def convert_state(state: dict[str, Tensor], options: VideoMAEImportOptions, report: ImportReport, source: str, *,
                  removed: str = "", hf_config: dict | None = None, dropped: Collection[int] = (),
                  target_prefix: str = "") -> tuple[VideoMAEConfig, dict[str, Tensor], str]:
    """The VideoMAE backbone whose keys `state` holds (under whatever prefix): its architecture, its
    weights under tadprune's names, and the layout found; every key goes into `report` (with
    `removed`, the prefix taken off before, in front of it, and `target_prefix` in front of its
    target). `dropped` names the block indices a full-model checkpoint lacks because they were
    dropped: the architecture keeps them, so that the model names them as dropped."""
    layout, root = _find_layout(state, source)
    mapped = map_keys(state, root, LAYOUTS[layout][1], source)
    if layout == "Hugging Face" and hf_config is None:
        raise CheckpointError(f"{source}: Hugging Face weights without their config.json; import the model directory")

    keep_fc_norm = options.fc_norm if options.fc_norm is not None else layout != "OpenTAD"
    weights: dict[str, Tensor] = {}
    parts: dict[str, dict[int, Tensor]] = {}
    table_key = None
    for key, (target, how) in mapped.items():
        if target is not None and target.startswith("fc_norm.") and not keep_fc_norm:
            target, how = None, "not imported: fc_norm dropped (" + (
                "--no-fc-norm)" if options.fc_norm is False else "OpenTAD and PBD pool without it; --fc-norm keeps it)")
        if target == "pos_embed":
            table_key = key  # reported once its kind is known
            continue
        if target is not None and "#" in target:
            base, slot = target.split("#")
            parts.setdefault(base, {})[int(slot)] = state[key]
            target = base
        elif target is not None:
            weights[target] = state[key]
        report.map(removed + key, target and target_prefix + target, how)
    weights.update(_join_parts(parts, source))

    table = state[table_key].reshape(-1, state[table_key].shape[-1]) if table_key is not None else None
    config = _config(weights, table, hf_config, options, source, set(dropped))
    if table is not None:
        weights.update(_positions(table, config, removed + table_key, report, target_prefix))
    report.notes.append(f"architecture: {json.dumps(config.model_dump(mode='json'))}")
    return config, weights, layout + (f" (prefix {removed + root!r})" if removed + root else "")


def _read(source: Path) -> tuple[dict | None, Any, Path]:
    """(Hugging Face config or None, the loaded weights, the file whose digest identifies them)."""
    if not source.is_dir():
        return None, read_weights(source, allowed=(argparse.Namespace,)), source
    config_path = source / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{source}: a directory without config.json; expected a Hugging Face VideoMAE save")
    hf_config = json.loads(config_path.read_text())
    if hf_config.get("model_type") != "videomae":
        raise CheckpointError(f"{config_path}: model_type is {hf_config.get('model_type')!r}, expected 'videomae'")
    for name, read in (("model.safetensors", read_safetensors), ("pytorch_model.bin", read_torch_file)):
        if (source / name).is_file():
            return hf_config, read(source / name), source / name
    raise FileNotFoundError(f"{source}: neither model.safetensors nor pytorch_model.bin "
                            "(sharded saves are not supported: save with a larger max_shard_size)")


def _find_layout(state: dict[str, Tensor], source: str) -> tuple[str, str]:
    """(layout name, the prefix of the ViT's keys) from the one patch-embedding key."""
    found = [(name, key[: -len(anchor)]) for key in state for name, (anchor, _) in LAYOUTS.items()
             if key == anchor or key.endswith("." + anchor)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        anchors = ", ".join(anchor for anchor, _ in LAYOUTS.values())
        raise CheckpointError(f"{source}: {what} VideoMAE patch embedding found ({anchors}); expected exactly one"
                              + (f": {[root for _, root in found]}" if found else ""))
    return found[0]


def _join_parts(parts: dict[str, dict[int, Tensor]], source: str) -> dict[str, Tensor]:
    """Separate q, k, v weights concatenated into one qkv weight, in that order."""
    joined = {}
    for target, pieces in parts.items():
        if sorted(pieces) != [0, 1, 2]:
            raise CheckpointError(f"{source}: {target} needs query, key and value weights; has {sorted(pieces)}")
        joined[target] = torch.cat([pieces[0], pieces[1], pieces[2]], dim=0)
    return joined


def _config(weights: dict[str, Tensor], table: Tensor | None, hf_config: dict | None,
            options: VideoMAEImportOptions, source: str, dropped: set[int]) -> VideoMAEConfig:
    """The architecture the weights hold, with the heads and input geometry that the options, the
    preset or the Hugging Face config give (in that order), refusing contradictions by name."""
    proj = weights.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 5 or proj.shape[1] != 3 or proj.shape[3] != proj.shape[4]:
        raise CheckpointError(f"{source}: patch embedding weight {None if proj is None else tuple(proj.shape)}, "
                              "expected [dim, 3, tubelet, patch, patch]")
    dim, tubelet, patch = proj.shape[0], proj.shape[2], proj.shape[3]
    blocks = sorted({int(key.split(".")[1]) for key in weights if key.startswith("blocks.")})
    depth = len(blocks) + len(dropped)
    if not blocks or blocks != [i for i in range(depth) if i not in dropped]:
        raise CheckpointError(f"{source}: blocks {blocks}" + (f" with {sorted(dropped)} dropped" if dropped else "") +
                              "; expected 0..N-1 (for models with blocks dropped use the full-model importers)")
    hidden = {str(i): weights[f"blocks.{i}.mlp.fc1.weight"].shape[0] for i in blocks if f"blocks.{i}.mlp.fc1.weight" in weights}
    gammas = [i for i in blocks if f"blocks.{i}.gamma_1" in weights]
    if gammas and gammas != blocks:
        raise CheckpointError(f"{source}: LayerScale (gamma_1/gamma_2) in blocks {gammas} only; expected all or none")
    norms = [name for name in ("norm", "fc_norm") if f"{name}.weight" in weights]
    if len(norms) > 1:
        raise CheckpointError(f"{source}: both norm and fc_norm; expected one final LayerNorm at most")

    found = {"depth": depth, "dim": dim, "patch_size": patch, "tubelet_size": tubelet,
             "mlp_ratio": hidden.get(str(blocks[0]), 4 * dim) / dim}
    claims = _claims(hf_config, options)
    for where, values in claims:
        clashes = [f"{name}: checkpoint {found[name]}, {where} {values[name]}" for name in found
                   if values.get(name) is not None and values[name] != found[name]]
        if clashes:
            raise CheckpointError(f"{source}: architecture does not match {where}: " + "; ".join(clashes))
    heads = {where: values["num_heads"] for where, values in claims if values.get("num_heads") is not None}
    if len(set(heads.values())) > 1:
        raise CheckpointError(f"{source}: the number of heads disagrees: {heads}")

    def first(name: str, default: Any) -> Any:
        return next((values[name] for _, values in claims if values.get(name) is not None), default)

    num_heads = first("num_heads", RELEASED_HEADS.get(dim))
    if num_heads is None:
        raise CheckpointError(f"{source}: width {dim} is not a released VideoMAE width; give --num-heads")
    num_frames = first("num_frames", 16)
    steps = num_frames // tubelet
    img_size = first("img_size", _table_grid(table, steps, source) * patch if table is not None else 224)
    eps = {}
    if hf_config is not None:  # its blocks and `layernorm` take the config's epsilon, its `fc_norm` PyTorch's default
        eps = {"norm_eps": hf_config.get("layer_norm_eps", 1e-12)} | ({"fc_norm_eps": 1e-5} if "fc_norm" in norms else {})
    try:
        return VideoMAEConfig(
            depth=depth, dim=dim, num_heads=num_heads, mlp_ratio=found["mlp_ratio"], patch_size=patch,
            tubelet_size=tubelet, img_size=img_size, num_frames=num_frames,
            mlp_hidden={} if len(set(hidden.values())) <= 1 else hidden,
            final_norm=norms[0] if norms else "none", layer_scale=bool(gammas),
            pos_embed="learned" if table is not None and not _is_fixed(table, dim) else "sinusoid",
            pos_table_img_size=_pos_table_img_size(table, options.pos_table_img_size, steps, patch, img_size, dim, source),
            **eps)
    except ValueError as error:
        raise CheckpointError(f"{source}: the architecture read from it is not valid: {error}") from None


def _claims(hf_config: dict | None, options: VideoMAEImportOptions) -> list[tuple[str, dict]]:
    """What the options, the preset and the Hugging Face config say of the architecture, in that order."""
    claims = [("the options", {"num_heads": options.num_heads, "img_size": options.img_size,
                               "num_frames": options.num_frames})]
    if options.preset is not None:
        if options.preset not in VIDEOMAE_PRESETS:
            raise CheckpointError(f"--preset: unknown {options.preset!r}, expected one of {sorted(VIDEOMAE_PRESETS)}")
        claims.append((f"preset {options.preset}", {**VIDEOMAE_PRESETS[options.preset], "mlp_ratio": 4.0}))
    if hf_config is not None:
        if hf_config.get("hidden_act", "gelu") != "gelu" or not hf_config.get("qv_bias", hf_config.get("qkv_bias", True)):
            raise CheckpointError("the Hugging Face config: only hidden_act 'gelu' with q/v biases is supported")
        hidden_size = hf_config.get("hidden_size", 768)
        claims.append(("the Hugging Face config", {
            "depth": hf_config.get("num_hidden_layers", 12), "dim": hidden_size,
            "num_heads": hf_config.get("num_attention_heads", 12), "patch_size": hf_config.get("patch_size", 16),
            "tubelet_size": hf_config.get("tubelet_size", 2),
            "mlp_ratio": hf_config.get("intermediate_size", 3072) / hidden_size,
            "img_size": hf_config.get("image_size", 224), "num_frames": hf_config.get("num_frames", 16)}))
    return claims


def _table_grid(table: Tensor, steps: int, source: str) -> int:
    grid = round((table.shape[0] / steps) ** 0.5)
    if steps * grid * grid != table.shape[0]:
        raise CheckpointError(f"{source}: pos_embed has {table.shape[0]} rows, not {steps} tubelet steps of a square grid "
                              "(is --num-frames right?)")
    return grid


def _is_fixed(table: Tensor, dim: int) -> bool:
    return (table - sinusoid_position_table(table.shape[0], dim)).abs().max().item() < FIXED_TABLE_TOLERANCE


def _pos_table_img_size(table: Tensor | None, size: int | None, steps: int, patch: int,
                        img_size: int, dim: int, source: str) -> int | None:
    """The image size a fixed table is made for: the stored table's, else `size` (the option's);
    None when that is `img_size` itself."""
    if table is not None:
        stored = _table_grid(table, steps, source) * patch
        if not _is_fixed(table, dim):
            if size is not None:
                raise CheckpointError(f"{source}: pos_embed is a learned table; --pos-table-img-size applies to the fixed one")
            return None
        if size is not None and size != stored:
            raise CheckpointError(f"{source}: the stored fixed table is made for {stored} px; --pos-table-img-size says {size}")
        size = stored
    return None if size == img_size else size


def _positions(table: Tensor, config: VideoMAEConfig, key: str, report: ImportReport, target_prefix: str) -> dict[str, Tensor]:
    """A learned table (resized to the configured grid, as MCG-NJU's fine-tuning loads one), or
    nothing for the fixed sine table, which the backbone makes itself (checked equal here)."""
    grid = round((table.shape[0] / config.steps) ** 0.5)
    if config.pos_embed == "sinusoid":
        report.map(key, None, f"not imported: the fixed sine table (for {grid * config.patch_size} px), "
                              "made by the backbone" + (f" and resized to {config.img_size} px" if grid != config.grid else ""))
        return {}
    if grid == config.grid:
        report.map(key, target_prefix + "pos_embed", "copied (learned position table)")
        return {"pos_embed": table}
    report.map(key, target_prefix + "pos_embed", f"learned position table resized {grid}x{grid} -> {config.grid}x{config.grid} per step (bicubic)")
    return {"pos_embed": resize_position_table(table, config.steps, config.grid)}
