"""PBD's alignment recipe against ours, and this code against the code before the recipe landed.

`dump DIR` (runs on the code before the change as well, so it uses only what both have): on the
tiny setting of `tests/pipeline_fixtures.py`, writes the weights of
- `train_warmup0`: the tiny base model (`train`, warm-up 0 epochs, EMA 0.999),
- `train_warmup`: the same spec trained 2 epochs with 0.5 warm-up epochs and EMA 0.9,
- `align_cheap`: `backbone.blocks.1` dropped from `train_warmup` (the same before and after) and
  aligned with the tiny setting's alignment settings (all else default: the `cheap` preset),
- with the mixed-precision settings present: `align_cheap_bf16` / `align_cheap_fp16` and
  `train_warmup_bf16`, the same runs asking for bf16 / fp16, which on a CPU run in fp32.

`compare BEFORE AFTER`: the largest absolute difference of every dumped tensor, as a Markdown table.

`release`: what the `pbd` preset sets against the release's figures, measured on VideoMAE-S shapes
(no forward pass): the parameters trained under each setting against the release's rule, the
trained parameters whose weight decay differs from the release's, the standard deviation of our
initialised LoRA A matrices against the release's 1/sqrt(rank), the learning-rate multipliers of
our warm-up + cosine schedule against the release's LinearWarmupCosineAnnealingLR, and the
weight the kept EMA gives the pre-alignment weights.

To compare with the code before a change, run `dump` from a checkout of that commit (with
PYTHONPATH at it) and from this one, then `compare`.

    nice python benchmarks/alignment_recipe.py dump /tmp/after
    nice python benchmarks/alignment_recipe.py compare /tmp/before /tmp/after
    nice python benchmarks/alignment_recipe.py release
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def dump(out: Path) -> None:
    from pipeline_fixtures import build_setting
    from pruning.alignment import AlignmentConfig, align
    from search.spec import load_study_spec
    from tadmodels.training import Experiment, load_model, train

    torch.set_num_threads(1)
    spec = load_study_spec(build_setting(out / "setting"))
    base, _ = load_model(spec.base_model)
    weights = {"train_warmup0": base}
    has_precision = "precision" in AlignmentConfig.model_fields  # the code before the change has none
    variants = {"train_warmup": {}, **({"train_warmup_bf16": {"precision": "bf16"}} if has_precision else {})}
    for name, extra in variants.items():
        train_config = spec.train.model_copy(update={"epochs": 2, "warmup_epochs": 0.5, "ema_decay": 0.9, **extra})
        weights[name] = train(Experiment.from_spec(spec.model_copy(update={"train": train_config})), show_progress=False)
    base = weights["train_warmup"]
    experiment = Experiment.from_spec(spec, base)
    precisions = ["fp32", "bf16", "fp16"] if has_precision else ["fp32"]
    for precision in precisions:
        config = spec.alignment if precision == "fp32" else spec.alignment.model_copy(update={"precision": precision})
        student = base.without_blocks(["backbone.blocks.1"])
        weights["align_cheap" + ("" if precision == "fp32" else f"_{precision}")] = align(student, base, experiment, config)
    for name, model in weights.items():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{name}.safetensors"))
        print(f"wrote {out / name}.safetensors")


def compare(before: Path, after: Path) -> None:
    rows = []
    for path in sorted(after.glob("*.safetensors")):
        name = path.stem
        counterpart = before / path.name
        baseline_name = name.removesuffix("_bf16").removesuffix("_fp16")
        if not counterpart.exists():  # a mixed-precision run: against the fp32 run of this code
            counterpart, against = after / f"{baseline_name}.safetensors", f"{baseline_name} (this code)"
        else:
            against = f"{name} (before)"
        new, old = load_file(str(path)), load_file(str(counterpart))
        if set(new) != set(old):
            raise SystemExit(f"{path} and {counterpart} hold different keys: {sorted(set(new) ^ set(old))}")
        diff = max((new[k].double() - old[k].double()).abs().max().item() for k in new)
        rows.append([name, against, len(new), f"{diff:.3g}"])
    print(markdown_table(["run (this code)", "compared with", "tensors", "max abs difference"], rows))


def release_lr(step: int, warmup: int, horizon: int, eta_min: float = 1e-8, base: float = 1.0) -> float:
    """The release's LinearWarmupCosineAnnealingLR in closed form (opentad/cores/scheduler.py),
    stepped per iteration: 0 at step 0, base at step warmup - 1, cosine to eta_min at `horizon`."""
    if step < warmup:
        return step * base / (warmup - 1)
    return eta_min + 0.5 * (base - eta_min) * (1 + math.cos(math.pi * (step - warmup) / (horizon - warmup)))


def release_rule(name: str) -> bool:
    """What the release optimises (tools/train_distillation_auto.py, opentad/cores/optimizer.py): backbone
    parameters whose name holds `lora`, `norm` or `patch_embed`, and every detector parameter."""
    if name.startswith("detector."):
        return True
    return any(key in name for key in ("lora", "norm", "patch_embed"))


def release_decays(model: torch.nn.Module, name: str) -> bool:
    """Whether the release applies weight decay to an optimised parameter: every backbone group
    decays (optimizer.py custom groups), the detector only Linear / Conv1d weights (get_optim_groups)."""
    if not name.startswith("detector."):
        return True
    owner, _, leaf = name.rpartition(".")
    return leaf == "weight" and isinstance(model.get_submodule(owner), (torch.nn.Linear, torch.nn.Conv1d))


def release() -> None:
    from pruning.alignment import AlignmentConfig, add_adapters, set_trainable
    from tadmodels.models import DetectorConfig, ModelConfig, TADModel, VideoMAEConfig
    from tadmodels.training.loop import lr_lambda

    model_config = ModelConfig(backbone=VideoMAEConfig(preset="S"), detector=DetectorConfig(num_classes=20))
    pbd = AlignmentConfig(preset="pbd")
    rows = []
    for label, config in (("cheap (default)", AlignmentConfig()), ("pbd", pbd)):
        torch.manual_seed(0)
        model = TADModel(model_config).without_blocks(["backbone.blocks.3"])
        lora = add_adapters(model, config)
        set_trainable(lora.model, config)
        trains = {n for n, p in lora.model.named_parameters() if p.requires_grad}
        release_set = {n for n, _ in lora.model.named_parameters() if release_rule(n)}
        a_std = torch.cat([m.weight.flatten() for n, m in lora.model.named_modules() if n.endswith("lora_A.alignment")]).std()
        rank = next(m.weight.shape[0] for n, m in lora.model.named_modules() if n.endswith("lora_A.alignment"))
        rows.append([label, rank, f"{config.lora_alpha or rank:g}", config.lora_init, f"{a_std:.5f}", f"{1 / math.sqrt(rank):.5f}",
                     f"{len(trains)} / {sum(lora.model.get_parameter(n).numel() for n in trains) / 1e6:.2f} M",
                     len(trains - release_set), len(release_set - trains)])
        if label == "pbd":
            decay_differs = sorted(n for n in trains if release_decays(lora.model, n) != (lora.model.get_parameter(n).ndim >= 2))
    print("LoRA and what trains (VideoMAE-S, 11 blocks left, ActionFormer head at dim 512):")
    print(markdown_table(["setting", "rank", "alpha", "A init", "A std measured", "release 1/sqrt(rank)",
                          "trained tensors / params", "trained, release does not", "release trains, we do not"], rows))
    in_detector = sum(n.startswith("detector.") for n in decay_differs)
    print(f"\npbd: weight decay applied differently from the release on {len(decay_differs)} trained tensors "
          f"({in_detector} in the detector): {', '.join(decay_differs[:3])}, ...")
    steps_per_epoch = 100
    total, warmup = pbd.epochs * steps_per_epoch, round(pbd.warmup_epochs * steps_per_epoch)
    ours = [lr_lambda(step, warmup, total) for step in range(total)]
    theirs = [release_lr(step, warmup, 65 * steps_per_epoch) for step in range(total)]
    worst = max(range(total), key=lambda s: abs(ours[s] - theirs[s]))
    print(f"\nlr multiplier, pbd preset vs release (60 epochs run, cosine horizon 65, {steps_per_epoch} steps/epoch):")
    print(markdown_table(["step", "ours", "release"], [
        [s, f"{ours[s]:.5f}", f"{theirs[s]:.5f}"] for s in (0, 1, warmup - 1, warmup, total // 2, worst, total - 1)]))
    print(f"max |difference| {abs(ours[worst] - theirs[worst]):.4f} at step {worst}")
    decay = pbd.ema_decay
    print(f"\nEMA decay {decay}: weight of the pre-alignment weights in the kept EMA after 60 epochs x "
          f"{steps_per_epoch} steps: release {decay ** total:.2e}, ours 0 (torch's AveragedModel starts at step 1's weights)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dump").add_argument("out", type=Path)
    compare_parser = commands.add_parser("compare")
    compare_parser.add_argument("before", type=Path)
    compare_parser.add_argument("after", type=Path)
    commands.add_parser("release")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.out)
    elif args.command == "compare":
        compare(args.before, args.after)
    else:
        release()


if __name__ == "__main__":
    main()
