import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tadmodels.models.blvnet import (
    BLVNET_PRESETS,
    BLVNetConfig,
    BLVNetTAM,
    Bottleneck,
    TemporalAggregation,
    split_big_little,
)

TINY_DROPPABLE = [
    "stages.1.big.1", "stages.1.little.0", "stages.2.big.1", "stages.2.little.0", "stages.2.fusion.0",
    "stages.3.blocks.1",
]


def tiny(**overrides) -> BLVNetTAM:
    torch.manual_seed(0)
    return BLVNetTAM(BLVNetConfig(preset="tiny", **overrides)).eval()


def tiny_input(batch: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, 3, 8, 32, 32)


def randomize_residual_branches(model: nn.Module) -> None:
    """Fresh bottlenecks are the identity (zero last BN gamma); give them a visible effect."""
    for module in model.modules():
        if isinstance(module, Bottleneck):
            nn.init.normal_(module.bn3.weight)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_output_is_one_feature_per_frame_pair():
    model = tiny()
    out = model(tiny_input())
    assert out.shape == (2, 4, model.out_dim) == (2, 4, 512)
    assert torch.isfinite(out).all()
    assert (model.temporal_stride, model.chunk_frames) == (2, 8)


def test_preset_fills_config_and_unknown_preset_is_refused():
    assert BLVNetConfig(preset="blvnet-tam-50") == BLVNetConfig(**BLVNET_PRESETS["blvnet-tam-50"], preset="blvnet-tam-50")
    assert BLVNetConfig(preset="tiny", img_size=64).img_size == 64
    with pytest.raises(ValueError, match="unknown 'nope'"):
        BLVNetConfig(preset="nope")


def test_blvnet_tam_50_matches_the_paper_cost():
    with torch.device("meta"):
        model = BLVNetTAM(BLVNetConfig(preset="blvnet-tam-50"))
        clip = torch.empty(1, 3, 16, 224, 224)
    with FlopCounterMode(display=False) as counter:
        out = model(clip)
    assert out.shape == (1, 8, 2048)
    assert abs(counter.get_total_flops() / 2 - 23.9e9) < 0.05 * 23.9e9
    # The paper's 25.0 M includes a classifier (Something-Something v1: 174 classes).
    assert abs(n_params(model) + 2048 * 174 + 174 - 25.0e6) < 0.01 * 25.0e6
    assert model.droppable_blocks() == [
        "stages.0.big.1", "stages.1.big.1", "stages.1.big.2", "stages.1.little.0",
        "stages.2.big.1", "stages.2.big.2", "stages.2.big.3", "stages.2.big.4", "stages.2.little.0",
        "stages.2.fusion.0", "stages.3.blocks.1", "stages.3.blocks.2",
    ]


def test_droppable_blocks_are_the_identity_shortcut_bottlenecks():
    model = tiny()
    assert model.droppable_blocks() == TINY_DROPPABLE
    for name, module in model.named_modules():
        if isinstance(module, Bottleneck):
            assert (name in TINY_DROPPABLE) == (module.shortcut is None)


@pytest.mark.parametrize("name", TINY_DROPPABLE)
def test_deleting_a_block_keeps_other_names_and_runs(name):
    model = tiny()
    randomize_residual_branches(model)
    x = tiny_input()
    full_out, full_params = model(x), n_params(model)
    parent, key = name.rsplit(".", 1)
    del model.get_submodule(parent)[key]
    assert model.droppable_blocks() == [other for other in TINY_DROPPABLE if other != name]
    out = model(x)
    assert out.shape == full_out.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, full_out)
    assert n_params(model) < full_params


def test_dropping_fresh_blocks_changes_nothing():
    """Zero-initialised last BN: a fresh droppable block is the identity, so dropping it is exact."""
    model = tiny()
    x = tiny_input()
    expected = model(x)
    for name in TINY_DROPPABLE:
        parent, key = name.rsplit(".", 1)
        del model.get_submodule(parent)[key]
    assert model.droppable_blocks() == []
    torch.testing.assert_close(model(x), expected)


def test_tam_matches_hand_computation():
    tam = TemporalAggregation(channels=1, num_steps=3, radius=1)
    with torch.no_grad():
        tam.weight.copy_(torch.tensor([[2.0], [3.0], [-1.0]]))  # w_-1, w_0, w_+1
    # Two clips of three steps, stacked in the batch as [N * T, C, H, W].
    x = torch.tensor([1.0, 2.0, -4.0, 0.5, -1.0, 3.0]).view(6, 1, 1, 1)
    # y_t = relu(2 x_{t-1} + 3 x_t - x_{t+1}), zero past each clip's ends.
    expected = torch.tensor([
        max(0.0, 3 * 1 - 2), max(0.0, 2 * 1 + 3 * 2 + 4), max(0.0, 2 * 2 - 3 * 4),
        max(0.0, 1.5 + 1), max(0.0, 1 - 3 - 3), max(0.0, -2 + 9),
    ]).view(6, 1, 1, 1)
    torch.testing.assert_close(tam(x), expected)


