"""Mean average precision for temporal action detection, with the semantics of ActionFormer's
`ANETdetection` (libs/utils/metrics.py, itself the ActivityNet evaluator), vectorized.

Semantics:

- The ground truth is cleaned first, as ActionFormer's `remove_duplicate_annotations` does
  within each video, in row order: a segment shorter than 1 ms (`end - start < 1e-3` s) is
  dropped, and so is one whose start and end are both within 1e-3 s of a segment of the same
  label already kept (the dropped ones do not count as kept: with starts 0, 0.0008 and 0.0016 the
  second is dropped and the third kept). Annotation files repeat segments (THUMOS14's do), and a
  repeated segment would count twice in the recall.
- The classes are the labels of the cleaned ground truth; a class without predictions has AP 0.
  Predictions whose label is not one of them are ignored (labels match by name).
- Predictions for a video in `gt.ignored_videos` (a video of the annotation file outside the
  evaluated subset) are ignored. Every other prediction counts: one for a video the ground truth
  does not know, or without ground truth of its class there, is a false positive.
- Per class, predictions are ranked by descending score; ties keep row order (for a results
  file: videos in file order, then each video's list in order). ActionFormer ranks with
  `scores.argsort()[::-1]`, numpy's unstable sort reversed, whose order for equal scores depends
  on the numpy version, the array's length and the CPU's SIMD extensions (numpy 2.4 on an AVX2
  CPU puts 10 scores drawn from {0, 1, 2} in neither row order nor its reverse); a stable order
  is the one rule that gives the same mAP everywhere.
- At each tIoU threshold, in rank order, a prediction takes the unmatched ground-truth segment
  of its video and class with the highest tIoU, if that tIoU is >= the threshold (ties: the
  earlier ground-truth row; ActionFormer again takes numpy's unstable order); otherwise it is a
  false positive.
- AP is the area under the precision envelope (ActivityNet `interpolated_prec_rec`):
  `mprec = [0, prec, 0]`, `mrec = [0, rec, 1]`, `mprec` made non-increasing from the right,
  `ap = sum over steps of mrec of (mrec[i] - mrec[i-1]) * mprec[i]`.
- mAP at a threshold is the mean AP over classes; the average mAP is the mean over thresholds.
  `MapResult.per_class` lists the classes in sorted order.

Where we differ from ActionFormer on purpose: it reads classes by `label_id` (the same as by
name when names and ids correspond one to one); it counts predictions for videos of another
subset as false positives (we ignore them: a subset's mAP should not depend on what else the
results file holds); it leaves a prediction label missing from the ground truth unmapped, so
that its raw id can land on the class that has that index (we ignore the prediction); and it
lowercases the file's subset names before comparing (`load_ground_truth` compares them as written,
as the data loader does).

The matching is the sequential greedy one, but not computed with a loop over predictions: see
`_greedy_matching`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .files import load_ground_truth, load_predictions
from .segments import Segments

THUMOS14_TIOUS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
ANET_TIOUS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
# ActionFormer's `remove_duplicate_annotations` tolerance, in seconds.
DUPLICATE_TOLERANCE_S = 1e-3


@dataclass(frozen=True)
class MapResult:
    """mAP at each tIoU threshold (fractions in [0, 1]) and the AP of each class behind it."""

    tious: tuple[float, ...]
    per_tiou: tuple[float, ...]                # mAP at each threshold, in the order of `tious`
    per_class: dict[str, tuple[float, ...]]    # class name -> AP at each threshold

    @property
    def average_mAP(self) -> float:  # noqa: N802 -- the name the literature uses
        """The mean of `per_tiou`."""
        return sum(self.per_tiou) / len(self.per_tiou)

    def to_json(self) -> dict[str, Any]:
        """`{"tious": [...], "per_tiou": [...], "average_mAP": x}`, plain JSON numbers."""
        return {"tious": list(self.tious), "per_tiou": list(self.per_tiou), "average_mAP": self.average_mAP}


def mean_average_precision(gt: Segments, pred: Segments,
                           tious: tuple[float, ...] = THUMOS14_TIOUS) -> MapResult:
    """mAP of `pred` (which needs scores) against `gt` at each threshold of `tious`, with the
    semantics of the module docstring."""
    thresholds = _check_tious(tious)
    gt = without_duplicates(gt)
    if not len(gt):
        raise ValueError("mean_average_precision: the ground truth has no segments (none at least 1 ms long), "
                         "so no classes to average over")
    if pred.scores is None and len(pred):
        raise ValueError("mean_average_precision: the predictions have no scores")
    scores = pred.scores if pred.scores is not None else np.zeros(0)
    classes, gt_class = np.unique(gt.labels, return_inverse=True)
    videos, gt_video = np.unique(gt.video_ids, return_inverse=True)
    pred_class = _codes(classes, pred.labels)
    pred_video = _codes(videos, pred.video_ids)
    pred_video[pred_video < 0] = len(videos)  # one code for every other video: nothing to match there

    # Keep the predictions that count, ranked by class, then by descending score; lexsort is
    # stable, so score ties keep row order.
    counted = pred_class >= 0
    if gt.ignored_videos is not None and len(gt.ignored_videos):
        counted &= _codes(np.sort(gt.ignored_videos), pred.video_ids) < 0
    kept = np.flatnonzero(counted)
    kept = kept[np.lexsort((-scores[kept], pred_class[kept]))]
    pred_class, pred_video = pred_class[kept], pred_video[kept]

    n_classes = len(classes)
    matched = _greedy_matching(gt_video * n_classes + gt_class, gt.starts, gt.ends,
                               pred_video * n_classes + pred_class, pred.starts[kept], pred.ends[kept],
                               thresholds)

    positives = np.bincount(gt_class, minlength=n_classes)
    bounds = np.searchsorted(pred_class, np.arange(n_classes + 1))
    ap = np.stack([_average_precision(matched[:, bounds[c]:bounds[c + 1]], positives[c]) for c in range(n_classes)])
    per_tiou = ap.mean(axis=0)
    return MapResult(
        tious=tuple(float(t) for t in thresholds),
        per_tiou=tuple(float(x) for x in per_tiou),
        per_class={str(name): tuple(float(x) for x in row) for name, row in zip(classes, ap)},
    )


def evaluate_files(gt_path: str | Path, pred_path: str | Path, subset: str | None = None,
                   tious: tuple[float, ...] = THUMOS14_TIOUS) -> MapResult:
    """Read an annotation file (only the videos of `subset`, if given) and a results file, and
    score them with `mean_average_precision`."""
    return mean_average_precision(load_ground_truth(gt_path, subset), load_predictions(pred_path), tious)


def without_duplicates(gt: Segments, tolerance: float = DUPLICATE_TOLERANCE_S) -> Segments:
    """The ground truth cleaned as ActionFormer's `remove_duplicate_annotations` cleans each video:
    in row order, a segment is kept if it is at least `tolerance` long and no segment of the same
    video and label kept before it has both its start and its end within `tolerance` of its own.

    Only segments with a kept-or-dropped partner that close need the sequential rule; they are
    found by sorting on (video and label, start) and comparing each segment with the next ones
    while their starts stay within `tolerance`, and resolved in row order with a loop over them
    alone (annotation files repeat a few segments, not thousands)."""
    long_enough = np.flatnonzero(gt.ends - gt.starts >= tolerance)
    _, video = np.unique(gt.video_ids, return_inverse=True)
    _, label = np.unique(gt.labels, return_inverse=True)
    group = video * (label.max(initial=0) + 1) + label
    order = long_enough[np.lexsort((gt.starts[long_enough], group[long_enough]))]
    earlier_partners: dict[int, list[int]] = {}
    for step in range(1, len(order)):
        first, second = order[:-step], order[step:]
        # Sorted by start within a group, so once `step` is too far for every pair it stays so.
        near = (group[first] == group[second]) & (gt.starts[second] - gt.starts[first] <= tolerance)
        if not near.any():
            break
        near &= np.abs(gt.ends[second] - gt.ends[first]) <= tolerance
        for a, b in zip(first[near].tolist(), second[near].tolist()):
            earlier_partners.setdefault(max(a, b), []).append(min(a, b))
    dropped: set[int] = set()
    for row in sorted(earlier_partners):
        if any(partner not in dropped for partner in earlier_partners[row]):
            dropped.add(row)
    keep = np.zeros(len(gt), dtype=bool)
    keep[long_enough] = True
    keep[list(dropped)] = False
    return gt if keep.all() else gt.take(keep)


def _check_tious(tious: tuple[float, ...]) -> np.ndarray:
    thresholds = np.asarray(tious, dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or not ((thresholds >= 0) & (thresholds <= 1)).all():
        raise ValueError(f"tIoU thresholds must be a non-empty list of numbers in [0, 1], got {list(tious)}")
    return thresholds


def _codes(sorted_names: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Index of each of `names` in `sorted_names` (not empty), -1 where absent. Each run of equal
    names is looked up once: a results file lists each video's predictions together, and the
    binary search's string comparisons are what costs (5x less for the video ids of 43k predictions)."""
    new_run = np.ones(len(names), dtype=bool)
    new_run[1:] = names[1:] != names[:-1]
    heads = names[new_run]
    index = np.searchsorted(sorted_names, heads).clip(max=len(sorted_names) - 1)
    return np.where(sorted_names[index] == heads, index, -1)[np.cumsum(new_run) - 1]


