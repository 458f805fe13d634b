"""IBM's bLVNet-TAM weights (github.com/IBM/bLVNet-TAM), converted to tadprune's backbone.

Their names (`core/models/blvnet_tam_backbone.py`, under `baseline_model.` of `bLVNet_TAM` and
`module.` of DataParallel) against ours (`tadmodels/models/blvnet.py`, which computes the same):

- stem: `conv1`/`bn1` -> `stem.conv.0/1`; `b_conv0`/`bn_b0` -> `stem.big.0/1`; `l_conv0..2`/`bn_l0..2`
  -> `stem.little.{0,2,4}.0/1`; `bl_init`/`bn_bl_init` -> `stem.merge.0.0/1`;
- `layer1..3` -> `stages.0..2` (`big`, `little`, `fusion` keep their names, `little_e` ->
  `little_expand`), `layer4.{i}` -> `stages.3.blocks.{i}`; a bottleneck's `downsample.{j}` -> `shortcut.{j}`
  (the same [avg pool,] conv, BN order);
- a TAM's three depthwise 1x1 convs `prev`, `curr`, `next` (`[C, 1, 1, 1]` each; or
  `blending_layers.{j}` for other widths) -> the rows of one `tam.weight` `[2r + 1, C]`, offsets -r..r;
- the classifier (`fc`, or `new_fc` when trained with dropout) is not imported.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from ..models.blvnet import BLVNetConfig
from .backbone import BackboneImport
from .files import CheckpointError, file_digest, read_weights
from .keymap import Rule, map_keys, pick_state_dict, strip_wrapper_prefixes
from .registry import BLVNetImportOptions
from .report import ImportReport

ANCHOR = "b_conv0.weight"  # unique to the bLVNet-TAM stem; what comes before it is the backbone's prefix
_TAM_SLOTS = {"prev": 0, "curr": 1, "next": 2}
_BOTTLENECK = r"(conv[123]\.weight|bn[123]\.(?:weight|bias|running_mean|running_var|num_batches_tracked))"
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _tam_rules(source: str, target: str, group: int = 1) -> tuple[Rule, ...]:
    """A TAM's per-offset convs under `source` -> rows of `target`tam.weight; the offset is match group `group`."""
    return (Rule(rf"{source}tam\.(prev|curr|next)\.weight", rf"{target}tam.weight#\{group}", "TAM offset row"),
            Rule(rf"{source}tam\.blending_layers\.(\d+)\.weight", rf"{target}tam.weight#\{group}", "TAM offset row"))


RULES: tuple[Rule, ...] = (
    Rule(r"conv1\.weight", "stem.conv.0.weight", "renamed"),
    Rule(rf"bn1\.{_BN}", r"stem.conv.1.\1", "renamed"),
    *_tam_rules("", "stem."),
    Rule(r"b_conv0\.weight", "stem.big.0.weight", "renamed"),
    Rule(rf"bn_b0\.{_BN}", r"stem.big.1.\1", "renamed"),
    *[rule for i, j in ((0, 0), (1, 2), (2, 4)) for rule in (
        Rule(rf"l_conv{i}\.weight", f"stem.little.{j}.0.weight", "renamed"),
        Rule(rf"bn_l{i}\.{_BN}", rf"stem.little.{j}.1.\1", "renamed"))],
    Rule(r"bl_init\.weight", "stem.merge.0.0.weight", "renamed"),
    Rule(rf"bn_bl_init\.{_BN}", r"stem.merge.0.1.\1", "renamed"),
    *[rule for k in (1, 2, 3) for rule in (
        *_tam_rules(f"layer{k}\\.", f"stages.{k - 1}."),
        Rule(rf"layer{k}\.(big|little|fusion)\.(\d+)\.{_BOTTLENECK}", rf"stages.{k - 1}.\1.\2.\3", "renamed"),
        Rule(rf"layer{k}\.(big|little|fusion)\.(\d+)\.downsample\.(\d)\.(\w+)", rf"stages.{k - 1}.\1.\2.shortcut.\3.\4", "renamed"),
        Rule(rf"layer{k}\.little_e\.(\d)\.(\w+)", rf"stages.{k - 1}.little_expand.\1.\2", "renamed"))],
    *_tam_rules(r"layer4\.(\d+)\.", r"stages.3.blocks.\1.", group=2),
    Rule(rf"layer4\.(\d+)\.{_BOTTLENECK}", r"stages.3.blocks.\1.\2", "renamed"),
    Rule(r"layer4\.(\d+)\.downsample\.(\d)\.(\w+)", r"stages.3.blocks.\1.shortcut.\2.\3", "renamed"),
    Rule(r"(fc|new_fc)\.(weight|bias)", None, "not imported: classifier head"),
)