@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_tam_is_a_zero_padded_depthwise_temporal_conv(radius, steps):
    torch.manual_seed(0)
    tam = TemporalAggregation(channels=4, num_steps=steps, radius=radius)
    nn.init.normal_(tam.weight)
    x = torch.randn(3 * steps, 4, 2, 5)
    clips = x.view(3, steps, 4, 2, 5).transpose(1, 2)
    kernel = tam.weight.detach().t().reshape(4, 1, 2 * radius + 1, 1, 1)
    reference = torch.relu(F.conv3d(clips, kernel, padding=(radius, 0, 0), groups=4))
    torch.testing.assert_close(tam(x), reference.transpose(1, 2).reshape_as(x))


def test_odd_frames_go_big_and_even_frames_go_little():
    """Frame 0 is the first frame: frames 1, 3, 5, ... feed Big and 0, 2, 4, ... feed Little."""
    frames = torch.arange(2 * 8).float().view(16, 1, 1, 1)  # two clips of 8 frames
    big, little = split_big_little(frames)
    assert big.flatten().tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert little.flatten().tolist() == [0, 2, 4, 6, 8, 10, 12, 14]

    model = tiny()
    stem = model.stem  # a fresh TAM is the identity, so the branch inputs are the stem conv's frames
    seen = {}
    stem.big.register_forward_hook(lambda module, inputs, output: seen.setdefault("big", inputs[0]))
    stem.little.register_forward_hook(lambda module, inputs, output: seen.setdefault("little", inputs[0]))
    x = tiny_input()
    model(x)
    with torch.no_grad():
        per_frame = torch.relu(stem.conv(x.transpose(1, 2).reshape(16, 3, 32, 32))).view(2, 8, -1, 16, 16)
    torch.testing.assert_close(seen["big"], per_frame[:, 1::2].reshape(8, -1, 16, 16))
    torch.testing.assert_close(seen["little"], per_frame[:, 0::2].reshape(8, -1, 16, 16))


def test_inner_widths_override_builds_the_smaller_model():
    widths = {"stages.2.big.1": 8, "stages.1.little.0": 4, "stages.3.blocks.0": 10}
    model = tiny(inner_widths=widths)
    for name, width in widths.items():
        block = model.get_submodule(name)
        assert block.conv1.out_channels == block.conv2.out_channels == block.conv3.in_channels == width
    assert n_params(model) < n_params(tiny())
    assert model(tiny_input()).shape == (2, 4, 512)
    assert model.droppable_blocks() == TINY_DROPPABLE
    with pytest.raises(ValueError, match="unknown blocks"):
        BLVNetConfig(preset="tiny", inner_widths={"stages.9.big.0": 4})


def test_fresh_weights_follow_resnet_init():
    model = tiny()
    for module in model.modules():
        if isinstance(module, TemporalAggregation):
            assert module.weight[1].eq(1).all() and module.weight[[0, 2]].eq(0).all()  # identity: w_0 = 1
        if isinstance(module, Bottleneck):
            assert module.bn3.weight.abs().sum() == 0
            assert module.bn1.weight.eq(1).all() and module.bn1.bias.eq(0).all()