def _tiou(start_a: np.ndarray, end_a: np.ndarray, start_b: np.ndarray, end_b: np.ndarray) -> np.ndarray:
    """Intersection over union of intervals, elementwise; 0 where the union is empty (two equal points)."""
    intersection = np.maximum(np.minimum(end_a, end_b) - np.maximum(start_a, start_b), 0.0)
    union = (end_a - start_a) + (end_b - start_b) - intersection
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def _greedy_matching(gt_group: np.ndarray, gt_start: np.ndarray, gt_end: np.ndarray,
                     pred_group: np.ndarray, pred_start: np.ndarray, pred_end: np.ndarray,
                     thresholds: np.ndarray) -> np.ndarray:
    """Which predictions are true positives at each threshold: bool `[len(thresholds), n_pred]`.

    Predictions must be given in rank order within each group; a prediction can only match a
    ground-truth segment of its own group (video and class).

    The sequential rule -- in rank order, each prediction takes the unmatched ground truth with
    the highest tIoU >= threshold -- is the greedy matching over the candidate edges (pairs with
    tIoU >= threshold) taken in the total order (prediction rank, tIoU descending, ground-truth
    row): an edge is taken iff both its ends are free when its turn comes. That matching is also
    what rounds of "take every edge that is the first remaining edge of both its ends, then drop
    the edges touching a taken end" produce: an edge first at both ends has every earlier edge
    at its ends dropped, each because it touches an edge the greedy matching takes, so the greedy
    matching takes it too; and each round takes at least the globally first edge. The rounds are
    vectorized over all edges of all groups and thresholds, and few are needed: each round
    resolves the first edge of every connected group of competing predictions.
    """
    n_thresholds, n_pred, n_gt = len(thresholds), len(pred_group), len(gt_group)
    pair_pred, pair_gt = _candidate_pairs(gt_group, gt_start, gt_end, pred_group, pred_start, pred_end,
                                          thresholds.min())
    iou = _tiou(pred_start[pair_pred], pred_end[pair_pred], gt_start[pair_gt], gt_end[pair_gt])
    candidate = iou >= thresholds.min()
    pair_pred, pair_gt, iou = pair_pred[candidate], pair_gt[candidate], iou[candidate]
    order = np.lexsort((pair_gt, -iou, pair_pred))
    pair_pred, pair_gt, iou = pair_pred[order], pair_gt[order], iou[order]

    # One graph per threshold, on disjoint node ids; concatenated in threshold order, the edges
    # stay sorted by (threshold, prediction rank, -tIoU, ground-truth row), so each prediction
    # node's edges are contiguous and in preference order.
    per_threshold = [iou >= t for t in thresholds]
    edge_pred = np.concatenate([k * n_pred + pair_pred[m] for k, m in enumerate(per_threshold)])
    edge_gt = np.concatenate([k * n_gt + pair_gt[m] for k, m in enumerate(per_threshold)])
    pred_taken = np.zeros(n_thresholds * n_pred, dtype=bool)
    gt_taken = np.zeros(n_thresholds * n_gt, dtype=bool)
    by_gt = np.argsort(edge_gt, kind="stable")  # edge indices sorted by (ground-truth node, edge order)
    while edge_pred.size:
        first_of_pred = np.ones(edge_pred.size, dtype=bool)
        first_of_pred[1:] = edge_pred[1:] != edge_pred[:-1]
        gt_sorted = edge_gt[by_gt]
        run_starts = np.ones(gt_sorted.size, dtype=bool)
        run_starts[1:] = gt_sorted[1:] != gt_sorted[:-1]
        first_of_gt = np.zeros(edge_pred.size, dtype=bool)
        first_of_gt[by_gt[run_starts]] = True
        taken = first_of_pred & first_of_gt
        pred_taken[edge_pred[taken]] = True
        gt_taken[edge_gt[taken]] = True
        keep = ~(pred_taken[edge_pred] | gt_taken[edge_gt])
        renumber = np.cumsum(keep) - 1  # old edge index -> index among the kept edges
        by_gt = renumber[by_gt[keep[by_gt]]]
        edge_pred, edge_gt = edge_pred[keep], edge_gt[keep]
    return pred_taken.reshape(n_thresholds, n_pred)


