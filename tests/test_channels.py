import re

import pytest
import torch

from pruning.channels import prune_channels
from tadmodels.models import DetectorConfig, ModelConfig, TADModel
from tadmodels.profile import count_macs, count_params, dummy_input

DETECTOR = {"num_classes": 3, "dim": 32, "window": 9}


def videomae_model() -> TADModel:
    """tiny: dim 64, 4 heads of 16, MLP 256."""
    torch.manual_seed(0)
    return TADModel(ModelConfig(backbone={"type": "videomae", "preset": "tiny", "depth": 4}, detector=DETECTOR)).eval()


def features_model() -> TADModel:
    torch.manual_seed(0)
    return TADModel(ModelConfig(input_dim=24, detector=DETECTOR)).eval()


def blvnet_model() -> TADModel:
    torch.manual_seed(0)
    model = TADModel(ModelConfig(backbone={"type": "blvnet", "preset": "tiny"}, detector=DETECTOR))
    # Fresh BatchNorms are all alike (and a bottleneck's last one is zero): make them matter.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.running_mean.uniform_(-0.5, 0.5)
    return model.eval()


def shapes(model: TADModel, prefix: str) -> dict[str, tuple[int, ...]]:
    return {key.removeprefix(prefix): tuple(value.shape) for key, value in model.state_dict().items() if key.startswith(prefix)}


def test_videomae_block_loses_half_its_heads_and_mlp_channels():
    model = videomae_model()
    pruned = prune_channels(model, {"backbone.blocks.1": 0.5})
    block = shapes(pruned, "backbone.blocks.1.")
    assert block["attn.qkv.weight"] == (96, 64)
    assert block["attn.q_bias"] == block["attn.v_bias"] == (32,)
    assert block["attn.proj.weight"] == (64, 32)
    assert block["mlp.fc1.weight"] == (128, 64) and block["mlp.fc2.weight"] == (64, 128)
    assert pruned.backbone.blocks["1"].attn.num_heads == 2
    for other in ("0", "2", "3"):  # the block's input and output width stay, and so do other blocks
        assert shapes(pruned, f"backbone.blocks.{other}.") == shapes(model, f"backbone.blocks.{other}.")
    assert pruned.architecture.backbone.heads == {"1": 2}
    assert pruned.architecture.backbone.mlp_hidden == {"1": 128}
    assert pruned.backbone.config == pruned.architecture.backbone


def test_wildcard_covers_the_blocks_not_named():
    pruned = prune_channels(videomae_model(), {"*": 0.25, "backbone.blocks.0": 0.0, "backbone.blocks.2": 0.5})
    heads = {key: block.attn.num_heads for key, block in pruned.backbone.blocks.items()}
    hidden = {key: block.mlp.fc1.out_features for key, block in pruned.backbone.blocks.items()}
    assert heads == {"0": 4, "1": 3, "2": 2, "3": 3}  # a quarter of 4 heads is one head
    assert hidden == {"0": 256, "1": 192, "2": 128, "3": 192}
    assert pruned.architecture.backbone.heads == {"1": 3, "2": 2, "3": 3}


def test_macs_and_parameters_fall_and_outputs_keep_their_shapes():
    model = videomae_model()
    pruned = prune_channels(model, {"*": 0.5})
    inputs, mask = dummy_input(model, 32)
    assert count_macs(lambda: pruned(inputs, mask)) < 0.8 * count_macs(lambda: model(inputs, mask))
    assert count_params(pruned) < count_params(model)
    with torch.no_grad():
        before, after = model(inputs, mask), pruned(inputs, mask)
    assert after.cls_logits.shape == before.cls_logits.shape and after.offsets.shape == before.offsets.shape


@pytest.mark.parametrize("build, ratios", [
    (videomae_model, {"*": 0.5, "backbone.blocks.3": 0.3}),
    (features_model, {"*": 0.5}),
    (blvnet_model, {"*": 0.5}),
])
def test_pruned_model_rebuilds_from_its_architecture(build, ratios):
    pruned = prune_channels(build(), ratios)
    rebuilt = TADModel(pruned.architecture).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    assert rebuilt.fingerprint() == pruned.fingerprint()
    inputs, mask = dummy_input(pruned, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(inputs, mask).cls_logits, pruned(inputs, mask).cls_logits, rtol=0, atol=0)


def test_pruning_again_shrinks_further():
    twice = prune_channels(prune_channels(videomae_model(), {"backbone.blocks.0": 0.5}), {"backbone.blocks.0": 0.5})
    assert twice.architecture.backbone.heads == {"0": 1}
    assert twice.architecture.backbone.mlp_hidden == {"0": 64}
    TADModel(twice.architecture).load_state_dict(twice.state_dict())


def test_a_model_with_dropped_blocks_prunes_its_remaining_blocks():
    model = videomae_model().without_blocks(["backbone.blocks.2"])
    pruned = prune_channels(model, {"*": 0.5})
    assert pruned.architecture.dropped == ["backbone.blocks.2"]
    assert sorted(pruned.architecture.backbone.heads) == ["0", "1", "3"]
    rebuilt = TADModel(pruned.architecture)
    rebuilt.load_state_dict(pruned.state_dict())
    with pytest.raises(ValueError, match=r"backbone\.blocks\.2"):
        prune_channels(model, {"backbone.blocks.2": 0.5})


