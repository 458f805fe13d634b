"""Alignment steps per second at VideoMAE-S shapes: fp32 against bf16 (and fp16) autocast, on CUDA.

One alignment step as `pruning.alignment.align` runs it: the teacher's forward, the student's
forward with its adapters, the alignment loss, backward, clipping and the AdamW step, through the
shared loop's `PrecisionStep` (autocast; a GradScaler under fp16). The model is a TADModel with a
VideoMAE-S backbone (12 blocks, dim 384, 6 heads, 16-frame chunks at 160 px) and the THUMOS14
detector (dim 512, 20 classes); the student has one block dropped; a batch holds `--batch-size`
windows of `--positions` grid positions (384: the paper's 768 frames). `--preset` picks what
trains (`pbd`: adapters, norms, patch embedding and the whole detector; `cheap`: the detector
frozen). Round by round every precision runs one step, so drift reaches all alike; the figure
to read is the steps/s ratio to fp32. Peak memory is per step.

Needs CUDA: on any other device autocast is not used and every precision runs in fp32.

    python benchmarks/alignment_precision.py [--precisions fp32,bf16] [--preset pbd] [--batch-size 2]
        [--positions 384] [--repeats 20] [--warmup 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from common import markdown_table
from pruning.alignment import AlignmentConfig, add_adapters, alignment_loss, set_trainable
from tadmodels.models import DetectorConfig, ModelConfig, TADModel, VideoMAEConfig
from tadmodels.profile import dummy_input
from tadmodels.training.loop import PrecisionStep, make_optimizer

DROPPED = "backbone.blocks.11"


def synthetic_batch(model: TADModel, batch_size: int, positions: int, device: torch.device) -> SimpleNamespace:
    """What `alignment_loss` reads from a batch: random frames, a full mask, and one action per
    window covering a third of it, so the detector's targets have positives."""
    frames, mask = dummy_input(model, positions, device=device)
    length = mask.shape[1]
    segment = torch.tensor([[length / 3, 2 * length / 3]], device=device)
    return SimpleNamespace(inputs=frames.expand(batch_size, *frames.shape[1:]).contiguous(),
                           mask=mask.expand(batch_size, -1).contiguous(),
                           segments=[segment] * batch_size, labels=[torch.tensor([0], device=device)] * batch_size)


def measure(model_config: ModelConfig, alignment: AlignmentConfig, precisions: list[str], batch_size: int,
            positions: int, repeats: int, warmup: int, device: torch.device) -> dict[str, dict]:
    """Step time (median and IQR, ms), steps/s and peak memory per precision, interleaved round by round."""
    torch.manual_seed(0)
    teacher = TADModel(model_config).to(device).eval()
    lora = add_adapters(teacher.without_blocks([DROPPED]), alignment)
    student = lora.model
    set_trainable(student, alignment)
    student.train()
    blocks = student.droppable_blocks()
    batch = synthetic_batch(teacher, batch_size, positions, device)
    params = [p for p in student.parameters() if p.requires_grad]

    def step_at(precision: str):
        settings = alignment.model_copy(update={"precision": precision})
        step = PrecisionStep(make_optimizer(student, settings.lr, settings.weight_decay), params, settings, device)

        def run() -> None:
            with step.autocast():
                loss = alignment_loss(student, teacher, blocks, batch, settings)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{precision}: alignment loss is {loss.item()}")
            step(loss)
        return run

    runs = {precision: step_at(precision) for precision in precisions}
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {p: [] for p in runs}
    peaks: dict[str, int] = {p: 0 for p in runs}
    for _ in range(repeats):
        for precision, run in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peaks[precision] = max(peaks[precision], torch.cuda.max_memory_allocated(device))
            times[precision].append((time.perf_counter() - start) * 1e3)
    results = {}
    for precision, samples in times.items():
        q1, q3 = np.percentile(samples, [25, 75])
        median = statistics.median(samples)
        results[precision] = {"median_ms": median, "iqr_ms": float(q3 - q1), "steps_per_s": 1e3 / median,
                              "peak_gib": peaks[precision] / 2 ** 30}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated, fp32 first: the ratios' reference")
    parser.add_argument("--preset", default="pbd", choices=["pbd", "cheap"], help="alignment preset: what trains")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--positions", type=int, default=384, help="grid positions per window (2 frames each)")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each precision first")
    args = parser.parse_args()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if precisions[:1] != ["fp32"] or not set(precisions) <= {"fp32", "bf16", "fp16"}:
        parser.error(f"--precisions: expected fp32 first, then bf16 and/or fp16; got {args.precisions!r}")
    if not torch.cuda.is_available():
        raise SystemExit("alignment_precision.py needs a CUDA device: autocast is used on CUDA only, so on this "
                         f"machine ({torch.__version__}, no CUDA) every precision would run the same fp32 step.")
    device = torch.device("cuda")
    model_config = ModelConfig(backbone=VideoMAEConfig(preset="S"), detector=DetectorConfig(num_classes=20))
    results = measure(model_config, AlignmentConfig(preset=args.preset), precisions, args.batch_size,
                      args.positions, args.repeats, args.warmup, device)
    reference = results["fp32"]["steps_per_s"]
    print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}; preset {args.preset}; batch "
          f"{args.batch_size} x {args.positions} positions ({2 * args.positions} frames at 160 px); "
          f"{DROPPED} dropped; median of {args.repeats} interleaved rounds after {args.warmup} warm-up steps each")
    print(markdown_table(["precision", "ms/step (IQR)", "steps/s", "vs fp32", "peak GiB"], [
        [p, f"{r['median_ms']:.1f} ({r['iqr_ms']:.1f})", f"{r['steps_per_s']:.3f}", f"{r['steps_per_s'] / reference:.2f}x",
         f"{r['peak_gib']:.1f}"] for p, r in results.items()]))
    print(json.dumps({"device": torch.cuda.get_device_name(device), "preset": args.preset, "batch_size": args.batch_size,
                      "positions": args.positions, "results": results}))


if __name__ == "__main__":
    main()