def _candidate_pairs(gt_group: np.ndarray, gt_start: np.ndarray, gt_end: np.ndarray,
                     pred_group: np.ndarray, pred_start: np.ndarray, pred_end: np.ndarray,
                     lowest_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The (prediction, ground truth) index pairs of the same group that may reach `lowest_threshold`,
    grouped by prediction: a superset, which the exact tIoU then filters.

    At threshold 0 that is every pair of the group. Above 0 only overlapping segments qualify, and
    with the ground truth sorted by (group, start) those of a prediction [s, e] start within
    [s - longest ground truth, e): a range found by binary search on the key group + 1j * start
    (numpy orders complex numbers by real, then imaginary part), so pairs far apart in a long
    video are never formed."""
    gt_order = np.lexsort((gt_start, gt_group))
    if lowest_threshold > 0:
        keys = gt_group[gt_order] + 1j * gt_start[gt_order]
        longest = (gt_end - gt_start).max(initial=0.0)
        low = np.searchsorted(keys, pred_group + 1j * (pred_start - longest))
        high = np.searchsorted(keys, pred_group + 1j * pred_end)
    else:
        low = np.searchsorted(gt_group[gt_order], pred_group, side="left")
        high = np.searchsorted(gt_group[gt_order], pred_group, side="right")
    counts = high - low
    pair_pred = np.repeat(np.arange(len(pred_group)), counts)
    # Position of each pair within its prediction's run, then into the sorted ground truth.
    within = np.arange(len(pair_pred)) - np.repeat(np.cumsum(counts) - counts, counts)
    return pair_pred, gt_order[np.repeat(low, counts) + within]


def _average_precision(true_positive: np.ndarray, positives: int) -> np.ndarray:
    """AP at each threshold from the `[n_thresholds, n_ranked]` true-positive flags of one class
    and its number of ground-truth segments."""
    n_thresholds, n_ranked = true_positive.shape
    if n_ranked == 0:
        return np.zeros(n_thresholds)
    hits = np.cumsum(true_positive, axis=1)
    return interpolated_ap(hits / np.arange(1, n_ranked + 1), hits / positives)


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> np.ndarray | float:
    """Area under the precision envelope, ActivityNet `interpolated_prec_rec`, along the last axis
    (the ranked detections): `mprec = [0, prec, 0]`, `mrec = [0, rec, 1]`, `mprec` made
    non-increasing from the right, `sum((mrec[i] - mrec[i-1]) * mprec[i])` over the steps of `mrec`.
    Returns a float for 1-D input, an array of the leading shape otherwise."""
    precision, recall = np.asarray(precision, dtype=np.float64), np.asarray(recall, dtype=np.float64)
    edge = np.ones((*precision.shape[:-1], 1))
    mprec = np.concatenate([0 * edge, precision, 0 * edge], axis=-1)
    mrec = np.concatenate([0 * edge, recall, edge], axis=-1)
    envelope = np.flip(np.maximum.accumulate(np.flip(mprec, -1), axis=-1), -1)
    # Where recall does not change the step is 0 and adds nothing, so no need to pick the changes out.
    return np.sum(np.diff(mrec, axis=-1) * envelope[..., 1:], axis=-1)
