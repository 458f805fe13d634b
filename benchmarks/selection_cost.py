"""Block-selection evaluator: scoring every candidate with a shared prefix against naive re-runs.

`pruning.selection.candidate_outputs` yields the detector output of the model with each droppable
block removed in turn. `shared=True` runs the tokens through the blocks once and each candidate only
through the blocks after it; `shared=False` deep-copies the model without the block and runs it
whole, once per candidate. Both are measured on one TADModel with a VideoMAE-S-shaped backbone
(12 blocks x 384 dim x 6 heads, 16-frame chunks; `--img-size` px, 160 in the paper, smaller by
default for CPU time) and the THUMOS14 detector (dim 512), on one window of `--positions` grid
positions (the smallest the model accepts by default: 32 positions = 64 frames = 4 chunks).

MACs of the whole evaluation are counted by torch's flop counter on the meta device (machine
independent); wall time is measured with the two interleaved round by round (CUDA when present).
Counting block runs alone, n blocks cost n(n-1) naively (n candidates of n-1 blocks) against
(n-1) prefix steps plus sum_k (n-1-k) suffix blocks = (n-1)(n+2)/2 shared: a ratio of (n+2)/(2n).
The target is a cost ratio of at most 0.6.

    python benchmarks/selection_cost.py [--img-size 112] [--positions 32] [--repeats 5] [--warmup 1] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import json

import torch
from torch import Tensor

from common import add_timing_arguments, fixed_rounds, markdown_table
from pruning.selection import candidate_outputs
from tadmodels.models import DetectorConfig, ModelConfig, TADModel, VideoMAEConfig
from tadmodels.profile import count_macs, dummy_input, measure_latencies, resolve_device

TARGET = 0.6
EVALUATORS = {"naive (re-run per candidate)": False, "shared prefix": True}


def evaluate_all(model: TADModel, inputs: Tensor, mask: Tensor, shared: bool) -> None:
    """Every candidate's detector output, as the block-selection evaluator consumes them."""
    for _ in candidate_outputs(model, inputs, mask, shared=shared):
        pass


def evaluation_macs(model: TADModel, inputs: Tensor, mask: Tensor, shared: bool) -> int:
    """MACs of scoring every candidate, counted on a meta-device copy of model and inputs."""
    meta = copy.deepcopy(model).to("meta")
    meta_inputs, meta_mask = inputs.to("meta"), mask.to("meta")
    return count_macs(lambda: evaluate_all(meta, meta_inputs, meta_mask, shared))


def block_run_ratio(blocks: int) -> float:
    """Shared over naive block runs: (n-1)(n+2)/2 over n(n-1)."""
    return (blocks + 2) / (2 * blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=112, help="frame size in px (multiple of 16)")
    parser.add_argument("--positions", type=int, default=32, help="grid positions of the window")
    add_timing_arguments(parser, repeats=5, warmup=1, threads=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = ModelConfig(backbone=VideoMAEConfig(preset="S", img_size=args.img_size),
                         detector=DetectorConfig(num_classes=20))
    device = resolve_device("auto")
    model = TADModel(config).eval().to(device)
    inputs, mask = dummy_input(model, args.positions, device=device)
    blocks = len(model.droppable_blocks())

    macs = {name: evaluation_macs(model, inputs, mask, shared) for name, shared in EVALUATORS.items()}
    forward_macs = count_macs(lambda: copy.deepcopy(model).to("meta")(inputs.to("meta"), mask.to("meta")))
    runs = {name: (lambda shared=shared: evaluate_all(model, inputs, mask, shared)) for name, shared in EVALUATORS.items()}
    records = measure_latencies(runs, device, list(inputs.shape), fixed_rounds(args), threads=args.threads)
    naive, shared = EVALUATORS
    time_ratio = records[shared].median_ms / records[naive].median_ms
    macs_ratio = macs[shared] / macs[naive]
    print(f"device: {records[shared].device}; {blocks} candidates; input {list(inputs.shape)} uint8 frames "
          f"({inputs.shape[1] // model.backbone.chunk_frames} chunks), mask {list(mask.shape)}; one full forward "
          f"{forward_macs / 1e9:.2f} GMACs; median of {args.repeats} interleaved rounds after {args.warmup} warm-up")
    print(markdown_table(["evaluator", "GMACs", "wall s (IQR)"],
                         [[name, f"{macs[name] / 1e9:.2f}",
                           f"{records[name].median_ms / 1e3:.2f} ({records[name].iqr_ms / 1e3:.2f})"] for name in EVALUATORS]
                         + [["ratio shared / naive", f"{macs_ratio:.3f}", f"{time_ratio:.3f}"]]))
    print(f"block-run ratio (n+2)/(2n) for n={blocks}: {block_run_ratio(blocks):.3f}; target <= {TARGET}: "
          f"MACs {'met' if macs_ratio <= TARGET else 'missed'}, wall time {'met' if time_ratio <= TARGET else 'missed'}")
    print(json.dumps({"blocks": blocks, "input_shape": list(inputs.shape), "threads": args.threads,
                      "forward_gmacs": forward_macs / 1e9, "naive_gmacs": macs[naive] / 1e9,
                      "shared_gmacs": macs[shared] / 1e9, "macs_ratio": macs_ratio,
                      "naive_s": records[naive].median_ms / 1e3, "naive_iqr_s": records[naive].iqr_ms / 1e3,
                      "shared_s": records[shared].median_ms / 1e3, "shared_iqr_s": records[shared].iqr_ms / 1e3,
                      "time_ratio": time_ratio, "block_run_ratio": block_run_ratio(blocks),
                      "target": TARGET, "met": time_ratio <= TARGET and macs_ratio <= TARGET}))


if __name__ == "__main__":
    main()
