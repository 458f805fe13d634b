"""MACs counted the same on every device, and equal to the analytic counts."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from tadmodels.models import ModelConfig, TADModel
from tadmodels.models.videomae import VideoMAEBackbone, VideoMAEConfig, videomae_macs_per_block
from tadmodels.profile import block_macs, count_macs, model_macs
from tadmodels.profile.macs import UncountedAttentionError


def attention_macs(query, key, value) -> int:
    """Both products of softmax(q k^T) v, in full: [..., Lq, d] x [..., d, Lk] and [..., Lq, Lk] x [..., Lk, dv]."""
    *lead, queries, depth = query.shape
    return torch.Size(lead).numel() * queries * key.shape[-2] * (depth + value.shape[-1])


def on(device, *tensors):
    return [t.to(device) for t in tensors]


ATTENTION_CASES = {  # on CPU all but the last take the fused CPU kernel, the last the math path
    "plain": dict(),
    "boolean mask": dict(attn_mask=torch.rand(50, 40) > 0.3),
    "additive mask": dict(attn_mask=torch.randn(2, 3, 50, 40)),
    "causal": dict(is_causal=True),
    "wider values": dict(),
}


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_scaled_dot_product_attention_counts_both_products(device, case):
    value_width = 24 if case == "wider values" else 16
    query, key, value = on(device, torch.randn(2, 3, 50, 16), torch.randn(2, 3, 40, 16),
                           torch.randn(2, 3, 40, value_width))
    options = {name: value.to(device) if torch.is_tensor(value) else value for name, value in ATTENTION_CASES[case].items()}
    expected = attention_macs(query, key, value)
    assert count_macs(lambda: F.scaled_dot_product_attention(query, key, value, **options)) == expected
    with sdpa_kernel(SDPBackend.MATH):  # the explicit products, counted through bmm
        assert count_macs(lambda: F.scaled_dot_product_attention(query, key, value, **options)) == expected


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_attention_shapes_beyond_four_dimensions_and_grouped_heads(device):
    query, key, value = on(device, torch.randn(5, 30, 8), torch.randn(5, 20, 8), torch.randn(5, 20, 8))
    assert count_macs(lambda: F.scaled_dot_product_attention(query, key, value)) == 5 * 30 * 20 * 16
    # Grouped-query attention: 6 query heads share 2 key/value heads; every query head does its products.
    query, key, value = on(device, torch.randn(1, 6, 30, 8), torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 8))
    assert count_macs(lambda: F.scaled_dot_product_attention(query, key, value, enable_gqa=True)) == 6 * 30 * 20 * 16


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_plain_matrix_products(device):
    a, b, c = on(device, torch.randn(2, 3, 50, 16), torch.randn(2, 3, 16, 40), torch.randn(7, 16))
    assert count_macs(lambda: a @ b) == 2 * 3 * 50 * 16 * 40
    assert count_macs(lambda: torch.bmm(a.flatten(0, 1), b.flatten(0, 1))) == 6 * 50 * 16 * 40
    assert count_macs(lambda: torch.einsum("bhqd,bhdk->bhqk", a, b)) == 2 * 3 * 50 * 16 * 40
    assert count_macs(lambda: F.linear(a, c)) == 2 * 3 * 50 * 16 * 7


def test_an_attention_kernel_without_a_formula_is_refused():
    # nn.MultiheadAttention's inference fast path is one fused kernel with the projections inside.
    attention = torch.nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(1, 10, 16)
    with pytest.raises(UncountedAttentionError, match="_native_multi_head_attention"):
        count_macs(lambda: attention(x, x, x, need_weights=False))


def analytic_videomae_macs(config: VideoMAEConfig) -> int:
    """Patch embedding (one Conv3d over tubelets) plus every block, for one chunk."""
    patch_embedding = config.num_tokens * config.dim * 3 * config.tubelet_size * config.patch_size ** 2
    return int(patch_embedding + config.depth * videomae_macs_per_block(config))


@pytest.mark.parametrize("preset", ["S", "tiny"])
def test_videomae_chunk_macs_are_the_analytic_count_on_cpu_and_meta(preset):
    config = VideoMAEConfig(preset=preset)
    expected = analytic_videomae_macs(config)
    if preset == "S":
        assert expected == 23_357_030_400  # 16 frames at 160 px: 800 tokens
    chunk = torch.randn(1, 3, config.num_frames, config.img_size, config.img_size)
    torch.manual_seed(0)
    backbone = VideoMAEBackbone(config).eval()
    assert count_macs(lambda: backbone(chunk)) == expected
    backbone = backbone.to("meta")
    assert count_macs(lambda: backbone(chunk.to("meta"))) == expected


def small_model(backbone: dict | None) -> TADModel:
    """A random detector on features (no backbone) or on frames through `backbone`."""
    torch.manual_seed(0)
    config = ModelConfig(input_dim=None if backbone else 24, backbone=backbone,
                         detector={"num_classes": 3, "dim": 32, "window": 9})
    return TADModel(config).eval()


@pytest.mark.parametrize("backbone", [None, {"type": "videomae", "preset": "tiny", "depth": 2}])
def test_model_macs_with_the_detector_are_the_same_on_cpu_meta_and_the_math_path(backbone):
    model = small_model(backbone)
    on_cpu = model_macs(model, 64)
    with sdpa_kernel(SDPBackend.MATH):
        assert model_macs(model, 64) == on_cpu
    assert model_macs(model.to("meta"), 64) == on_cpu


@pytest.mark.parametrize("backbone", [None, {"type": "videomae", "preset": "tiny", "depth": 3},
                                      {"type": "blvnet", "preset": "tiny"}])
def test_each_blocks_macs_are_what_dropping_it_saves(backbone):
    model = small_model(backbone)
    counts = block_macs(model, 64)
    assert list(counts) == model.droppable_blocks()
    whole = model_macs(model, 64)
    for name, macs in counts.items():
        assert macs > 0 and macs == whole - model_macs(model.without_blocks([name]), 64), name
