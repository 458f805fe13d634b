"""Our detector against the ActionFormer release, on fixtures written by the release's own code
(`benchmarks/actionformer_fixture.py`): its state dict loads plainly, and the same weights give the
same outputs, training targets, losses and detections."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tadmodels.models.actionformer import ActionFormer, DetectorConfig, DetectorOutput
from tadmodels.models.actionformer.postprocess import InferenceConfig
from tadmodels.models.actionformer.targets import Points

FIXTURES = Path(__file__).parent / "fixtures" / "actionformer_release"
CASES = ["thumos_small", "fpn_global"]
VARIANTS = [(case, variant) for case in CASES
            for variant in json.loads((FIXTURES / f"{case}.json").read_text())["variants"]]


def load_case(name: str) -> tuple[ActionFormer, dict[str, torch.Tensor], dict]:
    tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
    description = json.loads((FIXTURES / f"{name}.json").read_text())
    detector = ActionFormer(description["input_dim"], DetectorConfig.model_validate(description["detector"]))
    detector.load_state_dict({k.removeprefix("weights."): v for k, v in tensors.items() if k.startswith("weights.")})
    return detector.eval(), tensors, description


def ground_truth(description: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return ([torch.tensor(s, dtype=torch.float32).reshape(-1, 2) for s in description["segments"]],
            [torch.tensor(l, dtype=torch.long) for l in description["labels"]])


def release_output(detector: ActionFormer, tensors: dict[str, torch.Tensor]) -> DetectorOutput:
    """The release's raw outputs with our points (checked equal to its own in `test_same_outputs`)."""
    points = detector(tensors["features"], tensors["mask"]).points
    return DetectorOutput(tensors["cls_logits"], tensors["offsets"], tensors["valid"], points)


@pytest.mark.parametrize("name", CASES)
def test_release_weights_load_plainly_with_its_names_and_shapes(name):
    detector, tensors, _ = load_case(name)
    ours = {k: tuple(v.shape) for k, v in detector.state_dict().items()}
    theirs = {k.removeprefix("weights."): tuple(v.shape) for k, v in tensors.items() if k.startswith("weights.")}
    assert ours == theirs


@pytest.mark.parametrize("name", CASES)
def test_same_outputs(name):
    detector, tensors, _ = load_case(name)
    with torch.no_grad():
        output = detector(tensors["features"], tensors["mask"])
    torch.testing.assert_close(output.cls_logits, tensors["cls_logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(output.offsets, tensors["offsets"], rtol=0, atol=1e-5)
    assert torch.equal(output.valid, tensors["valid"])
    points: Points = output.points
    release_points = torch.stack([points.positions, points.range_low, points.range_high, points.strides], dim=1)
    assert torch.equal(release_points, tensors["points"])


@pytest.mark.parametrize("name", CASES)
def test_same_training_targets_and_losses(name):
    detector, tensors, description = load_case(name)
    segments, labels = ground_truth(description)
    output = release_output(detector, tensors)
    cls_targets, reg_targets = detector.targets(output, segments, labels)
    assert torch.equal(cls_targets, tensors["cls_targets"])
    torch.testing.assert_close(reg_targets, tensors["reg_targets"], rtol=0, atol=1e-6)
    normaliser = detector.loss_normalizer
    detector.train()
    losses = detector.loss(output, segments, labels)
    assert detector.loss_normalizer == pytest.approx(tensors["loss.normalizer"].item(), rel=1e-12) != normaliser
    for ours, theirs in (("cls", "loss.cls"), ("reg", "loss.reg"), ("total", "loss.total")):
        torch.testing.assert_close(losses[ours], tensors[theirs], rtol=1e-5, atol=0)


@pytest.mark.parametrize("name, variant", VARIANTS)
def test_same_detections_from_the_same_outputs(name, variant):
    detector, tensors, description = load_case(name)
    config = detector.config.test.model_copy(update=description["variants"][variant])
    found = detector.detect(release_output(detector, tensors), InferenceConfig.model_validate(config.model_dump()))
    for video, detections in enumerate(found):
        expected = {field: tensors[f"detections.{variant}.{video}.{field}"] for field in ("segments", "scores", "labels")}
        assert torch.equal(detections.labels, expected["labels"])
        assert torch.equal(detections.segments, expected["segments"])
        # Soft-NMS scores may differ in the last bit: the release decays with the C library's float exp.
        torch.testing.assert_close(detections.scores, expected["scores"], rtol=2e-7, atol=0)
