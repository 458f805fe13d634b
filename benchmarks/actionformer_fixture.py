"""Writes the test fixture that pins our detector to the ActionFormer release, from the release's own code.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/actionformer_fixture.py --reference PATH/actionformer_release \
        [--out tests/fixtures/actionformer_release]

For each case (small configs made from the release's `thumos_i3d.yaml`, see CASES) it builds the
release's model, moves its weights away from their initial values (`trained_like`), runs it in eval
mode on random padded features (zero at padded positions, as its preprocessing pads), and stores,
in `{case}.safetensors`: the weights (`weights.` + the release's state-dict key), the inputs, the raw
outputs concatenated over levels, the points, the training targets of the given segments, the
losses after one update of the loss normaliser, and the detections after post-processing for each
test setting in `variants`; `{case}.json` holds our `DetectorConfig`, the release's config sections,
the segments and the release commit. `tests/test_actionformer_release.py` checks our detector on it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch
from safetensors.torch import save_file

from release_reference import (
    build_release_model,
    detector_config,
    load_release,
    release_config,
    release_detections,
    release_outputs,
    trained_like,
)

# Per case: overrides of the release's THUMOS14 config, valid lengths of the batch (the first fills
# the sequence), ground-truth segments (grid units) and labels per video, and test-setting variants.
CASES = {
    "thumos_small": {
        "sections": {
            "dataset": {"input_dim": 12, "num_classes": 3, "max_seq_len": 64},
            "model": {"embd_dim": 16, "fpn_dim": 16, "head_dim": 16, "n_head": 4, "backbone_arch": (2, 2, 3),
                      "n_mha_win_size": 5, "regression_range": [(0, 4), (4, 8), (8, 16), (16, 10000)]},
        },
        "lengths": [64, 41],
        # Two identical spans with different labels (THUMOS14 has such), one segment at the start.
        "segments": [[[2.0, 9.5], [10.0, 30.0], [10.0, 30.0], [40.5, 63.0], [0.0, 3.0]], [[5.0, 12.0], [20.0, 39.0]]],
        "labels": [[0, 1, 2, 1, 2], [2, 0]],
        "variants": {"default": {}, "hard": {"nms_method": "hard"}},
    },
    # ActivityNet-like: global attention at the top, absolute positions (a table of 24 stretched to 48
    # in eval), class-agnostic NMS with voting.
    "fpn_global": {
        "sections": {
            "dataset": {"input_dim": 10, "num_classes": 4, "max_seq_len": 24},  # positions stretched to 48
            "model": {"embd_dim": 16, "fpn_dim": 16, "head_dim": 16, "n_head": 2, "backbone_arch": (2, 1, 2),
                      "n_mha_win_size": [7, 7, -1], "fpn_type": "fpn", "fpn_start_level": 1,
                      "embd_with_ln": False, "head_with_ln": False, "regression_range": [(0, 8), (8, 10000)],
                      "use_abs_pe": True},
            "train_cfg": {"center_sample": "none", "label_smoothing": 0.1, "loss_weight": -1, "init_loss_norm": 50,
                          "droppath": 0.0, "head_empty_cls": [3]},
            "test_cfg": {"multiclass_nms": False, "voting_thresh": 0.75, "nms_sigma": 0.75, "max_seg_num": 30,
                         "pre_nms_topk": 50, "min_score": 0.01},
        },
        "lengths": [48, 30, 17],
        "segments": [[[1.0, 6.0], [8.0, 40.0], [30.0, 47.0]], [[3.0, 25.0]], []],
        "labels": [[0, 1, 2], [2], []],
        "variants": {"default": {}, "hard_multiclass": {"nms_method": "hard", "multiclass_nms": True}},
    },
}


def release_commit(path: Path) -> str:
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def make_case(release, name: str, case: dict, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    config = release_config(release, "thumos_i3d", **case["sections"])
    torch.manual_seed(seed)
    model = build_release_model(release, config).eval()
    weights = trained_like(model, seed)
    model.load_state_dict(weights)
    lengths, channels = case["lengths"], config["dataset"]["input_dim"]
    mask = torch.arange(lengths[0])[None, :] < torch.tensor(lengths)[:, None]
    features = torch.randn(len(lengths), channels, lengths[0], generator=torch.Generator().manual_seed(seed)) * mask[:, None]
    points, masks, logits, offsets = release_outputs(model, features, mask)
    segments = [torch.tensor(s, dtype=torch.float32).reshape(-1, 2) for s in case["segments"]]
    labels = [torch.tensor(l, dtype=torch.long) for l in case["labels"]]
    cls_targets, reg_targets = model.label_points(points, segments, labels)
    model.train()  # the losses of the eval outputs, with the normaliser updated once as in a training step
    losses = model.losses(masks, logits, offsets, cls_targets, reg_targets)
    tensors = {f"weights.{key}": value for key, value in weights.items()}
    tensors |= {"features": features, "mask": mask, "points": torch.cat(points), "valid": torch.cat(masks, 1),
                "cls_logits": torch.cat(logits, 1), "offsets": torch.cat(offsets, 1),
                "cls_targets": torch.stack(cls_targets), "reg_targets": torch.stack(reg_targets),
                "loss.cls": losses["cls_loss"], "loss.reg": torch.as_tensor(losses["reg_loss"]),
                "loss.total": losses["final_loss"], "loss.normalizer": torch.tensor(model.loss_normalizer, dtype=torch.float64)}
    model.eval()
    for variant, test in case["variants"].items():
        for attribute, value in test.items():
            setattr(model, f"test_{attribute}", value)
        for video in range(len(lengths)):
            found = release_detections(release, model, points, masks, logits, offsets, video)
            for field, value in zip(("segments", "scores", "labels"), found):
                tensors[f"detections.{variant}.{video}.{field}"] = value.contiguous()
        for attribute in test:
            setattr(model, f"test_{attribute}", config["test_cfg"][attribute])
    description = {
        "case": name, "release_commit": release_commit(release.path), "seed": seed,
        "detector": detector_config(config).model_dump(mode="json"), "input_dim": channels,
        "release_sections": {key: config[key] for key in ("model", "train_cfg", "test_cfg")},
        "lengths": lengths, "segments": case["segments"], "labels": case["labels"], "variants": case["variants"],
    }
    description["release_sections"]["model"] = {k: v for k, v in description["release_sections"]["model"].items()
                                                 if k not in ("train_cfg", "test_cfg")}
    return {k: v.contiguous() for k, v in tensors.items()}, description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="an actionformer_release checkout")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/actionformer_release"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    release = load_release(args.reference)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, case in CASES.items():
        tensors, description = make_case(release, name, case, args.seed)
        save_file(tensors, str(args.out / f"{name}.safetensors"))
        (args.out / f"{name}.json").write_text(json.dumps(description, indent=1, default=list) + "\n")
        detections = {v: sum(len(tensors[f"detections.{v}.{b}.scores"]) for b in range(len(case["lengths"])))
                      for v in case["variants"]}
        print(f"{name}: {len(description['detector'])} config fields, {sum(k.startswith('weights.') for k in tensors)} "
              f"weight tensors, detections {detections}")


if __name__ == "__main__":
    main()
