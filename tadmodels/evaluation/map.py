"""Mean average precision for temporal action detection, with the ActivityNet semantics, vectorized.

Semantics (those of the ActivityNet `compute_average_precision_detection`, with its ambiguous
tie orders fixed):

- The classes are the labels of the ground truth. Predictions whose label is not one of them,
  or whose video is not in the ground truth, are ignored; a class without predictions has AP 0.
- Per class, predictions are ranked by descending score; ties keep row order (for a results
  file: videos in file order, then each video's list in order).
- At each tIoU threshold, in rank order, a prediction takes the unmatched ground-truth segment
  of its video and class with the highest tIoU, if that tIoU is >= the threshold (ties: the
  earlier ground-truth row); otherwise it is a false positive.
- AP is the area under the precision envelope (ActivityNet `interpolated_prec_rec`):
  `mprec = [0, prec, 0]`, `mrec = [0, rec, 1]`, `mprec` made non-increasing from the right,
  `ap = sum over steps of mrec of (mrec[i] - mrec[i-1]) * mprec[i]`.
- mAP at a threshold is the mean AP over classes; the average mAP is the mean over thresholds.
  `MapResult.per_class` lists the classes in sorted order.

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
    if not len(gt):
        raise ValueError("mean_average_precision: the ground truth has no segments, so no classes to average over")
    if pred.scores is None and len(pred):
        raise ValueError("mean_average_precision: the predictions have no scores")
    scores = pred.scores if pred.scores is not None else np.zeros(0)
    classes, gt_class = np.unique(gt.labels, return_inverse=True)
    videos = gt.videos
    gt_video = np.searchsorted(videos, gt.video_ids)
    pred_class = _codes(classes, pred.labels)
    pred_video = _codes(videos, pred.video_ids)

    # Keep the predictions that can count, ranked by class, then by descending score; lexsort is
    # stable, so score ties keep row order.
    kept = np.flatnonzero((pred_class >= 0) & (pred_video >= 0))
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


def _check_tious(tious: tuple[float, ...]) -> np.ndarray:
    thresholds = np.asarray(tious, dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or not ((thresholds >= 0) & (thresholds <= 1)).all():
        raise ValueError(f"tIoU thresholds must be a non-empty list of numbers in [0, 1], got {list(tious)}")
    return thresholds


def _codes(sorted_names: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Index of each of `names` in `sorted_names` (not empty), -1 where absent."""
    index = np.searchsorted(sorted_names, names).clip(max=len(sorted_names) - 1)
    return np.where(sorted_names[index] == names, index, -1)


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
    pair_pred, pair_gt = _same_group_pairs(gt_group, pred_group)
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


def _same_group_pairs(gt_group: np.ndarray, pred_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (prediction, ground truth) index pair of the same group, by prediction, then ground-truth row."""
    n_groups = int(max(gt_group.max(initial=-1), pred_group.max(initial=-1))) + 1
    gt_by_group = np.argsort(gt_group, kind="stable")
    counts = np.bincount(gt_group, minlength=n_groups)
    first = np.cumsum(counts) - counts  # where each group starts in gt_by_group
    per_pred = counts[pred_group]
    pair_pred = np.repeat(np.arange(len(pred_group)), per_pred)
    # Position of each pair within its prediction's run, then into that group's ground truth.
    run_start = np.repeat(np.cumsum(per_pred) - per_pred, per_pred)
    within = np.arange(len(pair_pred)) - run_start
    pair_gt = gt_by_group[np.repeat(first[pred_group], per_pred) + within]
    return pair_pred, pair_gt


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
