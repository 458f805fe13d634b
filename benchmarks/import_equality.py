"""Imported backbones against the code they were released with: the largest difference of the
per-tubelet-step features, for each VideoMAE variant and layout and for bLVNet-TAM.

For each variant the reference model is built from its own code with random weights (every
LayerNorm, bias and LayerScale perturbed so that each one shows), saved in the layout its training
script writes, imported with `tadprune import`, and both run on the same clip. Features compared:
the reference's last-block tokens (after its final `norm` where it has one) averaged over space per
tubelet step, with its own `fc_norm` applied to each step's mean where its head has one; OpenTAD's
own feature map (`return_feat_map=True`) averaged over space; bLVNet-TAM's `layer4` output
averaged over space. "Before" is the loader the project had until the importers (commit 6ff2439),
run from an export of that commit (`--before-tree`): refused, or its max difference.

The references run from the read-only checkouts (`--refs`). MCG-NJU's modeling files import four
helpers from timm (`drop_path`, `to_2tuple`, `trunc_normal_`, `register_model`; drop_path only acts
in training): a few lines here stand in for them. OpenTAD's ViT needs mmcv/mmengine and mmaction2's
`vit_mae.py` (`--ref-deps`, installed with `pip install --target DIR --no-deps mmengine==0.10.7
mmcv-lite==2.1.0 mmaction2==1.2.0 addict yapf termcolor platformdirs rich einops
opencv-python-headless`); mmaction2's package `__init__` (which imports the whole zoo) is skipped.

    python benchmarks/import_equality.py --refs /work/refs --ref-deps DEPS [--before-tree DIR]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from common import markdown_table
from tadmodels.checkpoints import run_import
from tadmodels.checkpoints.backbone import read_backbone_import
from tadmodels.models.tad_model import build_backbone

SMALL = dict(embed_dim=384, depth=12, num_heads=6)  # VideoMAE-S


def load_file_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def timm_stand_in() -> None:
    """The four timm helpers MCG-NJU's modeling files import (timm itself is not installed here)."""
    layers = types.ModuleType("timm.models.layers")
    layers.drop_path = lambda x, p=0.0, training=False: x  # stochastic depth: identity outside training
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = nn.init.trunc_normal_  # same signature (tensor, mean, std, a, b)
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    for name, module in {"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                         "timm.models.layers": layers, "timm.models.registry": registry}.items():
        sys.modules[name] = module


def perturb(model: nn.Module) -> nn.Module:
    """Random non-trivial values for every 1-D parameter (norm scales and shifts, biases, gammas)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 1:
                parameter.copy_(torch.randn_like(parameter) * 0.2 + (1.0 if name.endswith(("weight", "gamma_1", "gamma_2")) else 0.0))
    return model.eval()


def per_step(tokens: torch.Tensor, steps: int, fc_norm: nn.Module | None = None) -> torch.Tensor:
    means = tokens.view(tokens.shape[0], steps, -1, tokens.shape[-1]).mean(2)
    return fc_norm(means) if fc_norm is not None else means


def mcg_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MCG-NJU `VisionTransformer.forward_features` up to its `norm`, with its own modules."""
    tokens = model.patch_embed(x)
    tokens = tokens + model.pos_embed.expand(tokens.shape[0], -1, -1).type_as(tokens)
    for block in model.blocks:
        tokens = block(tokens)
    return model.norm(tokens)


class Variant:
    """A reference model, the checkpoint its code writes, how its features are read, import options."""

    def __init__(self, name: str, layout: str, build: Callable[[], nn.Module], save: Callable[[nn.Module, Path], None],
                 features: Callable[[nn.Module, torch.Tensor], torch.Tensor], clip: tuple[int, ...],
                 importer: str = "videomae", options: dict | None = None) -> None:
        self.name, self.layout, self.build, self.save = name, layout, build, save
        self.features, self.clip, self.importer, self.options = features, clip, importer, options or {}


def variants(refs: Path, ref_deps: Path | None) -> list[Variant]:
    timm_stand_in()
    sys.path.insert(0, str(refs / "MCG-NJU+VideoMAE"))
    finetune = load_file_module("modeling_finetune", refs / "MCG-NJU+VideoMAE" / "modeling_finetune.py")
    pretrain = load_file_module("modeling_pretrain", refs / "MCG-NJU+VideoMAE" / "modeling_pretrain.py")
    steps = 8
    vit_s_clip = (1, 3, 16, 224, 224)
    args = argparse.Namespace(model="vit_small_patch16_224", input_size=224, num_frames=16, tubelet_size=2)

    def finetuned(**kwargs) -> Callable[[], nn.Module]:
        return lambda: perturb(finetune.vit_small_patch16_224(num_classes=400, **kwargs))

    def save_training_checkpoint(key: str) -> Callable[[nn.Module, Path], None]:
        return lambda model, path: torch.save({key: model.state_dict(), "epoch": 9, "args": args}, path)

    mean_pooled = lambda model, x: per_step(mcg_tokens(model, x), steps, model.fc_norm)  # noqa: E731
    norm_pooled = lambda model, x: per_step(mcg_tokens(model, x), steps)  # noqa: E731
    found = [
        Variant("pre-trained (encoder + decoder)", "MCG-NJU `model`, `encoder.` prefix",
                lambda: perturb(pretrain.pretrain_videomae_small_patch16_224(decoder_depth=4)),
                save_training_checkpoint("model"),
                lambda model, x: per_step(model.encoder.forward_features(x, torch.zeros(1, 1568, dtype=torch.bool)), steps),
                vit_s_clip),
        Variant("fine-tuned, mean pooling (`fc_norm`, no `norm`)", "MCG-NJU `module` (DeepSpeed)",
                finetuned(use_mean_pooling=True), save_training_checkpoint("module"), mean_pooled, vit_s_clip),
        Variant("fine-tuned, LayerScale (`init_values=0.1`)", "MCG-NJU `model` + `args`",
                finetuned(use_mean_pooling=True, init_values=0.1), save_training_checkpoint("model"), mean_pooled, vit_s_clip),
        Variant("fine-tuned, learned `pos_embed`, `norm` (`--use_cls`)", "MCG-NJU `model` + `args`",
                lambda: _with_table(finetuned(use_mean_pooling=False, use_learnable_pos_emb=True)()),
                save_training_checkpoint("model"), norm_pooled, vit_s_clip),
        Variant("bLVNet-TAM-50 (f8x2)", "IBM `state_dict`, `module.baseline_model.`", *_blvnet(refs), (1, 3, 16, 224, 224), "blvnet"),
    ]
    found += _hugging_face(steps)
    if ref_deps is not None:
        found.append(_opentad(refs, ref_deps))
    return found


def _with_table(model: nn.Module) -> nn.Module:
    """A learned table with values of a trained one's size (the reference initialises it at std 0.02)."""
    with torch.no_grad():
        model.pos_embed.normal_(0, 0.5)
    return model


def _blvnet(refs: Path):
    sys.path.insert(0, str(refs / "IBM+bLVNet-TAM" / "core" / "models"))
    ibm = load_file_module("blvnet_tam_backbone", refs / "IBM+bLVNet-TAM" / "core" / "models" / "blvnet_tam_backbone.py")

    def build() -> nn.Module:
        model = ibm.bLVNet_TAM_BACKBONE(ibm.Bottleneck, [3, 4, 6, 3], 2, 4, num_frames=16)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 2.0)
        return perturb(model)

    def save(model: nn.Module, path: Path) -> None:
        torch.save({"epoch": 50, "state_dict": {f"module.baseline_model.{k}": v for k, v in model.state_dict().items()}}, path)

    def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = {}
        handle = model.layer4.register_forward_hook(lambda module, inputs, output: out.update(layer4=output))
        model(x.transpose(1, 2).reshape(-1, *x.shape[1:2], *x.shape[3:]))
        handle.remove()
        return out["layer4"].mean((2, 3)).view(x.shape[0], x.shape[2] // 2, -1)

    return build, save, features


def _hugging_face(steps: int) -> list[Variant]:
    import transformers

    config = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)

    def save(model: nn.Module, path: Path) -> None:
        model.save_pretrained(path)

    return [
        Variant("`VideoMAEModel` (`use_mean_pooling=False`: final `layernorm`, eps 1e-12)", "Hugging Face directory (safetensors)",
                lambda: perturb(transformers.VideoMAEModel(transformers.VideoMAEConfig(**config, use_mean_pooling=False))),
                save, lambda model, x: per_step(model(pixel_values=x.transpose(1, 2)).last_hidden_state, steps),
                (1, 3, 16, 224, 224)),
        Variant("`VideoMAEForVideoClassification` (mean pooling, `fc_norm` eps 1e-5)", "Hugging Face directory (safetensors)",
                lambda: perturb(transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(**config, num_labels=400))),
                save, lambda model, x: per_step(model.videomae(pixel_values=x.transpose(1, 2)).last_hidden_state, steps, model.fc_norm),
                (1, 3, 16, 224, 224)),
    ]


