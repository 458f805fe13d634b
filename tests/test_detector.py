import math

import pytest
import torch

from tadmodels.models.actionformer import ActionFormer, DetectorConfig
from tadmodels.models.actionformer.blocks import _blocked_local_attention, masked_attention, skip_connection
from tadmodels.models.actionformer.losses import diou_loss_1d, sigmoid_focal_loss
from tadmodels.models.actionformer.postprocess import soft_nms
from tadmodels.models.actionformer.targets import assign_targets, make_points


def small_detector(**overrides) -> ActionFormer:
    torch.manual_seed(0)
    return ActionFormer(16, DetectorConfig(num_classes=3, dim=32, num_heads=4, window=9, **overrides))


def test_points_cover_six_levels_with_their_ranges():
    ranges = [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)]
    points = make_points([64, 32, 16, 8, 4, 2], [1, 2, 4, 8, 16, 32], ranges, torch.device("cpu"))
    assert points.positions.shape == (126,) and points.level_lengths == (64, 32, 16, 8, 4, 2)
    assert points.positions[64:67].tolist() == [0.0, 2.0, 4.0]
    assert points.strides[-1] == 32 and points.range_high[-1] == 10000


def test_assignment_uses_the_strict_centre_region_range_and_shortest_segment():
    points = make_points([16, 8], [1, 2], [(0, 4), (4, 8)], torch.device("cpu"))
    # Segment [2, 8]: centre 5, radius 1.5 * stride. Level 0 (stride 1): centre region [3.5, 6.5] ->
    # points 4, 5, 6; their reach max(left, right) is 4, 3, 4 -> all within [0, 4].
    # Level 1 (stride 2): region [2, 8] -> points 4 and 6 (reach 4); 2 and 8 lie on its edge, and
    # the region is open.
    segments, labels = torch.tensor([[2.0, 8.0]]), torch.tensor([1])
    cls, offsets = assign_targets(points, segments, labels, num_classes=3, center_radius=1.5)
    positive = cls.sum(1) > 0
    assert torch.nonzero(positive[:16]).squeeze(1).tolist() == [4, 5, 6]
    assert points.positions[16:][positive[16:]].tolist() == [4.0, 6.0]
    assert cls[5].tolist() == [0, 1, 0]
    torch.testing.assert_close(offsets[5], torch.tensor([3.0, 3.0]))          # stride 1
    torch.testing.assert_close(offsets[16 + 2], torch.tensor([1.0, 2.0]))     # point 4 at stride 2
    # Without centre sampling every point strictly inside the segment may be positive.
    cls, _ = assign_targets(points, segments, labels, num_classes=3, center_radius=None)
    assert torch.nonzero(cls[:16].sum(1)).squeeze(1).tolist() == [4, 5, 6]   # 3 and 7 reach 5 > 4


def test_overlapping_segments_go_to_the_shorter_one():
    points = make_points([16], [1], [(0, 10000)], torch.device("cpu"))
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


def test_soft_nms_decays_overlaps_and_refills_discarded_slots_from_the_end():
    # One class: X is picked first; [1, 10] overlaps it (IoU 0.9) and decays below min_score, so the
    # last candidate (Z) takes its slot and, tied with Y, is picked before it, as in the release.
    segments = torch.tensor([[0.0, 10.0], [1.0, 10.0], [20.0, 30.0], [40.0, 50.0]])
    scores = torch.tensor([0.9, 0.0015, 0.5, 0.5])
    picks, picked_scores = soft_nms(segments, scores, [torch.arange(4)], sigma=0.5, min_score=0.001, max_picks=10)
    assert picks[0].tolist() == [0, 3, 2]
    assert picked_scores[0].tolist() == pytest.approx([0.9, 0.5, 0.5])
    # Above min_score it stays, decayed by exp(-IoU^2 / sigma); other groups are untouched.
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    picks, picked_scores = soft_nms(segments, scores, [torch.tensor([0, 1, 2]), torch.tensor([3])], 0.5, 0.001, 10)
    assert [p.tolist() for p in picks] == [[0, 2, 1], [3]]
    assert picked_scores[0].tolist() == pytest.approx([0.9, 0.7, 0.8 * math.exp(-0.9 ** 2 / 0.5)])


@pytest.mark.parametrize("radius", [4, 9, None])
def test_blocked_local_attention_equals_the_banded_product(radius):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 300, 8) for _ in range(3))
    valid = torch.arange(300)[None, :] < torch.tensor([[300], [217]])
    positions = torch.arange(300)
    allowed = valid[:, None, None, :]
    if radius is not None:
        allowed = allowed & ((positions[None, :] - positions[:, None]).abs() <= radius)
    expected = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~allowed, -math.inf), -1) @ v
    found = masked_attention(q, k, v, valid, radius)  # 300 positions: block by block when local
    rows = valid[:, None, :, None].expand_as(expected)
    torch.testing.assert_close(found[rows], expected[rows], rtol=0, atol=1e-5)
    if radius is not None:
        short = _blocked_local_attention(q[:, :, :100], k[:, :, :100], v[:, :, :100], valid[:, :100], radius)
        torch.testing.assert_close(short, masked_attention(q[:, :, :100], k[:, :, :100], v[:, :, :100],
                                                           valid[:, :100], radius), rtol=0, atol=1e-5)


