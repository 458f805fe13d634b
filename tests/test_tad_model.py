import copy

import pytest
import torch

from tadmodels.models import ModelConfig, TADModel
from tadmodels.profile import count_macs, count_params, dummy_input


def frames_model(**detector) -> TADModel:
    torch.manual_seed(0)
    return TADModel(ModelConfig(backbone={"type": "videomae", "preset": "tiny", "depth": 4},
                                detector={"num_classes": 3, "dim": 32, "window": 9, **detector}))


def features_model() -> TADModel:
    torch.manual_seed(0)
    return TADModel(ModelConfig(input_dim=24, detector={"num_classes": 3, "dim": 32, "window": 9}))


def test_end_to_end_runs_backbone_per_chunk():
    model = frames_model().eval()
    frames, mask = dummy_input(model, 64)
    assert frames.shape == (1, 128, 32, 32, 3) and mask.shape == (1, 64)
    features = model.extract_features(frames)
    assert features.shape == (1, 64, 64)
    # chunk 3 of the video is computed from its own 16 frames only
    chunk = frames[:, 48:64].permute(0, 4, 1, 2, 3)
    alone = model.backbone((chunk.float() - model.pixel_mean) / model.pixel_std)
    torch.testing.assert_close(features[:, 24:32], alone)


def test_droppable_blocks_backbone_end_to_end_detector_on_features():
    assert frames_model().droppable_blocks() == [f"backbone.blocks.{i}" for i in range(4)]
    assert features_model().droppable_blocks()[0] == "detector.backbone.stem.0"


def test_without_blocks_removes_modules_and_keeps_names():
    model = frames_model()
    smaller = model.without_blocks(["backbone.blocks.1"])
    assert "backbone.blocks.1" in model.droppable_blocks()  # the original is untouched
    assert smaller.droppable_blocks() == ["backbone.blocks.0", "backbone.blocks.2", "backbone.blocks.3"]
    assert not any(k.startswith("backbone.blocks.1.") for k in smaller.state_dict())
    assert smaller.architecture.dropped == ["backbone.blocks.1"]
    assert count_params(smaller) < count_params(model)
    frames, mask = dummy_input(model, 32)
    assert count_macs(lambda: smaller(frames, mask)) < count_macs(lambda: model(frames, mask))


def test_a_config_with_dropped_blocks_rebuilds_the_same_architecture():
    smaller = frames_model().without_blocks(["backbone.blocks.2"])
    rebuilt = TADModel(smaller.architecture)
    assert rebuilt.architecture_fingerprint() == smaller.architecture_fingerprint()
    rebuilt.load_state_dict(smaller.state_dict())
    assert rebuilt.fingerprint() == smaller.fingerprint()


@pytest.mark.parametrize("names, message", [
    (["backbone.blocks.9"], "cannot drop"),
    ([f"backbone.blocks.{i}" for i in range(4)], "every droppable block"),
])
def test_bad_drops_are_refused(names, message):
    with pytest.raises(ValueError, match=message):
        frames_model().without_blocks(names)


def test_fingerprints_tell_weights_and_architecture_apart():
    a, b = frames_model(), frames_model()
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.detector.cls_head.cls_head.conv.bias.add_(1)
    assert a.fingerprint() != b.fingerprint()
    assert a.architecture_fingerprint() == b.architecture_fingerprint()
    assert a.architecture_fingerprint() != a.without_blocks(["backbone.blocks.0"]).architecture_fingerprint()


def test_compute_signature_ignores_which_identical_blocks_dropped():
    from pruning.channels import prune_channels

    vit = frames_model()
    one, other = vit.without_blocks(["backbone.blocks.0"]), vit.without_blocks(["backbone.blocks.3"])
    assert one.architecture_fingerprint() != other.architecture_fingerprint()
    assert one.compute_signature() == other.compute_signature() != vit.compute_signature()
    assert prune_channels(copy.deepcopy(one), {"*": 0.5}).compute_signature() != one.compute_signature()
    # bLVNet-TAM's stages differ in width: which stage loses a block changes the computation.
    cnn = TADModel(ModelConfig(backbone={"type": "blvnet", "preset": "tiny"},
                               detector={"num_classes": 3, "dim": 32, "window": 9}))
    stage1, stage2 = (cnn.without_blocks([name]).compute_signature()
                   for name in ("backbone.stages.1.big.1", "backbone.stages.2.big.1"))
    assert stage1 != stage2


def test_compute_signature_tells_detector_branch_levels_apart():
    model = features_model()
    stem0, stem1, branch0, branch3 = (model.without_blocks([f"detector.backbone.{name}"]).compute_signature()
                                      for name in ("stem.0", "stem.1", "branch.0", "branch.3"))
    assert stem0 == stem1  # identical blocks at one resolution
    assert len({stem0, branch0, branch3}) == 3


def test_feature_mode_runs_on_features():
    model = features_model()
    features, mask = dummy_input(model, 50)
    assert features.shape == (1, 64, 24)
    assert model(features, mask).cls_logits.shape[0] == 1


def test_config_needs_exactly_one_input():
    with pytest.raises(ValueError, match="exactly one"):
        ModelConfig(detector={"num_classes": 2})
