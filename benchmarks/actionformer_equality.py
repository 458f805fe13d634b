"""Our detector against the ActionFormer release at THUMOS14 size, with the same weights.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/actionformer_equality.py --reference PATH/actionformer_release \
        [--seed 0] [--nms-cases 300] [--repeats 3] [--threads 2]

Builds the release's `configs/thumos_i3d.yaml` model (2048-d input, max_seq_len 2304, dim 512, arch
(2, 2, 5), window 19, identity neck, 20 classes) and ours from the same config, compares their
state-dict keys and shapes, moves the release's weights away from their initial values
(`trained_like`) and loads them into ours plainly. On a batch of 2 random feature sequences of 2304
positions, valid for 2304 and 1500 (zero padding, as the release pads), it reports per pyramid
level the largest difference of class logits and offsets (float32, eval mode); the training
targets and losses of a few segments; and the detections after post-processing, end to end (each
model's post-processing on its own outputs) and from the same outputs. Then the Soft-NMS alone on
`--nms-cases` random candidate sets with many tied scores, against the release's C++ (all its
settings: Soft or hard, per class or not, voting). Last, forward and post-processing times,
interleaved (`--repeats` rounds, median), on `--threads` CPU threads. Prints Markdown for RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from common import markdown_table
from release_reference import (
    build_release_model,
    detector_config,
    load_release,
    release_config,
    release_detections,
    release_outputs,
    trained_like,
)
from tadmodels.models.actionformer import ActionFormer, DetectorOutput
from tadmodels.models.actionformer.postprocess import Detections, batched_nms

LENGTHS = (2304, 1500)
# Grid units; two spans with two labels each (THUMOS14 has such), short and long ones for every level.
SEGMENTS = ([[10.0, 13.5], [40.0, 52.0], [40.0, 52.0], [300.0, 420.0], [1000.0, 1700.0], [2250.0, 2303.0]],
            [[0.0, 30.0], [700.0, 760.0], [1490.0, 1499.0]])
LABELS = ([3, 7, 8, 12, 0, 19], [5, 5, 11])


def level_differences(ours: DetectorOutput, theirs, valid_only: bool) -> list[list]:
    _, masks, logits, offsets = theirs
    rows = []
    split = list(ours.points.level_lengths)
    for level, (our_logits, our_offsets, their_logits, their_offsets, mask) in enumerate(
            zip(ours.cls_logits.split(split, 1), ours.offsets.split(split, 1), logits, offsets, masks)):
        keep = mask if valid_only else torch.ones_like(mask)
        rows.append([level, split[level], f"{(our_logits - their_logits)[keep].abs().max().item():.2e}",
                     f"{(our_offsets - their_offsets)[keep].abs().max().item():.2e}",
                     f"{their_logits[keep].abs().max().item():.1f}"])
    return rows


def compare_detections(ours: Detections, theirs: tuple) -> list:
    """Count; whether the labels agree rank by rank; then, each list ordered by label and score, whether the labels
    agree and the largest segment and score differences. End to end, scores differ by ~1e-6, which
    may swap the ranks of two nearly tied detections without changing the set."""
    segments, scores, labels = theirs
    if len(scores) != len(ours.scores):
        return [f"{len(ours.scores)} / {len(scores)}", "-", "-", "-", "-"]
    ranks_agree = torch.equal(ours.labels, labels)
    mine, other = torch.argsort(ours.labels * 10 - ours.scores), torch.argsort(labels * 10 - scores)
    same_labels = torch.equal(ours.labels[mine], labels[other])
    return [f"{len(ours.scores)} / {len(scores)}", ranks_agree, same_labels,
            f"{(ours.segments[mine] - segments[other]).abs().max().item():.1e}",
            f"{(ours.scores[mine] - scores[other]).abs().max().item():.1e}"]


def nms_cases(release, detector: ActionFormer, count: int, seed: int) -> list[list]:
    """Random candidate sets, scores quantised to force ties, under every NMS setting."""
    generator = torch.Generator().manual_seed(seed)
    settings = [dict(nms_method="soft", multiclass_nms=True), dict(nms_method="soft", multiclass_nms=False),
                dict(nms_method="hard", multiclass_nms=True), dict(nms_method="hard", multiclass_nms=False)]
    rows = []
    for setting in settings:
        identical, worst, differing = 0, 0.0, 0
        for case in range(count // len(settings)):
            n = int(torch.randint(1, 600, (1,), generator=generator))
            start = torch.randint(0, 60, (n,), generator=generator).float() * (0.5 if case % 2 else 1.37)
            segments = torch.stack([start, start + torch.randint(1, 25, (n,), generator=generator).float() * 0.5], 1)
            scores = torch.rand(n, generator=generator)
            scores = (scores * 20).ceil() / 20 if case % 3 == 0 else scores * (0.05 if case % 3 == 1 else 1.0)
            labels = torch.randint(0, 1 + case % 6, (n,), generator=generator)
            config = detector.config.test.model_copy(update=dict(
                setting, max_seg_num=(200, 30, 5)[case % 3], min_score=(0.001, 0.01, 0.0)[case % 3],
                nms_sigma=(0.5, 0.75)[case % 2], voting_thresh=(0.7, 0.0)[case % 4 == 0]))
            theirs = release.batched_nms(segments.clone(), scores.clone(), labels.clone(), config.iou_threshold,
                                         config.min_score, config.max_seg_num, use_soft_nms=config.nms_method == "soft",
                                         multiclass=config.multiclass_nms, sigma=config.nms_sigma,
                                         voting_thresh=config.voting_thresh)
            ours = batched_nms(Detections(segments, scores, labels), config)
            same = (len(theirs[1]) == len(ours.scores) and torch.equal(ours.labels, theirs[2])
                    and torch.equal(ours.segments, theirs[0]))
            identical += same
            if same and len(ours.scores):
                worst = max(worst, (ours.scores - theirs[1]).abs().max().item())
                differing += not torch.equal(ours.scores, theirs[1])
        rows.append([f"{setting['nms_method']}, {'per class' if setting['multiclass_nms'] else 'all classes + voting'}",
                     f"{identical} / {count // len(settings)}", f"{worst:.1e}", differing])
    return rows


def median_times(functions: dict, repeats: int) -> dict[str, float]:
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="an actionformer_release checkout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nms-cases", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    release = load_release(args.reference)
    config = release_config(release, "thumos_i3d")
    torch.manual_seed(args.seed)
    reference = build_release_model(release, config).eval()
    detector = ActionFormer(config["model"]["input_dim"], detector_config(config)).eval()

    theirs_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    ours_shapes = {k: tuple(v.shape) for k, v in detector.state_dict().items()}
    print(f"state dicts: release {len(theirs_shapes)} tensors, ours {len(ours_shapes)}; "
          f"names equal: {set(theirs_shapes) == set(ours_shapes)}; shapes equal: {theirs_shapes == ours_shapes}")
    weights = trained_like(reference, args.seed)
    reference.load_state_dict(weights)
    detector.load_state_dict(weights)  # strict: every key used, none missing

    mask = torch.arange(LENGTHS[0])[None, :] < torch.tensor(LENGTHS)[:, None]
    generator = torch.Generator().manual_seed(args.seed)
    features = torch.randn(len(LENGTHS), config["model"]["input_dim"], LENGTHS[0], generator=generator) * mask[:, None]
    theirs = release_outputs(reference, features, mask)
    with torch.no_grad():
        ours = detector(features, mask)
    header = ["level", "positions", "max |logit diff|", "max |offset diff|", "max |logit|"]
    print("\nRaw outputs, all positions (padded ones included):\n")
    print(markdown_table(header, level_differences(ours, theirs, valid_only=False)))

    segments = [torch.tensor(s) for s in SEGMENTS]
    labels = [torch.tensor(l) for l in LABELS]
    points, masks, logits, offsets = theirs
    their_cls, their_reg = reference.label_points(points, segments, labels)
    our_cls, our_reg = detector.targets(ours, segments, labels)
    reference.train()
    their_losses = reference.losses(masks, logits, offsets, their_cls, their_reg)
    detector.train()
    our_losses = detector.loss(DetectorOutput(torch.cat(logits, 1), torch.cat(offsets, 1), torch.cat(masks, 1), ours.points),
                               segments, labels)
    reference.eval()
    detector.eval()
    print(f"\nTargets: class targets equal {torch.equal(our_cls, torch.stack(their_cls))} "
          f"({int(torch.stack(their_cls).sum())} positive labels); max |offset target diff| "
          f"{(our_reg - torch.stack(their_reg)).abs().max().item():.1e}. Losses of the release's outputs "
          f"(ours / release): " + ", ".join(f"{k} {our_losses[k].item():.6f} / {their_losses[r].item():.6f}"
                                            for k, r in (("cls", "cls_loss"), ("reg", "reg_loss"), ("total", "final_loss")))
          + f"; normaliser {detector.loss_normalizer} / {reference.loss_normalizer}")

    release_output = DetectorOutput(torch.cat(logits, 1), torch.cat(offsets, 1), torch.cat(masks, 1), ours.points)
    rows = []
    for video in range(len(LENGTHS)):
        expected = release_detections(release, reference, *theirs, video)
        for source, output in (("end to end", ours), ("same outputs", release_output)):
            found = detector.detect(DetectorOutput(output.cls_logits[video:video + 1], output.offsets[video:video + 1],
                                                   output.valid[video:video + 1], output.points))[0]
            rows.append([video, source, *compare_detections(found, expected)])
    print("\nDetections (THUMOS14 test settings: per-level top-2000, Soft-NMS per class, 200 kept):\n")
    print(markdown_table(["video", "our post-processing on", "count (ours / release)", "same ranking",
                          "same labels (by label, score)", "max segment diff", "max score diff"], rows))

    print(f"\nSoft-NMS and NMS alone on {args.nms_cases} random candidate sets with ties:\n")
    print(markdown_table(["setting", "identical picks, order, segments, labels", "max score diff",
                          "cases with a score 1 ulp off"], nms_cases(release, detector, args.nms_cases, args.seed)))

    with torch.no_grad():
        forward = median_times({"release": lambda: release_outputs(reference, features, mask),
                                "ours": lambda: detector(features, mask)}, args.repeats)
        post = median_times({"release": lambda: [release_detections(release, reference, *theirs, v) for v in range(2)],
                             "ours": lambda: detector.detect(release_output)}, args.repeats)
    print(f"\nTimes ({args.threads} threads, median of {args.repeats}, interleaved): forward release "
          f"{forward['release']:.2f} s, ours {forward['ours']:.2f} s (ratio {forward['ours'] / forward['release']:.2f}); "
          f"post-processing of both videos release {post['release']:.2f} s, ours {post['ours']:.2f} s "
          f"(ratio {post['ours'] / post['release']:.2f})")


if __name__ == "__main__":
    main()
