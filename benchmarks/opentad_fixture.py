"""Writes the test fixture that pins `tadprune import opentad` to OpenTAD / PBD, from their own code.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/opentad_fixture.py --checkout PATH/Progressive_Block_Drop-TAD \
        --ref-deps DEPS [--out tests/fixtures/opentad]

For each case (CASES: a PBD student end to end, a ViT with LoRA and block 1 dropped, global
attention and features interpolated x2 to the window; OpenTAD's ActionFormer on features, local
attention, inputs shorter than max_seq_len) it reads the case's config from the fixture directory
(`{case}.py`, written as OpenTAD writes configs: it inherits the model from `base_model.py` and the
test dataset from `thumos_test.py`; class names in `category_idx.txt`), builds the model from it with
OpenTAD's `build_detector`, moves every parameter away from its initial value (LoRA's B starts at
zero), runs `forward_test` on random inputs with a partly padded second video and its
`post_processing` (one window, seconds = grid positions) with each of VARIANTS, and stores in
`{case}.safetensors`: the weights (`weights.` + their state-dict key), the inputs and masks, the
proposals and scores of the valid points per video (`proposals.{b}`, `scores.{b}`), and the
detections (`detections.{variant}.{b}.segments/scores/labels`). `{case}.json` holds the checkout's
commit and what the test needs. `tests/test_model_import.py` checks the import on it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch
from safetensors.torch import save_file

from opentad_reference import load_opentad

# Post-processing settings run on the same outputs: the config's, and a top-k that binds (OpenTAD
# takes it over all levels of a window).
VARIANTS = {"default": {}, "top40": {"pre_nms_topk": 40}}
CASES = {
    "student_e2e": {"inputs": "frames", "length": 32, "valid": [32, 20]},
    "features": {"inputs": "features", "length": 48, "valid": [48, 30], "channels": 24},
}


def commit(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def make_case(opentad, out: Path, name: str, case: dict, labels: list[str], seed: int) -> dict[str, torch.Tensor]:
    from mmengine.config import Config, ConfigDict

    config = Config.fromfile(str(out / f"{name}.py"))
    torch.manual_seed(seed)
    detector = opentad.build_detector(ConfigDict(config.model.to_dict())).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in detector.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    length, valid = case["length"], torch.tensor(case["valid"])
    masks = torch.arange(length)[None] < valid[:, None]
    if case["inputs"] == "frames":
        inputs = torch.randint(0, 256, (len(valid), length, 24, 24, 3), dtype=torch.uint8, generator=generator)
        model_inputs = inputs.permute(0, 4, 1, 2, 3)[:, None].float()  # OpenTAD's [B, clips, C, T, H, W]
    else:
        inputs = torch.randn(len(valid), length, case["channels"], generator=generator) * masks[..., None]
        model_inputs = inputs.transpose(1, 2)
    with torch.no_grad():
        proposals, scores = detector.forward_test(model_inputs, masks)
    # One window per video, its positions as seconds: fps = snippet stride, no offset.
    metas = [{"video_name": f"video_{b}", "fps": 4, "snippet_stride": 4, "offset_frames": 0, "duration": 1e4}
             for b in range(len(valid))]
    tensors = {f"weights.{k}": v.contiguous() for k, v in detector.state_dict().items()}
    tensors |= {"inputs": inputs, "masks": masks}
    for variant, settings in VARIANTS.items():
        post = ConfigDict(config.post_processing.to_dict() | {"sliding_window": False} | settings)
        detections = detector.post_processing((proposals, scores), metas, post, ext_cls=list(range(len(labels))))
        for b in range(len(valid)):
            found = detections[f"video_{b}"]
            tensors |= {f"detections.{variant}.{b}.segments": torch.tensor([d["segment"] for d in found]).reshape(-1, 2),
                        f"detections.{variant}.{b}.scores": torch.tensor([d["score"] for d in found]),
                        f"detections.{variant}.{b}.labels": torch.tensor([d["label"] for d in found], dtype=torch.long)}
    for b in range(len(valid)):
        tensors |= {f"proposals.{b}": proposals[b].contiguous(), f"scores.{b}": scores[b].contiguous()}
    return tensors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a Progressive_Block_Drop-TAD (or OpenTAD) checkout")
    parser.add_argument("--ref-deps", type=Path, required=True, help="folder with mmengine, mmcv-lite, mmaction2, einops")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/opentad"),
                        help="the fixture directory: its configs are read, the weights and outputs written")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    opentad = load_opentad(args.checkout, args.ref_deps)
    labels = (args.out / "category_idx.txt").read_text().split()
    for name, case in CASES.items():
        tensors = make_case(opentad, args.out, name, case, labels, args.seed)
        save_file(tensors, str(args.out / f"{name}.safetensors"))
        description = {"case": name, "checkout_commit": commit(args.checkout), "seed": args.seed, "inputs": case["inputs"],
                       "valid": case["valid"], "labels": labels, "variants": VARIANTS}
        (args.out / f"{name}.json").write_text(json.dumps(description, indent=1) + "\n")
        counts = {v: [len(tensors[f"detections.{v}.{b}.scores"]) for b in range(len(case["valid"]))] for v in VARIANTS}
        print(f"{name}: {sum(k.startswith('weights.') for k in tensors)} weight tensors, detections {counts}")


if __name__ == "__main__":
    main()
