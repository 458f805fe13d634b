"""Full-model imports against the code the checkpoints come from, at the released sizes.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/full_import_equality.py --release PATH/actionformer_release \
        --opentad PATH/Progressive_Block_Drop-TAD --ref-deps DEPS [--seed 0] [--threads 2]

ActionFormer release: its `configs/thumos_i3d.yaml` model (2048-d I3D features, max_seq_len 2304,
window 19), weights moved away from their initial values (`trained_like`), saved as its `train.py`
saves them (`state_dict` and `state_dict_ema` under `module.`, AdamW and its warm-up cosine
scheduler's states, the epoch) and imported with `tadprune import actionformer` and the YAML. Each
video (2304, 1500 and 3000 positions of random features) goes through the release's own eval path
(`model([video])`: its padding, network, per-level top-k, Soft-NMS, seconds) and through the imported
model as `tadprune predict` runs it (padded to the model's multiple, then by the detector as
configured, `detect`, grid to seconds); compared: class logits and offsets at the valid positions,
and the detections. "Padding off" is the imported model with `pad_min_length` and `pad_multiple`
unset (what tadprune did before): the release pads 1500 positions to 2304 and 3000 to 3456.

PBD: its `e2e_thumos_videomae_s_768x1_160_LongLoRA_distillation_auto.py` (VideoMAE-S student with
LoRA rank 96, 768-frame windows at 160 px, features interpolated 384 -> 768, ActionFormer with
global attention), blocks 3 and 7 dropped through a config that inherits from it (`drop_idx`),
built with OpenTAD's `build_detector` from the checkout, every parameter moved away from its initial
value (LoRA's B included), saved as OpenTAD saves (`state_dict` under `module.`, `state_dict_ema`)
and imported with `tadprune import opentad` and that config. Two windows of random frames, the
second valid for its first 500 positions, go through OpenTAD's `forward_test` and the imported
model; compared: the scores and proposals of the valid points and the detections of OpenTAD's
`post_processing` (one window, NMS over it; seconds = positions) against `detect`. The imported
detector is then run on the same backbone features with the release's ConvModule semantics
(epsilon 1e-5, padded positions not re-zeroed) to show what those two settings carry.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import tempfile
import time
from pathlib import Path

import torch

from common import markdown_table
from opentad_reference import load_opentad
from release_reference import build_release_model, load_release, release_config, release_outputs, trained_like
from tadmodels.checkpoints import run_import
from tadmodels.data.formats import grid_to_seconds
from tadmodels.models import TADModel
from tadmodels.training import load_model

VIDEO_LENGTHS = (2304, 1500, 3000)
FPS, STRIDE, CLIP = 30.0, 4, 16


def sorted_rows(labels, scores, segments) -> torch.Tensor:
    rows = sorted(zip(labels.tolist(), (-scores).tolist(), *segments.T.tolist()))
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def compare_detections(ours: torch.Tensor, theirs: torch.Tensor) -> list:
    """Count; labels equal once both lists are ordered by (label, score); largest score / segment difference."""
    if ours.shape != theirs.shape:
        return [f"{len(ours)} / {len(theirs)}", "-", "-", "-"]
    return [f"{len(ours)} / {len(theirs)}", bool(torch.equal(ours[:, 0], theirs[:, 0])),
            f"{(ours[:, 1] - theirs[:, 1]).abs().max().item():.1e}", f"{(ours[:, 2:] - theirs[:, 2:]).abs().max().item():.1e}"]


def release_part(args, work: Path) -> str:
    release = load_release(args.release)
    config = release_config(release, "thumos_i3d")
    torch.manual_seed(args.seed)
    reference = build_release_model(release, config)
    reference.load_state_dict(trained_like(reference, args.seed))
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-4)
    schedulers = importlib.import_module("libs.utils.lr_schedulers")
    scheduler = schedulers.LinearWarmupCosineAnnealingLR(optimizer, 5, 35)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    checkpoint = work / "epoch_035.pth.tar"
    torch.save({"epoch": 35, "state_dict": copy.deepcopy(state), "scheduler": scheduler.state_dict(),
                "optimizer": optimizer.state_dict(), "state_dict_ema": state}, checkpoint)
    report = run_import("actionformer", checkpoint, work / "release_model",
                        {"config": release.path / "configs" / "thumos_i3d.yaml"})
    model, _ = load_model(work / "release_model")
    unpadded, _ = load_model(work / "release_model")
    unpadded.detector.config = unpadded.detector.config.model_copy(update={"pad_min_length": None, "pad_multiple": None})
    reference.eval()
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for length in VIDEO_LENGTHS:
        features = torch.randn(config["dataset"]["input_dim"], length, generator=generator)
        video = {"video_id": f"v{length}", "feats": features, "segments": None, "labels": None, "fps": FPS,
                 "duration": (length * STRIDE + CLIP) / FPS, "feat_stride": STRIDE, "feat_num_frames": CLIP}
        with torch.no_grad():
            inputs, masks = reference.preprocessing([video])
            _, their_masks, their_logits, their_offsets = release_outputs(reference, inputs, masks[:, 0])
            their_valid = torch.cat(their_masks, 1)
            logits, offsets = torch.cat(their_logits, 1)[their_valid], torch.cat(their_offsets, 1)[their_valid]
            theirs = reference([video])[0]
        their_rows = sorted_rows(theirs["labels"], theirs["scores"], theirs["segments"])
        padded_length = -(-length // model.sequence_multiple) * model.sequence_multiple
        ours_in = torch.zeros(1, padded_length, features.shape[0])
        ours_in[0, :length] = features.T
        mask = torch.arange(padded_length)[None] < length
        for name, candidate in (("imported (padding as the release)", model), ("padding off", unpadded)):
            with torch.no_grad():
                output = candidate(ours_in, mask)
                found = candidate.detector.detect(output)[0]
            seconds = torch.from_numpy(grid_to_seconds(found.segments.numpy(), FPS, STRIDE, CLIP)).float()
            seconds = seconds.clamp(0, video["duration"])
            valid = output.valid
            rows.append([length, name, output.cls_logits.shape[1], f"{(output.cls_logits[valid] - logits).abs().max().item():.1e}",
                         f"{(output.offsets[valid] - offsets).abs().max().item():.1e}",
                         *compare_detections(sorted_rows(found.labels, found.scores, seconds), their_rows)])
    header = ["positions", "model", "points run", "max |logit diff|", "max |offset diff|", "detections (ours / release)",
              "labels equal", "max score diff", "max segment diff (s)"]
    return (f"Import: {report.layout}; " + "; ".join(report.summary()[:3]) + "\n\n" + markdown_table(header, rows))


def opentad_part(args, work: Path) -> str:
    opentad = load_opentad(args.opentad, args.ref_deps)  # puts the checkout and its dependencies on the path
    from mmengine.config import Config, ConfigDict

    source = args.opentad / "configs" / "adatad" / "videomae" / "e2e_thumos_videomae_s_768x1_160_LongLoRA_distillation_auto.py"
    child = work / "pbd_student_dropped.py"
    child.write_text(f'_base_ = ["{source}"]\n'
                     'model = dict(backbone=dict(backbone=dict(drop_idx=[3, 7], with_cp=False)))\n')
    class_map = work / "category_idx.txt"
    class_map.write_text("\n".join(f"class_{i}" for i in range(20)) + "\n")
    config = Config.fromfile(str(child))
    torch.manual_seed(args.seed)
    detector = opentad.build_detector(ConfigDict(config.model.to_dict())).eval()
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for parameter in detector.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    state = detector.state_dict()
    checkpoint = work / "best.pth"
    torch.save({"epoch": 60, "state_dict": {f"module.{k}": v for k, v in state.items()}, "state_dict_ema": state}, checkpoint)
    start = time.perf_counter()
    report = run_import("opentad", checkpoint, work / "pbd_model", {"config": child, "class_map": class_map})
    import_seconds = time.perf_counter() - start
    model, spec = load_model(work / "pbd_model")
    window = 768
    frames = torch.randint(0, 256, (2, window, 160, 160, 3), dtype=torch.uint8, generator=generator)
    masks = torch.arange(window)[None] < torch.tensor([[window], [500]])
    with torch.no_grad():
        proposals, scores = detector.forward_test(frames.permute(0, 4, 1, 2, 3)[:, None].float(), masks)
        metas = [{"video_name": f"w{b}", "fps": 4, "snippet_stride": 4, "offset_frames": 0, "duration": 1e4} for b in range(2)]
        post = ConfigDict(config.post_processing.to_dict() | {"sliding_window": False})
        their_detections = detector.post_processing((proposals, scores), metas, post, ext_cls=list(range(20)))
        features = model.extract_features(frames)
        outputs = {"imported": model.detect_from_features(features, masks)}
        release_style = spec.model.detector.model_copy(update={"conv_norm_eps": 1e-5, "mask_conv_outputs": False})
        plain = TADModel(spec.model.model_copy(update={"detector": release_style})).eval()
        plain.load_state_dict(model.state_dict())
        outputs["with the release's ConvModule (eps 1e-5, no re-masking)"] = plain.detect_from_features(features, masks)
    rows = []
    for name, output in outputs.items():
        detections = (model if name == "imported" else plain).detector.detect(output)
        probs, points = output.cls_logits.sigmoid(), output.points
        for b in range(2):
            valid = output.valid[b]
            offsets, positions, strides = output.offsets[b][valid], points.positions[valid], points.strides[valid]
            ours_proposals = torch.stack([positions - offsets[:, 0] * strides, positions + offsets[:, 1] * strides], -1)
            found = detections[b]
            ours_rows = sorted_rows(found.labels, torch.tensor([round(x, 4) for x in found.scores.tolist()]),
                                    (found.segments.clamp(min=0) * 100).round() / 100)
            theirs = their_detections[f"w{b}"]
            their_rows = sorted_rows(torch.tensor([d["label"] for d in theirs]), torch.tensor([d["score"] for d in theirs]),
                                     torch.tensor([d["segment"] for d in theirs]).reshape(-1, 2))
            rows.append([name, f"{int(masks[b].sum())} / {window}", f"{(probs[b][valid] - scores[b]).abs().max().item():.1e}",
                         f"{(ours_proposals - proposals[b]).abs().max().item():.1e}", *compare_detections(ours_rows, their_rows)])
    header = ["model", "valid positions", "max |score diff|", "max |proposal diff| (positions)", "detections (ours / OpenTAD)",
              "labels equal", "max score diff", "max segment diff"]
    summary = (f"Import ({import_seconds:.1f} s): {report.layout}; dropped {spec.model.dropped}; feature_upsample "
               f"{spec.model.feature_upsample}; " + "; ".join(line.strip() for line in report.summary() if "LoRA" in line))
    return summary + "\n\n" + markdown_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", type=Path, required=True, help="an actionformer_release checkout")
    parser.add_argument("--opentad", type=Path, required=True, help="a Progressive_Block_Drop-TAD checkout")
    parser.add_argument("--ref-deps", type=Path, required=True, help="folder with mmengine, mmcv-lite, mmaction2, einops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default="release,opentad", help="which comparisons to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = {"release": ("ActionFormer release, THUMOS14 I3D", release_part),
             "opentad": ("PBD VideoMAE-S student, blocks 3 and 7 dropped, LoRA unmerged", opentad_part)}
    with tempfile.TemporaryDirectory() as directory:
        for name in args.parts.split(","):
            title, run = parts[name]
            print(f"## {title}\n\n{run(args, Path(directory))}\n")


if __name__ == "__main__":
    main()