def ibm_state(depths=(3, 3, 3, 2), width=16, alpha=2, beta=4) -> dict[str, torch.Tensor]:
    """Random weights under the names IBM's `bLVNet_TAM_BACKBONE` gives them (blvnet_tam_backbone.py)."""
    state: dict[str, torch.Tensor] = {}

    def conv_bn(conv, bn, out, inp, k):
        """A conv's weight and its BN's parameters and statistics."""
        state[f"{conv}.weight"] = torch.randn(out, inp, k, k) * 0.1
        state.update({f"{bn}.weight": 1 + 0.1 * torch.randn(out), f"{bn}.bias": 0.1 * torch.randn(out),
                      f"{bn}.running_mean": 0.1 * torch.randn(out), f"{bn}.running_var": 0.5 + torch.rand(out),
                      f"{bn}.num_batches_tracked": torch.tensor(7)})

    def tam(name, channels):
        for offset in ("prev", "curr", "next"):
            state[f"{name}.{offset}.weight"] = torch.randn(channels, 1, 1, 1)

    def bottleneck(name, inp, planes, stride=1, with_tam=False):
        conv_bn(f"{name}.conv1", f"{name}.bn1", planes // 4, inp, 1)
        conv_bn(f"{name}.conv2", f"{name}.bn2", planes // 4, planes // 4, 3)
        conv_bn(f"{name}.conv3", f"{name}.bn3", planes, planes // 4, 1)
        if inp != planes:  # downsample: [AvgPool2d (no weights) when strided,] conv, BN
            first = 1 if stride != 1 else 0
            conv_bn(f"{name}.downsample.{first}", f"{name}.downsample.{first + 1}", planes, inp, 1)
        if with_tam:
            tam(f"{name}.tam", inp)

    narrow = width // alpha
    conv_bn("conv1", "bn1", width, 3, 7)
    tam("tam", width)
    conv_bn("b_conv0", "bn_b0", width, width, 3)
    conv_bn("l_conv0", "bn_l0", narrow, width, 3)
    conv_bn("l_conv1", "bn_l1", narrow, narrow, 3)
    conv_bn("l_conv2", "bn_l2", width, narrow, 1)
    conv_bn("bl_init", "bn_bl_init", width, width, 1)
    inp = width
    for k in range(3):
        out = width * 2**k * 4
        tam(f"layer{k + 1}.tam", inp)
        for i in range(depths[k] - 1):
            bottleneck(f"layer{k + 1}.big.{i}", inp if i == 0 else out, out, stride=2 if i == 0 else 1)
        for i in range(max(1, depths[k] // beta - 1)):
            bottleneck(f"layer{k + 1}.little.{i}", inp if i == 0 else out // alpha, out // alpha)
        conv_bn(f"layer{k + 1}.little_e.0", f"layer{k + 1}.little_e.1", out, out // alpha, 1)
        bottleneck(f"layer{k + 1}.fusion.0", out, out, stride=2 if k < 2 else 1)
        inp = out
    for i in range(depths[3]):
        bottleneck(f"layer4.{i}", inp if i == 0 else width * 32, width * 32, stride=2 if i == 0 else 1, with_tam=True)
    state.update({"fc.weight": torch.randn(10, width * 32), "fc.bias": torch.zeros(10)})
    return state


def test_ibm_release_keys_map_onto_the_backbone(tmp_path):
    from tadmodels.checkpoints import run_import
    from tadmodels.checkpoints.backbone import read_backbone_import

    torch.manual_seed(0)
    state = ibm_state()
    torch.save({"epoch": 50, "state_dict": {f"module.baseline_model.{k}": v for k, v in state.items()},
                "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "checkpoint.pth.tar")
    report = run_import("blvnet", tmp_path / "checkpoint.pth.tar", tmp_path / "out", {"num_frames": 8, "img_size": 32})
    config, imported = read_backbone_import(tmp_path / "out")
    assert (config.depths, config.base_width, config.alpha, config.tam_radius) == ((3, 3, 3, 2), 16, 2, 1)
    assert sorted(r.source for r in report.keys) == sorted(["epoch", "optimizer", *[f"module.baseline_model.{k}" for k in state]])
    for ibm, ours in [("l_conv1.weight", "stem.little.2.0.weight"), ("bn_bl_init.running_var", "stem.merge.0.1.running_var"),
                      ("layer1.big.0.downsample.2.weight", "stages.0.big.0.shortcut.2.weight"),
                      ("layer1.little.0.downsample.0.weight", "stages.0.little.0.shortcut.0.weight"),
                      ("layer3.little_e.1.bias", "stages.2.little_expand.1.bias"),
                      ("layer4.1.conv3.weight", "stages.3.blocks.1.conv3.weight")]:
        assert torch.equal(imported[ours], state[ibm]), ibm
    for ibm, ours in [("tam", "stem.tam"), ("layer2.tam", "stages.1.tam"), ("layer4.1.tam", "stages.3.blocks.1.tam")]:
        rows = torch.stack([state[f"{ibm}.{offset}.weight"].flatten() for offset in ("prev", "curr", "next")])
        assert torch.equal(imported[f"{ours}.weight"], rows)  # row j is the weight of x[t + j - 1]
    model = BLVNetTAM(config).eval()
    model.load_state_dict(imported)
    assert model(tiny_input()).shape == (2, 4, 512)


def test_ibm_weights_that_would_compute_otherwise_are_refused(tmp_path):
    from tadmodels.checkpoints import run_import
    from tadmodels.checkpoints.files import CheckpointError

    torch.save(ibm_state(depths=(2, 3, 3, 2)), tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match="stage 0 has one Big block; IBM's code keeps its last ReLU"):
        run_import("blvnet", tmp_path / "a.pth", tmp_path / "out")
    torch.save(ibm_state(depths=(3, 8, 3, 2)), tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match="layer2 has 1 Little blocks, beta 2 gives 3"):
        run_import("blvnet", tmp_path / "b.pth", tmp_path / "out", {"beta": 2})
