"""OpenTAD / PBD's own model code as a reference, for the scripts that compare `tadprune import
opentad` with it: the detector (`ActionFormer`, its projection, neck, head), `BackboneWrapper` with
mmaction2's `Recognizer3D`, and PBD's ViTs, imported from a checkout.

Nothing of theirs is copied here. Their package `__init__`s import every model of the zoo (and
torchvision, not installed here), so the subpackages are entered without running them and only the
modules an ActionFormer on a ViT needs are imported, which registers them as OpenTAD does.
torchvision is only imported, by the data transforms' module, for transforms not used here: an empty
module stands in for it. The 1D NMS C++ extension is built once into the temporary directory (gcc and
the installed torch). Dependencies: mmengine, mmcv-lite, mmaction2, einops (`--ref-deps`, installed
with `pip install --target DIR --no-deps mmengine==0.10.7 mmcv-lite==2.1.0 mmaction2==1.2.0 addict
yapf termcolor platformdirs rich einops opencv-python-headless`).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

MODULES = (
    "opentad.datasets.transforms.formatting", "opentad.datasets.transforms.end_to_end",
    "opentad.models.backbones.backbone_wrapper", "opentad.models.builder", "opentad.models.bricks",
    "opentad.models.backbones.vit", "opentad.models.backbones.vit_longlora", "opentad.models.backbones.vit_longlora_student",
    "opentad.models.backbones.vit_teacher", "opentad.models.projections.actionformer_proj", "opentad.models.necks.fpn",
    "opentad.models.dense_heads.prior_generator.point_generator", "opentad.models.dense_heads.actionformer_head",
    "opentad.models.losses.focal_loss", "opentad.models.losses.iou_loss",
    "opentad.models.detectors.actionformer", "opentad.models.detectors.actionformer_student",
    "mmaction.models.recognizers.recognizer3d", "mmaction.models.data_preprocessors.data_preprocessor",
)
# Entered without running their __init__ (which imports the whole zoo).
PACKAGES = {
    "opentad": "opentad", "opentad.datasets": "opentad/datasets", "opentad.datasets.transforms": "opentad/datasets/transforms",
    "opentad.models": "opentad/models", "opentad.models.backbones": "opentad/models/backbones",
    "opentad.models.detectors": "opentad/models/detectors", "opentad.models.projections": "opentad/models/projections",
    "opentad.models.necks": "opentad/models/necks", "opentad.models.dense_heads": "opentad/models/dense_heads",
    "opentad.models.dense_heads.prior_generator": "opentad/models/dense_heads/prior_generator",
    "opentad.models.losses": "opentad/models/losses",
}
MMACTION_PACKAGES = ("mmaction", "mmaction.models", "mmaction.models.backbones", "mmaction.models.recognizers",
                     "mmaction.models.data_preprocessors")


def _package(name: str, path: Path) -> None:
    package = types.ModuleType(name)
    package.__path__ = [str(path)]
    package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    sys.modules[name] = package


def load_opentad(checkout: Path, ref_deps: Path) -> SimpleNamespace:
    """OpenTAD's `build_detector`, `batched_nms` and the ViT modules, from the checkout at `checkout`."""
    checkout, ref_deps = Path(checkout).resolve(), Path(ref_deps).resolve()
    sys.dont_write_bytecode = True  # leave the checkouts as they are
    for path in (checkout, ref_deps):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if "nms_1d_cpu" not in sys.modules:
        from torch.utils.cpp_extension import load

        build = Path(tempfile.gettempdir()) / "tadprune_opentad_nms"
        build.mkdir(exist_ok=True)
        source = checkout / "opentad" / "models" / "utils" / "post_processing" / "nms" / "nms_cpu.cpp"
        sys.modules["nms_1d_cpu"] = load(name="nms_1d_cpu", sources=[str(source)], build_directory=str(build))
    torchvision = types.ModuleType("torchvision")
    torchvision.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
    sys.modules.setdefault("torchvision", torchvision)
    for name, sub in PACKAGES.items():
        _package(name, checkout / sub)
    for name in MMACTION_PACKAGES:
        _package(name, ref_deps / name.replace(".", "/"))
    for name in MODULES:
        module = importlib.import_module(name)
        if name.endswith("backbone_wrapper"):  # what `builder` takes from the backbones package
            sys.modules["opentad.models.backbones"].BackboneWrapper = module.BackboneWrapper
    builder = sys.modules["opentad.models.builder"]
    nms = importlib.import_module("opentad.models.utils.post_processing.nms.nms")
    return SimpleNamespace(path=checkout, build_detector=builder.build_detector, batched_nms=nms.batched_nms,
                           student=sys.modules["opentad.models.backbones.vit_longlora_student"])
