"""The ActionFormer release (happyharrycn/actionformer_release) as a reference, for the scripts that
compare our detector with it: its modules imported from a checkout, its 1D NMS C++ extension built
once into the temporary directory (gcc and the installed torch; nothing is downloaded), and our
`DetectorConfig` for one of its configs.

Nothing of the release is copied into this repository: `load_release(PATH)` imports it from PATH.
"""
from __future__ import annotations

import copy
import importlib
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from tadmodels.checkpoints.actionformer import release_detector_config
from tadmodels.models.actionformer import DetectorConfig


def load_release(path: Path) -> SimpleNamespace:
    """The release's `load_config`, `make_meta_arch` and `batched_nms` from the checkout at `path`."""
    path = Path(path).resolve()
    source = path / "libs" / "utils" / "csrc" / "nms_cpu.cpp"
    if not source.exists():
        raise FileNotFoundError(f"{source}: missing; --reference must be an actionformer_release checkout")
    if "nms_1d_cpu" not in sys.modules:
        from torch.utils.cpp_extension import load

        build = Path(tempfile.gettempdir()) / "tadprune_actionformer_nms"
        build.mkdir(exist_ok=True)
        sys.modules["nms_1d_cpu"] = load(name="nms_1d_cpu", sources=[str(source)], build_directory=str(build))
    sys.dont_write_bytecode = True  # leave the checkout as it is
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    core = importlib.import_module("libs.core")
    modeling = importlib.import_module("libs.modeling")
    nms = importlib.import_module("libs.utils.nms")
    return SimpleNamespace(path=path, load_config=core.load_config, make_meta_arch=modeling.make_meta_arch,
                           batched_nms=nms.batched_nms)


def release_config(release: SimpleNamespace, name: str, **sections: dict) -> dict:
    """The release's config `configs/{name}.yaml` (with its defaults), sections updated key by key."""
    config = copy.deepcopy(release.load_config(str(release.path / "configs" / f"{name}.yaml")))
    for section, values in sections.items():
        config[section].update(values)
    for key in ("input_dim", "num_classes", "max_seq_len"):
        config["model"][key] = config["dataset"][key]
    config["model"]["train_cfg"], config["model"]["test_cfg"] = config["train_cfg"], config["test_cfg"]
    return config


def build_release_model(release: SimpleNamespace, config: dict) -> torch.nn.Module:
    return release.make_meta_arch(config["model_name"], **copy.deepcopy(config["model"]))


def detector_config(config: dict) -> DetectorConfig:
    """Our `DetectorConfig` for a release config, as `tadprune import actionformer` makes it, without
    its input padding: these comparisons give both models the same batch, already padded as the
    release's `preprocessing` pads it, and call the release's modules after that step."""
    return release_detector_config(config).model_copy(update={"pad_min_length": None, "pad_multiple": None})


def trained_like(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state dict moved away from its initial values (zero biases, unit norms, residual
    scales of 1e-4 leave most of the network out of the outputs): every tensor gets Gaussian noise of
    std 0.05, residual scales are drawn from [0.2, 1]."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith(("drop_path_attn.scale", "drop_path_mlp.scale")):
            state[name] = 0.2 + 0.8 * torch.rand(tensor.shape, generator=generator)
        else:
            state[name] = tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
    return state


def release_outputs(model: torch.nn.Module, features: torch.Tensor, mask: torch.Tensor):
    """The release model's eval-mode forward on a padded batch (its own `forward` takes one video at a
    time in eval): points, masks, class logits and offsets per level, `[B, T_l, K]` / `[B, T_l, 2]`."""
    with torch.no_grad():
        feats, masks = model.backbone(features, mask[:, None, :])
        feats, masks = model.neck(feats, masks)
        points = model.point_generator(feats)
        logits = [x.permute(0, 2, 1) for x in model.cls_head(feats, masks)]
        offsets = [x.permute(0, 2, 1) for x in model.reg_head(feats, masks)]
    return points, [m[:, 0] for m in masks], logits, offsets


def release_detections(release: SimpleNamespace, model: torch.nn.Module, points, masks, logits, offsets, video: int):
    """The release's post-processing of one video: `inference_single_video`, then `batched_nms`
    (the steps of its `postprocessing` before the conversion to seconds). Grid units."""
    result = model.inference_single_video(points, [m[video] for m in masks], [x[video] for x in logits],
                                          [x[video] for x in offsets])
    if model.test_nms_method == "none":
        return result["segments"], result["scores"], result["labels"]
    return release.batched_nms(result["segments"].cpu(), result["scores"].cpu(), result["labels"].cpu(),
                               model.test_iou_threshold, model.test_min_score, model.test_max_seg_num,
                               use_soft_nms=model.test_nms_method == "soft", multiclass=model.test_multiclass_nms,
                               sigma=model.test_nms_sigma, voting_thresh=model.test_voting_thresh)
