import pytest
import torch
import torch.nn.functional as F

from tadmodels.models import ModelConfig
from tadmodels.models.videomae import (
    VideoMAEBackbone,
    VideoMAEConfig,
    fixed_position_table,
    sinusoid_position_table,
)


def tiny() -> VideoMAEBackbone:
    torch.manual_seed(0)
    return VideoMAEBackbone(VideoMAEConfig(preset="tiny"))


def test_presets_match_the_paper_shapes():
    small = VideoMAEConfig(preset="S")
    assert (small.depth, small.dim, small.num_heads) == (12, 384, 6)
    assert (VideoMAEConfig(preset="B").dim, VideoMAEConfig(preset="L").depth) == (768, 24)
    assert small.num_tokens == 8 * 10 * 10  # 16 frames at 160 px: 8 tubelets x 10 x 10 patches


def test_output_is_one_feature_per_tubelet_step():
    backbone = tiny()
    out = backbone(torch.randn(3, 3, 16, 32, 32))
    assert out.shape == (3, 8, 64)


def test_parameter_names_follow_videomae_checkpoints():
    names = set(tiny().state_dict())
    for name in ("patch_embed.proj.weight", "blocks.0.norm1.weight", "blocks.0.attn.qkv.weight",
                 "blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "blocks.0.attn.proj.weight",
                 "blocks.0.norm2.bias", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.bias", "norm.weight"):
        assert name in names
    assert "blocks.0.attn.qkv.bias" not in names  # k carries no bias


def test_dropping_a_block_equals_skipping_it():
    backbone = tiny().eval()
    x = torch.randn(2, 3, 16, 32, 32)
    tokens = backbone.patch_embed(x) + backbone.pos_embed
    for key, block in backbone.blocks.items():
        if key != "5":
            tokens = block(tokens)
    expected = backbone.norm(tokens).view(2, 8, 16, 64).mean(2)
    del backbone.blocks["5"]
    torch.testing.assert_close(backbone(x), expected)
    assert backbone.droppable_blocks() == [f"blocks.{i}" for i in (0, 1, 2, 3, 4, 6, 7)]


def test_sinusoid_table_is_the_standard_one():
    table = sinusoid_position_table(4, 6)
    assert table[0, 0::2].abs().max() == 0 and torch.all(table[0, 1::2] == 1)
    assert table[3, 2].item() == pytest.approx(torch.sin(torch.tensor(3 / 10000 ** (2 / 6))).item(), abs=1e-6)
    # MCG-NJU's (and Hugging Face's) numpy formula at VideoMAE-S's 224-px size, in float64 throughout
    import numpy as np
    positions, channels = np.arange(1568)[:, None], np.arange(384)[None, :]
    angles = positions / np.power(10000, 2 * (channels // 2) / 384)
    reference = np.where(channels % 2 == 0, np.sin(angles), np.cos(angles)).astype(np.float32)
    assert np.abs(sinusoid_position_table(1568, 384).numpy() - reference).max() < 1e-6


def test_width_overrides_rebuild_a_pruned_block():
    config = VideoMAEConfig(preset="tiny", mlp_hidden={"1": 100}, heads={"2": 2})
    backbone = VideoMAEBackbone(config)
    assert backbone.blocks["1"].mlp.fc1.out_features == 100
    assert backbone.blocks["2"].attn.qkv.out_features == 3 * 2 * 16
    assert backbone(torch.randn(1, 3, 16, 32, 32)).shape == (1, 8, 64)
    with pytest.raises(ValueError, match="block index below 8"):
        VideoMAEConfig(preset="tiny", mlp_hidden={"8": 10})


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown 'XL'"):
        VideoMAEConfig(preset="XL")


def blocks_then(backbone: VideoMAEBackbone, x: torch.Tensor) -> torch.Tensor:
    tokens = backbone.embed(x)
    for block in backbone.blocks.values():
        tokens = block(tokens)
    return tokens


def test_fc_norm_is_applied_to_each_steps_spatial_mean():
    torch.manual_seed(0)
    backbone = VideoMAEBackbone(VideoMAEConfig(preset="tiny", final_norm="fc_norm", fc_norm_eps=1e-5)).eval()
    torch.nn.init.normal_(backbone.fc_norm.weight)
    torch.nn.init.normal_(backbone.fc_norm.bias)
    assert backbone.norm is None and backbone.fc_norm.eps == 1e-5
    x = torch.randn(2, 3, 16, 32, 32)
    means = blocks_then(backbone, x).view(2, 8, 16, 64).mean(2)
    expected = F.layer_norm(means, (64,), backbone.fc_norm.weight, backbone.fc_norm.bias, eps=1e-5)
    torch.testing.assert_close(backbone(x), expected)
    assert {k for k in backbone.state_dict() if "norm" in k and "blocks" not in k} == {"fc_norm.weight", "fc_norm.bias"}


def test_without_a_final_norm_the_feature_is_the_plain_mean():
    backbone = VideoMAEBackbone(VideoMAEConfig(preset="tiny", final_norm="none")).eval()
    x = torch.randn(1, 3, 16, 32, 32)
    torch.testing.assert_close(backbone(x), blocks_then(backbone, x).view(1, 8, 16, 64).mean(2))
    assert not any(k.startswith(("norm.", "fc_norm.")) for k in backbone.state_dict())


def test_layer_scale_scales_each_residual_branch():
    torch.manual_seed(0)
    plain = VideoMAEBackbone(VideoMAEConfig(preset="tiny", depth=1)).eval()
    scaled = VideoMAEBackbone(VideoMAEConfig(preset="tiny", depth=1, layer_scale=True)).eval()
    scaled.load_state_dict({**plain.state_dict(), "blocks.0.gamma_1": torch.ones(64), "blocks.0.gamma_2": torch.ones(64)})
    x = torch.randn(1, 3, 16, 32, 32)
    torch.testing.assert_close(scaled(x), plain(x))  # fresh gammas (ones) change nothing
    block, tokens = scaled.blocks["0"], torch.randn(1, 128, 64)
    block.gamma_1.data.fill_(0.5)
    block.gamma_2.data.fill_(0.0)
    torch.testing.assert_close(block(tokens), tokens + 0.5 * block.attn(block.norm1(tokens)))


def test_learned_positions_are_a_parameter_and_fixed_ones_are_not_stored():
    learned = VideoMAEBackbone(VideoMAEConfig(preset="tiny", pos_embed="learned"))
    assert learned.state_dict()["pos_embed"].shape == (128, 64) and learned.pos_embed.requires_grad
    assert "pos_embed" not in tiny().state_dict()


def test_fixed_table_for_another_size_is_resized_bicubically_per_step():
    config = VideoMAEConfig(preset="tiny", img_size=16, pos_table_img_size=32)  # 4x4 table shown to a 2x2 grid
    source = sinusoid_position_table(8 * 4 * 4, 64).view(8, 4, 4, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(source, size=(2, 2), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(32, 64)
    torch.testing.assert_close(fixed_position_table(config), expected)
    assert (fixed_position_table(config) - sinusoid_position_table(32, 64)).abs().max() > 0.5  # not the fresh small table
    torch.testing.assert_close(VideoMAEBackbone(config).pos_embed, expected)


def test_variant_fields_are_checked_and_left_out_of_the_dump_at_their_defaults():
    with pytest.raises(ValueError, match="learned table is stored at img_size"):
        VideoMAEConfig(preset="tiny", pos_embed="learned", pos_table_img_size=64)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        VideoMAEConfig(preset="tiny", pos_table_img_size=30)
    assert "final_norm" not in VideoMAEConfig(preset="tiny").model_dump()  # fingerprints of older models stay
    variant = VideoMAEConfig(preset="tiny", final_norm="fc_norm", layer_scale=True, norm_eps=1e-12)
    dumped = variant.model_dump(mode="json")
    assert (dumped["final_norm"], dumped["layer_scale"], dumped["norm_eps"]) == ("fc_norm", True, 1e-12)
    assert VideoMAEConfig.model_validate(dumped) == variant
    model = ModelConfig(backbone=dumped, detector={"num_classes": 2})
    assert ModelConfig.model_validate(model.model_dump(mode="json")) == model
