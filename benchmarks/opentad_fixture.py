"""Writes the test fixture that pins `tadprune import opentad` to OpenTAD / PBD, from their own code.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/opentad_fixture.py --checkout PATH/Progressive_Block_Drop-TAD \
        --ref-deps DEPS [--out tests/fixtures/opentad]

For each case (CASES: a PBD student end to end, a ViT with LoRA and block 1 dropped, global
attention and features interpolated x2 to the window; OpenTAD's ActionFormer on features, local
attention, inputs shorter than max_seq_len) it writes the case's config as OpenTAD writes them (a
`.py` inheriting from `base_model.py`), builds the model from it with OpenTAD's `build_detector`,
moves every parameter away from its initial value (LoRA's B starts at zero), runs `forward_test` on
random inputs with a partly padded second video and its `post_processing` (one window, seconds =
grid positions) with each of VARIANTS, and stores in `{case}.safetensors`: the weights (`weights.` +
their state-dict key), the inputs and masks, the proposals and scores of the valid points per video
(`proposals.{b}`, `scores.{b}`), and the detections (`detections.{variant}.{b}.segments/scores/labels`). `{case}.json` holds the
checkout's commit and what the test needs. `tests/test_model_import.py` checks the import on it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch
from safetensors.torch import save_file

from opentad_reference import load_opentad

LABELS = ["BasketballDunk", "CliffDiving", "GolfSwing"]
BASE_MODEL = '''model = dict(
    type="ActionFormer",
    projection=dict(
        type="Conv1DTransformerProj",
        in_channels=2048,
        out_channels=16,
        arch=(2, 1, 3),  # layers in embed / stem / branch
        conv_cfg=dict(kernel_size=3, proj_pdrop=0.0),
        norm_cfg=dict(type="LN"),
        attn_cfg=dict(n_head=2, n_mha_win_size=5),
        path_pdrop=0.1,
        use_abs_pe=False,
        max_seq_len=2304,
    ),
    neck=dict(type="FPNIdentity", in_channels=16, out_channels=16, num_levels=4),
    rpn_head=dict(
        type="ActionFormerHead",
        num_classes=3,
        in_channels=16,
        feat_channels=16,
        num_convs=2,
        cls_prior_prob=0.01,
        prior_generator=dict(
            type="PointGenerator",
            strides=[1, 2, 4, 8],
            regression_range=[(0, 4), (4, 8), (8, 16), (16, 10000)],
        ),
        loss_normalizer=100,
        loss_normalizer_momentum=0.9,
        center_sample="radius",
        center_sample_radius=1.5,
        label_smoothing=0.0,
        loss=dict(cls_loss=dict(type="FocalLoss"), reg_loss=dict(type="DIOULoss")),
    ),
)
'''
TEST_DATASET = '''dataset = dict(
    test=dict(
        type="ThumosSlidingDataset",
        ann_file="data/thumos-14/annotations/thumos_14_anno.json",
        class_map="data/thumos-14/annotations/category_idx.txt",
        data_path="data/thumos-14/raw_data/video",
        subset_name="validation",
        feature_stride=4,
        sample_stride=1,
        offset_frames=OFFSET,
        window_size=window_size,
        window_overlap_ratio=0.5,
        pipeline=[
            dict(type="mmaction.Resize", scale=(-1, 24)),
            dict(type="mmaction.CenterCrop", crop_size=24),
        ],
    ),
)
post_processing = dict(
    nms=dict(use_soft_nms=True, sigma=0.7, max_seg_num=2000, multiclass=True, voting_thresh=0.7),
)
evaluation = dict(type="mAP", subset="validation", tiou_thresholds=[0.3, 0.4, 0.5, 0.6, 0.7])
'''
STUDENT = '''_base_ = ["base_model.py"]

window_size = 32
scale_factor = 1
chunk_num = window_size * scale_factor // 16  # 16 frames per VideoMAE chunk
''' + TEST_DATASET.replace("OFFSET", "0") + '''
model = dict(
    type="ActionFormerStudent",
    backbone=dict(
        type="mmaction.Recognizer3D",
        backbone=dict(
            type="VisionTransformerLongLoRAStudent",
            img_size=32,
            patch_size=8,
            embed_dims=32,
            depth=3,
            num_heads=2,
            mlp_ratio=4,
            qkv_bias=True,
            num_frames=16,
            drop_path_rate=0.1,
            norm_cfg=dict(type="LN", eps=1e-6),
            return_feat_map=True,
            with_cp=False,
            lora_rank=32 // 4,
            drop_idx=[1],
        ),
        data_preprocessor=dict(
            type="mmaction.ActionDataPreprocessor",
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            format_shape="NCTHW",
        ),
        custom=dict(
            pre_processing_pipeline=[
                dict(type="Rearrange", keys=["frames"], ops="b n c (t1 t) h w -> (b t1) n c t h w", t1=chunk_num),
            ],
            post_processing_pipeline=[
                dict(type="Reduce", keys=["feats"], ops="b n c t h w -> b c t", reduction="mean"),
                dict(type="Rearrange", keys=["feats"], ops="(b t1) c t -> b c (t1 t)", t1=chunk_num),
                dict(type="Interpolate", keys=["feats"], size=window_size),
            ],
            norm_eval=False,
            freeze_backbone=False,
        ),
    ),
    projection=dict(in_channels=32, max_seq_len=window_size, attn_cfg=dict(n_mha_win_size=-1)),
    soft_loss=dict(cls_loss="kl", reg_loss=dict(type="DIOULoss")),
    temperature=3.5,
)
solver = dict(ema=True, train=dict(batch_size=2))
work_dir = f"exps/thumos/tiny_student_{window_size}"
'''
FEATURES = '''_base_ = ["base_model.py"]

window_size = 64
''' + TEST_DATASET.replace("OFFSET", "8") + '''
model = dict(projection=dict(in_channels=24, max_seq_len=window_size))
solver = dict(ema=False)
'''
# Post-processing settings run on the same outputs: the config's, and a top-k that binds (OpenTAD
# takes it over all levels of a window).
VARIANTS = {"default": {}, "top40": {"pre_nms_topk": 40}}
CASES = {
    "student_e2e": {"config": STUDENT, "inputs": "frames", "length": 32, "valid": [32, 20]},
    "features": {"config": FEATURES, "inputs": "features", "length": 48, "valid": [48, 30], "channels": 24},
}


def commit(path: Path) -> str:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def make_case(opentad, out: Path, name: str, case: dict, seed: int) -> dict[str, torch.Tensor]:
    from mmengine.config import Config, ConfigDict

    (out / f"{name}.py").write_text(case["config"])
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
        detections = detector.post_processing((proposals, scores), metas, post, ext_cls=list(range(len(LABELS))))
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
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/opentad"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    opentad = load_opentad(args.checkout, args.ref_deps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "base_model.py").write_text(BASE_MODEL)
    (args.out / "category_idx.txt").write_text("\n".join(LABELS) + "\n")
    for name, case in CASES.items():
        tensors = make_case(opentad, args.out, name, case, args.seed)
        save_file(tensors, str(args.out / f"{name}.safetensors"))
        description = {"case": name, "checkout_commit": commit(args.checkout), "seed": args.seed, "inputs": case["inputs"],
                       "valid": case["valid"], "labels": LABELS, "variants": VARIANTS}
        (args.out / f"{name}.json").write_text(json.dumps(description, indent=1) + "\n")
        counts = {v: [len(tensors[f"detections.{v}.{b}.scores"]) for b in range(len(case["valid"]))] for v in VARIANTS}
        print(f"{name}: {sum(k.startswith('weights.') for k in tensors)} weight tensors, detections {counts}")


if __name__ == "__main__":
    main()