def _opentad(refs: Path, ref_deps: Path) -> Variant:
    sys.path.insert(0, str(ref_deps))
    for name, sub in (("mmaction", ""), ("mmaction.models", "/models"), ("mmaction.models.backbones", "/models/backbones")):
        package = types.ModuleType(name)
        package.__path__ = [str(ref_deps / "mmaction") + sub]
        sys.modules[name] = package
    vit = load_file_module("opentad_vit", refs / "sming256+OpenTAD" / "opentad" / "models" / "backbones" / "vit.py")

    def save(model: nn.Module, path: Path) -> None:
        state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
        torch.save({"meta": {"epoch": 1}, "state_dict": state | {"cls_head.fc_cls.weight": torch.zeros(400, 384),
                                                                   "cls_head.fc_cls.bias": torch.zeros(400)}}, path)

    return Variant("OpenTAD/PBD ViT-S, 224-px table run at 160 px, no final norm", "mmaction2 `state_dict`, `backbone.` prefix",
                   lambda: perturb(vit.VisionTransformerCP(img_size=224, embed_dims=384, depth=12, num_heads=6,
                                                           return_feat_map=True)),
                   save, lambda model, x: model(x).mean((3, 4)).transpose(1, 2), (1, 3, 16, 160, 160),
                   options={"img_size": 160})