def convert(source: Path, options: BLVNetImportOptions) -> BackboneImport:
    """IBM's bLVNet-TAM checkpoint as a tadprune backbone import."""
    report = ImportReport("blvnet", str(source), file_digest(source) if source.is_file() else "", layout="IBM bLVNet-TAM")
    state, removed = strip_wrapper_prefixes(pick_state_dict(read_weights(source), options.state_key, str(source), report))
    roots = [key[: -len(ANCHOR)] for key in state if key == ANCHOR or key.endswith("." + ANCHOR)]
    if len(roots) != 1:
        raise CheckpointError(f"{source}: {len(roots)} bLVNet-TAM stems ({ANCHOR}) found, expected exactly one")
    mapped = map_keys(state, roots[0], RULES, str(source))
    weights: dict[str, Tensor] = {}
    rows: dict[str, dict[str, Tensor]] = {}
    for key, (target, how) in mapped.items():
        report.map(removed + key, target and target.split("#")[0], how)
        if target is not None and "#" in target:
            base, slot = target.split("#")
            rows.setdefault(base, {})[slot] = state[key]
        elif target is not None:
            weights[target] = state[key]
    weights.update({target: _tam_weight(pieces, target, str(source)) for target, pieces in rows.items()})
    config = _config(weights, options, str(source))
    report.notes.append(f"architecture: {config.model_dump_json()}")
    return BackboneImport(config, weights, report)


def _tam_weight(pieces: dict[str, Tensor], target: str, source: str) -> Tensor:
    """Per-offset depthwise 1x1 conv weights `[C, 1, 1, 1]` -> `[offsets, C]`, offsets -r..r."""
    slots = {(_TAM_SLOTS[name] if name in _TAM_SLOTS else int(name)): weight for name, weight in pieces.items()}
    if sorted(slots) != list(range(len(slots))) or len(slots) % 2 == 0:
        raise CheckpointError(f"{source}: {target} has offsets {sorted(slots)}, expected an odd count 0..2r")
    return torch.stack([slots[i].reshape(-1) for i in range(len(slots))])


def _config(weights: dict[str, Tensor], options: BLVNetImportOptions, source: str) -> BLVNetConfig:
    """Depths, base width, alpha and TAM radius from the weights; beta and the input from the options."""
    def count(prefix: str) -> int:
        pattern = re.compile(rf"{re.escape(prefix)}(\d+)\.")
        return len({match.group(1) for key in weights if (match := pattern.match(key))})

    base_width = weights["stem.conv.0.weight"].shape[0]
    alpha = base_width // weights["stem.little.0.0.weight"].shape[0]
    depths = (*[count(f"stages.{k}.big.") + 1 for k in range(3)], count("stages.3.blocks."))
    try:
        config = BLVNetConfig(depths=depths, base_width=base_width, alpha=alpha, beta=options.beta,
                              tam_radius=(weights["stem.tam.weight"].shape[0] - 1) // 2,
                              num_frames=options.num_frames, img_size=options.img_size)
    except ValueError as error:
        raise CheckpointError(f"{source}: the architecture read from it is not valid: {error}") from None
    for stage in range(3):
        big, little = config.branch_depths(stage)
        if big == 1:
            raise CheckpointError(f"{source}: stage {stage} has one Big block; IBM's code keeps its last ReLU there and "
                                  "tadprune's does not, so the import would not compute the same")
        if count(f"stages.{stage}.little.") != little:
            raise CheckpointError(f"{source}: layer{stage + 1} has {count(f'stages.{stage}.little.')} Little blocks, "
                                  f"beta {options.beta} gives {little}; give the release's --beta")
    return config
