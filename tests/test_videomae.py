import pytest
import torch

from tadmodels.models.videomae import (
    VideoMAEBackbone,
    VideoMAEConfig,
    load_videomae_checkpoint,
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


@pytest.mark.parametrize("prefix", ["", "encoder.", "backbone.", "module.backbone."])
def test_checkpoint_with_prefixes_loads_exactly(prefix):
    source = tiny()
    torch.manual_seed(1)
    target = VideoMAEBackbone(VideoMAEConfig(preset="tiny"))
    state = {prefix + k: v for k, v in source.state_dict().items()}
    state[prefix + "head.weight"] = torch.zeros(400, 64)  # classifier of a fine-tuned checkpoint
    state[prefix + "pos_embed"] = torch.zeros(1, 128, 64)
    load_videomae_checkpoint(target, state)
    x = torch.randn(1, 3, 16, 32, 32)
    torch.testing.assert_close(target(x), source(x))


def test_checkpoint_that_does_not_fit_is_refused():
    state = dict(tiny().state_dict())
    del state["blocks.2.mlp.fc1.weight"]
    with pytest.raises(ValueError, match="missing keys.*blocks.2.mlp.fc1.weight"):
        load_videomae_checkpoint(tiny(), state)
    state = dict(tiny().state_dict())
    state["norm.weight"] = torch.ones(65)
    with pytest.raises(ValueError, match="norm.weight: shape"):
        load_videomae_checkpoint(tiny(), state)


def test_full_checkpoint_loads_into_a_model_with_blocks_dropped():
    source = tiny()
    target = tiny()
    del target.blocks["3"]
    load_videomae_checkpoint(target, source.state_dict())
    torch.testing.assert_close(target.blocks["4"].mlp.fc1.weight, source.blocks["4"].mlp.fc1.weight)


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
