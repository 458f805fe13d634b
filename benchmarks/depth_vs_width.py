"""VideoMAE-S backbone: 3 blocks dropped against channel pruning to the same MACs, in one run.

Three variants of one TADModel with a VideoMAE-S backbone (12 blocks x 384 dim x 6 heads, 16-frame
chunks at 160 px): the full model, 3 blocks dropped (`without_blocks`), and channel pruning through
`pruning.channels.prune_channels` (MLP hidden width and whole heads, one ratio for every block) at
the ratio whose MACs come closest to the 3-block drop's, found by bisection over the ratio.
MACs are the backbone's, counted by torch's flop counter on the meta device at the paper's window
(16 chunks); latency is the backbone's, measured at `--chunks` chunks (CUDA when present; on CPU
keep it small) with the variants interleaved round by round, so drift on a shared machine reaches
all of them alike.

    python benchmarks/depth_vs_width.py [--chunks 2] [--repeats 15] [--warmup 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import json
from functools import partial

import torch

from common import add_timing_arguments, fixed_rounds, markdown_table
from pruning.channels import prune_channels
from tadmodels.models import DetectorConfig, ModelConfig, TADModel, VideoMAEConfig
from tadmodels.profile import count_macs, measure_latencies, resolve_device

CHUNK_SHAPE = (3, 16, 160, 160)
MAC_CHUNKS = 16  # the paper's 256-frame window, as in depth_curve.py
# The same blocks depth_curve.py drops; for MACs and latency only the count matters.
DROPPED = ["backbone.blocks.11", "backbone.blocks.9", "backbone.blocks.7"]


def backbone_macs(model: TADModel) -> int:
    """MACs of the model's backbone on `MAC_CHUNKS` chunks, counted on the meta device."""
    backbone = copy.deepcopy(model.backbone).to("meta")
    return count_macs(lambda: backbone(torch.empty(MAC_CHUNKS, *CHUNK_SHAPE, device="meta")))


def matching_ratio(model: TADModel, target: int, steps: int) -> tuple[float, TADModel, int]:
    """The channel ratio (bisected over [0, 1)) whose pruned model's MACs lie closest to `target`."""
    low, high = 0.0, 0.99
    best: tuple[float, TADModel, int] | None = None
    for _ in range(steps):
        ratio = (low + high) / 2
        pruned = prune_channels(model, {"*": ratio})
        macs = backbone_macs(pruned)
        if best is None or abs(macs - target) < abs(best[2] - target):
            best = (ratio, pruned, macs)
        low, high = (ratio, high) if macs > target else (low, ratio)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2, help="chunks per timed forward")
    add_timing_arguments(parser, repeats=15, warmup=3, threads=1)
    parser.add_argument("--bisect-steps", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = ModelConfig(backbone=VideoMAEConfig(preset="S"), detector=DetectorConfig(num_classes=20))
    full = TADModel(config).eval()
    dropped = full.without_blocks(DROPPED)
    target = backbone_macs(dropped)
    ratio, pruned, _ = matching_ratio(full, target, args.bisect_steps)
    variants = {"full": full, "3 blocks dropped": dropped, f"channels pruned (ratio {ratio:.4f})": pruned}

    device = resolve_device("auto")
    x = torch.randn(args.chunks, *CHUNK_SHAPE, device=device)
    runs = {name: partial(model.to(device).backbone, x) for name, model in variants.items()}
    records = measure_latencies(runs, device, list(x.shape), fixed_rounds(args), threads=args.threads)
    rows = []
    for name, model in variants.items():
        widths = model.architecture.backbone
        rows.append({"variant": name, "blocks": len(model.backbone.blocks),
                     "mlp_hidden": sorted(set(widths.mlp_hidden.values())) or [int(widths.dim * widths.mlp_ratio)],
                     "heads": sorted(set(widths.heads.values())) or [widths.num_heads],
                     "gmacs": backbone_macs(model) / 1e9, "latency_ms": records[name].median_ms,
                     "iqr_ms": records[name].iqr_ms})
    base = rows[0]
    print(f"device: {records['full'].device}; backbone MACs at {MAC_CHUNKS} x {list(CHUNK_SHAPE)}; latency at "
          f"{list(x.shape)}, median of {args.repeats} interleaved rounds after {args.warmup} warm-up runs each")
    print(markdown_table(["variant", "blocks", "MLP hidden", "heads", "GMACs", "MACs vs full", "latency ms (IQR)",
                          "speed-up"],
                         [[row["variant"], row["blocks"], row["mlp_hidden"], row["heads"], f"{row['gmacs']:.1f}",
                           f"{row['gmacs'] / base['gmacs']:.3f}", f"{row['latency_ms']:.1f} ({row['iqr_ms']:.1f})",
                           f"{base['latency_ms'] / row['latency_ms']:.2f}x"] for row in rows]))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