def before(tree: Path | None, checkpoint: Path, variant: Variant, reference: torch.Tensor, x: torch.Tensor) -> str:
    """What the loader of commit 6ff2439 made of the checkpoint: refused (why), or its max difference."""
    if tree is None:
        return "not measured"
    if variant.importer != "videomae":
        return "no importer"
    legacy = load_file_module("legacy_videomae", tree / "tadmodels" / "models" / "videomae.py")
    if checkpoint.is_dir():  # it took a state dict: the Hugging Face weights file, read by hand
        state = load_file(str(checkpoint / "model.safetensors"))
    else:  # it had no wrapper handling: the state dict taken out by hand
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = next(loaded[k] for k in ("model", "module", "state_dict") if k in loaded)
    backbone = legacy.VideoMAEBackbone(legacy.VideoMAEConfig(depth=12, dim=384, num_heads=6, img_size=x.shape[-1]))
    try:
        legacy.load_videomae_checkpoint(backbone, state)
    except ValueError as error:
        return "refused: " + str(error).split(":", 1)[1].strip()[:90] + "..."
    with torch.no_grad():
        return f"loaded silently, max diff {(backbone.eval()(x) - reference).abs().max().item():.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=Path, required=True, help="folder with the reference checkouts")
    parser.add_argument("--ref-deps", type=Path, help="folder with mmcv-lite, mmengine, mmaction2 (OpenTAD's ViT)")
    parser.add_argument("--before-tree", type=Path, help="an export of commit 6ff2439, for the loader it had")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, variant in enumerate(variants(args.refs, args.ref_deps)):
            torch.manual_seed(index)
            reference_model = variant.build()
            checkpoint = Path(tmp) / f"{index}-source"  # a file, or a Hugging Face directory
            variant.save(reference_model, checkpoint)
            out = Path(tmp) / f"{index}-import"
            report = run_import(variant.importer, checkpoint, out, variant.options)
            config, state = read_backbone_import(out)
            ours = build_backbone(config).eval()
            ours.load_state_dict(state)
            x = torch.randn(*variant.clip)
            with torch.no_grad():
                reference = variant.features(reference_model, x)
                difference = (ours(x) - reference).abs().max().item()
            rows.append([variant.name, variant.layout, f"{tuple(reference.shape)}, max |ref| {reference.abs().max().item():.3g}",
                         f"{difference:.2g}", before(args.before_tree, checkpoint, variant, reference, x)])
            if getattr(config, "pos_table_img_size", None) is not None:  # what a fresh table at img_size would give
                fresh = build_backbone(config.model_copy(update={"pos_table_img_size": None})).eval()
                fresh.load_state_dict(state)
                with torch.no_grad():
                    rows.append([f"{variant.name}: fresh {config.img_size}-px sine table instead", variant.layout, "as above",
                                 f"{(fresh(x) - reference).abs().max().item():.3g}", "(the table a loader that ignores the stored one makes)"])
            print(f"{variant.name}: {report.layout}: max diff {difference:.3g}", flush=True)
    print(markdown_table(["variant", "source layout", "features compared (shape, scale)", "max diff after", "before"], rows))


if __name__ == "__main__":
    main()
