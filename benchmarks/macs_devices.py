"""MACs counted by `count_macs` on the CPU and on the meta device, against the analytic count.

    .venv/bin/python benchmarks/macs_devices.py

For one 16-frame chunk of VideoMAE-S at 160 px (800 tokens) and of the tiny preset, and for a
whole TAD model (the tiny VideoMAE, 2 blocks, with the ActionFormer detector) over 64 grid
positions: the analytic count (patch embedding plus `videomae_macs_per_block` per block, backbones
only), `count_macs` on the CPU (where `F.scaled_dot_product_attention` may take a fused CPU
kernel), on the CPU with SDPA held to its math path (explicit matrix products), and on the meta
device (no data; SDPA takes the math path there).
"""
from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import markdown_table
from tadmodels.models import ModelConfig, TADModel
from tadmodels.models.videomae import VideoMAEBackbone, VideoMAEConfig, videomae_macs_per_block
from tadmodels.profile import count_macs, dummy_input


def analytic_chunk_macs(config: VideoMAEConfig) -> int:
    patch_embedding = config.num_tokens * config.dim * 3 * config.tubelet_size * config.patch_size ** 2
    return int(patch_embedding + config.depth * videomae_macs_per_block(config))


def counts(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[int]:
    """`count_macs` of `module(*inputs)` on the CPU, on the CPU's math path, on the meta device."""
    module = module.eval()
    cpu = count_macs(lambda: module(*inputs))
    with sdpa_kernel(SDPBackend.MATH):
        math = count_macs(lambda: module(*inputs))
    meta_module, meta_inputs = module.to("meta"), [x.to("meta") for x in inputs]
    return [cpu, math, count_macs(lambda: meta_module(*meta_inputs))]


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for preset in ("S", "tiny"):
        config = VideoMAEConfig(preset=preset)
        chunk = torch.randn(1, 3, config.num_frames, config.img_size, config.img_size)
        rows.append([f"VideoMAE-{preset}, one chunk", analytic_chunk_macs(config),
                     *counts(VideoMAEBackbone(config), (chunk,))])
    model = TADModel(ModelConfig(backbone={"type": "videomae", "preset": "tiny", "depth": 2},
                                 detector={"num_classes": 3, "dim": 32, "window": 9}))
    rows.append(["tiny VideoMAE (2 blocks) + detector, 64 positions", "-", *counts(model, dummy_input(model, 64))])
    print(markdown_table(["model", "analytic MACs", "CPU", "CPU, SDPA math path", "meta"], rows))


if __name__ == "__main__":
    main()
