"""A plain per-prediction loop with the semantics of `mean_average_precision`, written for reading
rather than speed: the oracle the tests (which cannot reach ActionFormer's evaluator) and the
evaluation benchmark check the vectorized code against."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .segments import Segments

TOLERANCE_S = 1e-3  # ActionFormer's remove_duplicate_annotations


def reference_average_precision(gt: Segments, pred: Segments, tious: Sequence[float]) -> dict[str, list[float]]:
    """AP per class per threshold with a plain loop: the ground truth cleaned of short and
    duplicated segments; per class, predictions (except those of ignored videos) in descending
    score order (stable), and for each of them and each threshold, the unmatched ground truth of
    its video with the highest tIoU (ties: the earlier row), if that tIoU reaches the threshold."""
    kept = _cleaned_rows(gt)
    ignored = set() if gt.ignored_videos is None else set(gt.ignored_videos.tolist())
    result = {}
    for name in sorted({str(gt.labels[row]) for row in kept}):
        by_video = defaultdict(list)  # video -> [(row, start, end)] of this class
        for row in kept:
            if gt.labels[row] == name:
                by_video[gt.video_ids[row]].append((row, float(gt.starts[row]), float(gt.ends[row])))
        rows = [int(r) for r in np.flatnonzero(pred.labels == name) if pred.video_ids[r] not in ignored]
        rows.sort(key=lambda r: -pred.scores[r])
        taken = [set() for _ in tious]
        hits = [[] for _ in tious]
        for r in rows:
            start, end = float(pred.starts[r]), float(pred.ends[r])
            candidates = [(_tiou(start, end, gt_start, gt_end), gt_row)
                          for gt_row, gt_start, gt_end in by_video[pred.video_ids[r]]]
            for k, threshold in enumerate(tious):
                best_tiou, best = -1.0, None
                for tiou, gt_row in candidates:
                    if tiou >= threshold and tiou > best_tiou and gt_row not in taken[k]:
                        best_tiou, best = tiou, gt_row
                if best is not None:
                    taken[k].add(best)
                hits[k].append(best is not None)
        positives = sum(len(segments) for segments in by_video.values())
        result[name] = [_interpolated_ap(h, positives) for h in hits]
    return result


def _cleaned_rows(gt: Segments) -> list[int]:
    """Rows kept by ActionFormer's rule, video by video in row order: at least 1 ms long, and not
    within 1 ms at both ends of a kept segment of the same label."""
    kept_by_video = defaultdict(list)
    for row in range(len(gt)):
        start, end, label = float(gt.starts[row]), float(gt.ends[row]), gt.labels[row]
        if end - start < TOLERANCE_S:
            continue
        if any(abs(start - float(gt.starts[k])) <= TOLERANCE_S and abs(end - float(gt.ends[k])) <= TOLERANCE_S
               and gt.labels[k] == label for k in kept_by_video[gt.video_ids[row]]):
            continue
        kept_by_video[gt.video_ids[row]].append(row)
    return sorted(row for rows in kept_by_video.values() for row in rows)


def _tiou(start: float, end: float, gt_start: float, gt_end: float) -> float:
    intersection = max(min(end, gt_end) - max(start, gt_start), 0.0)
    union = (end - start) + (gt_end - gt_start) - intersection
    return intersection / union if union > 0 else 0.0


def _interpolated_ap(hits: list[bool], positives: int) -> float:
    found, precision, recall = 0, [], []
    for rank, hit in enumerate(hits, start=1):
        found += hit
        precision.append(found / rank)
        recall.append(found / positives)
    mprec, mrec = [0.0, *precision, 0.0], [0.0, *recall, 1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mprec[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
