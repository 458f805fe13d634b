"""A plain per-prediction loop with the semantics of `mean_average_precision`, written for reading
rather than speed: the oracle the tests check the vectorized matching against, and the baseline of
the evaluation speed benchmark."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .segments import Segments


def reference_average_precision(gt: Segments, pred: Segments, tious: Sequence[float]) -> dict[str, list[float]]:
    """AP per class per threshold with a plain loop: per class, predictions in descending score
    order (stable), and for each of them and each threshold, the unmatched ground truth of its
    video with the highest tIoU (ties: the earlier row), if that tIoU reaches the threshold."""
    videos = set(gt.videos.tolist())
    result = {}
    for name in sorted(set(gt.labels.tolist())):
        by_video = defaultdict(list)  # video -> [(row, start, end)] of this class
        for row in np.flatnonzero(gt.labels == name):
            by_video[gt.video_ids[row]].append((int(row), float(gt.starts[row]), float(gt.ends[row])))
        rows = [int(r) for r in np.flatnonzero(pred.labels == name) if pred.video_ids[r] in videos]
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
        positives = int((gt.labels == name).sum())
        result[name] = [_interpolated_ap(h, positives) for h in hits]
    return result


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