def test_the_lowest_l2_heads_and_channels_go():
    model = videomae_model()
    attn, mlp = model.backbone.blocks["0"].attn, model.backbone.blocks["0"].mlp
    weak_heads, weak_channels = [1, 3], torch.arange(1, 256, 2)
    with torch.no_grad():
        for head in weak_heads:
            channels = slice(16 * head, 16 * head + 16)
            for part in range(3):
                attn.qkv.weight[64 * part + 16 * head: 64 * part + 16 * head + 16] *= 1e-3
            attn.proj.weight[:, channels] *= 1e-3
        mlp.fc1.weight[weak_channels] *= 1e-3
        mlp.fc2.weight[:, weak_channels] *= 1e-3
        attn.q_bias.copy_(torch.arange(64.0))
    kept_heads = torch.cat([torch.arange(16 * h, 16 * h + 16) for h in (0, 2)])
    kept_rows = torch.cat([64 * part + kept_heads for part in range(3)])

    pruned = prune_channels(model, {"backbone.blocks.0": 0.5})
    pruned_attn, pruned_mlp = pruned.backbone.blocks["0"].attn, pruned.backbone.blocks["0"].mlp
    torch.testing.assert_close(pruned_attn.qkv.weight, attn.qkv.weight[kept_rows], rtol=0, atol=0)
    torch.testing.assert_close(pruned_attn.q_bias, attn.q_bias[kept_heads], rtol=0, atol=0)
    torch.testing.assert_close(pruned_attn.proj.weight, attn.proj.weight[:, kept_heads], rtol=0, atol=0)
    torch.testing.assert_close(pruned_mlp.fc1.weight, mlp.fc1.weight[0::2], rtol=0, atol=0)
    torch.testing.assert_close(pruned_mlp.fc2.weight, mlp.fc2.weight[:, 0::2], rtol=0, atol=0)


def test_detector_blocks_lose_mlp_channels_in_feature_mode():
    model = features_model()
    pruned = prune_channels(model, {"detector.backbone.branch.1": 0.5})
    block = shapes(pruned, "detector.backbone.branch.1.")
    assert block["mlp.0.weight"] == (64, 32, 1) and block["mlp.3.weight"] == (32, 64, 1)
    assert block["attn.query.weight"] == (32, 32, 1)  # the detector's attention keeps its heads
    assert pruned.architecture.detector.mlp_hidden == {"branch.1": 64}
    assert pruned.detector.config == pruned.architecture.detector
    inputs, mask = dummy_input(model, 32)
    assert count_macs(lambda: pruned(inputs, mask)) < count_macs(lambda: model(inputs, mask))


def test_detector_config_refuses_widths_for_unknown_blocks():
    with pytest.raises(ValueError, match=r"stem\.5"):
        DetectorConfig(**DETECTOR, mlp_hidden={"stem.5": 8})


def test_blvnet_bottleneck_loses_inner_channels():
    model = blvnet_model()
    pruned = prune_channels(model, {"backbone.stages.2.fusion.0": 0.5})
    block = shapes(pruned, "backbone.stages.2.fusion.0.")
    assert block["conv1.weight"] == (32, 256, 1, 1) and block["bn1.running_mean"] == (32,)
    assert block["conv2.weight"] == (32, 32, 3, 3) and block["bn2.weight"] == (32,)
    assert block["conv3.weight"] == (256, 32, 1, 1) and block["bn3.weight"] == (256,)
    assert pruned.architecture.backbone.inner_widths == {"stages.2.fusion.0": 32}
    chunk = torch.randn(1, 3, 8, 32, 32)
    assert count_macs(lambda: pruned.backbone(chunk)) < count_macs(lambda: model.backbone(chunk))


def test_blvnet_last_stage_keeps_its_tam_on_the_block_input():
    pruned = prune_channels(blvnet_model(), {"backbone.stages.3.blocks.1": 0.5})
    block = shapes(pruned, "backbone.stages.3.blocks.1.")
    assert block["conv1.weight"] == (64, 512, 1, 1) and block["tam.weight"] == (3, 512)


@pytest.mark.parametrize("ratios, name", [
    ({"backbone.blocks.1": 1.0}, "backbone.blocks.1"),
    ({"backbone.blocks.1": -0.1}, "backbone.blocks.1"),
    ({"*": 1.5}, "*"),
    ({"backbone.blocks.7": 0.5}, "backbone.blocks.7"),
    ({"detector.backbone.stem.0": 0.5}, "detector.backbone.stem.0"),
])
def test_bad_ratios_and_names_are_refused_by_name(ratios, name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        prune_channels(videomae_model(), ratios)


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"backbone\.blocks\.0.*backbone\.blocks\.3"):
        prune_channels(videomae_model(), {"backbone.blocks.7": 0.5})


def test_the_input_model_is_untouched():
    model = videomae_model()
    fingerprint = model.fingerprint()
    prune_channels(model, {"*": 0.5})
    assert model.fingerprint() == fingerprint
    assert model.architecture.backbone.heads == {}


def test_training_modes_and_frozen_parameters_are_kept():
    model = blvnet_model().train()
    model.backbone.stages[2].fusion["0"].bn1.eval()  # a BatchNorm frozen while the rest trains
    model.backbone.stages[2].fusion["0"].requires_grad_(False)
    pruned = prune_channels(model, {"*": 0.5})
    block = pruned.backbone.stages[2].fusion["0"]
    assert pruned.training and block.conv1.training and not block.bn1.training
    assert not block.conv1.weight.requires_grad and not block.bn1.weight.requires_grad
    assert pruned.backbone.stages[2].big["1"].conv1.weight.requires_grad


def test_ratios_too_small_to_remove_a_channel_leave_the_architecture_alone():
    model = videomae_model()
    pruned = prune_channels(model, {"*": 0.001})
    assert pruned.architecture_fingerprint() == model.architecture_fingerprint()
    assert pruned.fingerprint() == model.fingerprint()