def test_release_parameter_names_and_shapes():
    detector = ActionFormer(2048, DetectorConfig(num_classes=20))
    shapes = {k: tuple(v.shape) for k, v in detector.state_dict().items()}
    assert len(shapes) == 229
    assert shapes["backbone.embd.0.conv.weight"] == (512, 2048, 3) and "backbone.embd.0.conv.bias" not in shapes
    assert shapes["backbone.embd_norm.1.weight"] == (1, 512, 1)
    assert shapes["backbone.branch.4.attn.query_conv.conv.weight"] == (512, 1, 3)
    assert shapes["backbone.stem.1.attn.value_norm.bias"] == (1, 512, 1)
    assert shapes["backbone.stem.0.drop_path_mlp.scale"] == (1, 512, 1)
    assert shapes["backbone.branch.0.mlp.3.weight"] == (512, 2048, 1)
    assert shapes["neck.fpn_norms.5.weight"] == (1, 512, 1)
    assert shapes["reg_head.scale.5.scale"] == () and shapes["cls_head.cls_head.conv.bias"] == (20,)
    assert detector.state_dict()["backbone.stem.0.drop_path_attn.scale"].max().item() == pytest.approx(1e-4)
    assert detector.reg_head.offset_head.conv.bias.abs().max() == 0
    torch.testing.assert_close(detector.cls_head.cls_head.conv.bias, torch.full((20,), -math.log(99)))


def test_a_dropped_branch_block_leaves_its_max_pooled_shortcut():
    detector = small_detector().eval()
    x, mask = torch.randn(2, 16, 64), (torch.arange(64)[None, :] < torch.tensor([[64], [50]]))[:, None, :]
    with torch.no_grad():
        features, masks = detector.backbone(x, mask)
        del detector.backbone.branch["2"]
        fewer, fewer_masks = detector.backbone(x, mask)
    assert [f.shape for f in fewer] == [f.shape for f in features]
    torch.testing.assert_close(fewer[3], skip_connection(features[2], masks[2], 2)[0])
    assert all(torch.equal(a, b) for a, b in zip(fewer_masks, masks))
    torch.testing.assert_close(fewer[2], features[2])


def test_absolute_positions_are_sliced_in_training_and_stretched_in_eval_past_the_table():
    detector = small_detector(use_abs_pe=True, max_seq_len=64)
    table = detector.backbone.pos_embd
    assert table.shape == (1, 32, 64) and not any(k.endswith("pos_embd") for k in detector.state_dict())
    torch.testing.assert_close(table[0, 2:4, 5], torch.tensor([math.sin(5 / 10000 ** (2 / 32)),
                                                               math.cos(5 / 10000 ** (2 / 32))]) / math.sqrt(32))
    assert torch.equal(detector.backbone._positions(32), table[:, :, :32])
    detector.eval()
    assert detector.backbone._positions(128).shape == (1, 32, 128)
    with pytest.raises(ValueError, match="exceeds the position table's 64"):
        detector.train().backbone._positions(128)


def test_loss_normaliser_is_an_ema_of_positives_updated_in_training_only():
    detector = small_detector()
    x, mask = torch.randn(1, 16, 64), torch.ones(1, 64, dtype=torch.bool)
    segments, labels = [torch.tensor([[20.0, 36.0]])], [torch.tensor([2])]
    output = detector(x, mask)
    positives = int(detector.targets(output, segments, labels)[0].sum())
    detector.eval()
    detector.loss(output, segments, labels)
    assert detector.loss_normalizer == 100
    detector.train()
    losses = detector.loss(output, segments, labels)
    assert detector.loss_normalizer == pytest.approx(0.9 * 100 + 0.1 * positives)
    assert losses["total"] == losses["cls"] + losses["reg"]


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


@pytest.mark.parametrize("fields, message", [
    ({"arch": (2, 2, 3)}, "regression_range: 6 ranges for 4 levels"),
    ({"window": [9, 9]}, "2 sizes given for 6 levels"),
    ({"fpn_dim": 64}, "fpn 'identity' keeps the width"),
    ({"num_heads": 5}, "not divisible by num_heads"),
    ({"mlp_hidden": {"branch.5": 8}}, r"unknown blocks \['branch.5'\]"),
])
def test_bad_configs_name_the_field(fields, message):
    with pytest.raises(ValueError, match=message):
        DetectorConfig(num_classes=3, dim=32, **fields)


def test_every_detector_block_is_droppable_and_named_stably():
    detector = small_detector()
    names = detector.droppable_blocks()
    assert names[:3] == ["backbone.stem.0", "backbone.stem.1", "backbone.branch.0"]
    assert len(names) == 7
