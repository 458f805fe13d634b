"""VideoMAE-S with 0..4 blocks dropped: MACs and measured latency of the backbone, in one run.

MACs are counted at the paper's shapes (16-frame chunks at 160 px, the 16 chunks of a 256-frame
window) on the meta device, so no memory or time is spent. Latency is measured on CUDA when present
at those shapes; on CPU at a smaller batch of chunks (same per-chunk shape), which is said in the
output. The variants are timed in interleaved rounds (`measure_latencies`), so drift on a shared
machine reaches all of them alike: latency ratios against the full model are the figures to compare.

    python benchmarks/depth_curve.py [--chunks 16] [--cpu-chunks 2] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
from functools import partial

import torch

from common import add_timing_arguments, fixed_rounds, markdown_table
from tadmodels.models import VideoMAEBackbone, VideoMAEConfig
from tadmodels.profile import count_macs, measure_latencies, resolve_device

# Blocks dropped in the order greedy PBD tends to remove them from the back half first; for
# latency and MACs only the count matters, since every block has the same shape.
DROP_ORDER = ["blocks.11", "blocks.9", "blocks.7", "blocks.5"]


def backbone_with(dropped: int, device: torch.device | str) -> VideoMAEBackbone:
    with torch.device(device):
        backbone = VideoMAEBackbone(VideoMAEConfig(preset="S"))
    for name in DROP_ORDER[:dropped]:
        del backbone.blocks[name.split(".")[1]]
    return backbone.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=16, help="chunks per window at the paper's shape")
    parser.add_argument("--cpu-chunks", type=int, default=2, help="chunks timed when no GPU is present")
    add_timing_arguments(parser, repeats=10, warmup=3, threads=2)
    args = parser.parse_args()
    device = resolve_device("auto")
    chunks = args.chunks if device.type == "cuda" else args.cpu_chunks
    shape = (3, 16, 160, 160)
    x = torch.randn(chunks, *shape, device=device)
    macs, runs = {}, {}
    for dropped in range(5):
        meta = backbone_with(dropped, "meta")
        macs[dropped] = count_macs(lambda: meta(torch.empty(args.chunks, *shape, device="meta")))
        runs[dropped] = partial(backbone_with(dropped, device), x)
    records = measure_latencies(runs, device, list(x.shape), fixed_rounds(args), threads=args.threads)
    rows = [{"dropped": d, "gmacs": macs[d] / 1e9, "latency_ms": records[d].median_ms, "iqr_ms": records[d].iqr_ms}
            for d in runs]
    full = rows[0]
    print(f"device: {records[0].device}; MACs at {args.chunks} x {list(shape)}; "
          f"latency at {chunks} x {list(shape)}")
    print(markdown_table(["blocks dropped", "GMACs", "MACs vs full", "latency ms (IQR)", "speed-up"],
                         [[row["dropped"], f"{row['gmacs']:.1f}", f"{row['gmacs'] / full['gmacs']:.3f}",
                           f"{row['latency_ms']:.1f} ({row['iqr_ms']:.1f})",
                           f"{full['latency_ms'] / row['latency_ms']:.2f}x"] for row in rows]))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
