import math

import pytest
import torch

from tadmodels.models.actionformer import ActionFormer, DetectorConfig
from tadmodels.models.actionformer.losses import diou_loss_1d, sigmoid_focal_loss
from tadmodels.models.actionformer.postprocess import Detections, InferenceConfig, soft_nms
from tadmodels.models.actionformer.targets import DEFAULT_REGRESSION_RANGES, assign_targets, make_points


def small_detector(**overrides) -> ActionFormer:
    torch.manual_seed(0)
    return ActionFormer(16, DetectorConfig(num_classes=3, dim=32, num_heads=4, window=9, **overrides))


def test_points_cover_six_levels_with_their_ranges():
    points = make_points([64, 32, 16, 8, 4, 2], DEFAULT_REGRESSION_RANGES, torch.device("cpu"))
    assert points.positions.shape == (126,)
    assert points.positions[64:67].tolist() == [0.0, 2.0, 4.0]
    assert points.strides[-1] == 32 and math.isinf(points.range_high[-1])


def test_assignment_uses_centre_region_range_and_shortest_segment():
    points = make_points([16, 8], ((0, 4), (4, 8)), torch.device("cpu"))
    # Segment [2, 8]: centre 5, radius 1.5 * stride. Level 0 (stride 1): centre region [3.5, 6.5] ->
    # points 4, 5, 6; their reach max(left, right) is 4, 3, 4 -> all within (0, 4].
    # Level 1 (stride 2): region [2, 8] -> points 2, 4, 6, 8 with reach 6, 4, 4, 6 -> 4 and 6 in [4, 8]
    # hmm: 2 and 8 are on the border (reach 6, left or right 0) and count too since the range holds 6.
    segments, labels = torch.tensor([[2.0, 8.0]]), torch.tensor([1])
    cls, offsets = assign_targets(points, segments, labels, num_classes=3, center_radius=1.5)
    positive = cls.sum(1) > 0
    level0 = torch.nonzero(positive[:16]).squeeze(1).tolist()
    level1 = (points.positions[16:][positive[16:]]).tolist()
    assert level0 == [4, 5, 6]
    assert level1 == [2.0, 4.0, 6.0, 8.0]
    assert cls[5].tolist() == [0, 1, 0]
    torch.testing.assert_close(offsets[5], torch.tensor([3.0, 3.0]))          # stride 1
    torch.testing.assert_close(offsets[16 + 2], torch.tensor([1.0, 2.0]))     # point 4 at stride 2


def test_overlapping_segments_go_to_the_shorter_one():
    points = make_points([16], ((0, math.inf),), torch.device("cpu"))
    segments, labels = torch.tensor([[0.0, 12.0], [4.0, 8.0]]), torch.tensor([0, 2])
    cls, offsets = assign_targets(points, segments, labels, num_classes=3, center_radius=1.5)
    assert cls[6].tolist() == [0, 0, 1]
    torch.testing.assert_close(offsets[6], torch.tensor([2.0, 2.0]))


def test_focal_loss_matches_its_formula():
    logit, target = torch.tensor([0.3]), torch.tensor([1.0])
    p = torch.sigmoid(logit)
    expected = -0.25 * (1 - p) ** 2 * torch.log(p)
    torch.testing.assert_close(sigmoid_focal_loss(logit, target), expected)


def test_diou_loss_values():
    same = torch.tensor([[2.0, 3.0]])
    assert diou_loss_1d(same, same).item() == pytest.approx(0.0, abs=1e-6)
    # pred [-1, 1], target [-1, 3]: IoU 2/4, centres 0 and 1, enclosing 4 -> 1 - 0.5 + (1/4)^2
    assert diou_loss_1d(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 3.0]])).item() == pytest.approx(0.5625)


def test_soft_nms_decays_overlaps_of_the_same_class_only():
    detections = Detections(torch.tensor([[0.0, 10.0], [1.0, 10.0], [0.0, 10.0], [20.0, 30.0]]),
                            torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 1, 0]))
    kept = soft_nms(detections, InferenceConfig(nms_sigma=0.5))
    # After 0.9 is picked, the same-class [1, 10] (IoU 0.9) decays to 0.8 * exp(-0.81 / 0.5) = 0.158,
    # below the untouched other-class 0.7 and the non-overlapping 0.6.
    assert kept.labels.tolist() == [0, 1, 0, 0]
    iou = 9 / 10
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.8 * math.exp(-iou ** 2 / 0.5)])


def test_padding_does_not_change_valid_outputs():
    detector = small_detector().eval()
    x = torch.randn(1, 16, 64)
    mask = torch.ones(1, 64, dtype=torch.bool)
    mask[:, 40:] = False
    x_padded = x.clone()
    x_padded[:, :, 40:] = 0
    noisy = x.clone()
    noisy[:, :, 40:] = 5.0
    a, b = detector(x_padded, mask), detector(noisy * mask[:, None], mask)
    torch.testing.assert_close(a.cls_logits[a.valid], b.cls_logits[b.valid])


def test_detector_learns_and_decodes_a_single_video():
    detector = small_detector()
    torch.manual_seed(0)
    x = torch.randn(1, 16, 64) * 0.1
    x[:, :4, 20:36] += 2.0  # the action is visible in the features
    mask = torch.ones(1, 64, dtype=torch.bool)
    segments, labels = [torch.tensor([[20.0, 36.0]])], [torch.tensor([2])]
    optimizer = torch.optim.AdamW(detector.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss = detector.loss(detector(x, mask), segments, labels)["total"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first
    best = detector.detect(detector.eval()(x, mask))[0]
    assert best.labels[0].item() == 2
    start, end = best.segments[0].tolist()
    assert abs(start - 20) < 3 and abs(end - 36) < 3


def test_length_must_fit_the_pyramid():
    with pytest.raises(ValueError, match="not a multiple of 32"):
        small_detector()(torch.randn(1, 16, 40), torch.ones(1, 40, dtype=torch.bool))


def test_every_detector_block_is_droppable_and_named_stably():
    detector = small_detector()
    names = detector.droppable_blocks()
    assert names[:3] == ["pyramid.levels.0.blocks.0", "pyramid.levels.0.blocks.1", "pyramid.levels.1.blocks.0"]
    assert len(names) == 7
