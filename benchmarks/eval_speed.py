"""Speed of `mean_average_precision` on a THUMOS14-size input, against a plain per-prediction loop.

    .venv/bin/python benchmarks/eval_speed.py [--repeats 7] [--seed 0]

The input is synthetic and deterministic (seeded): 213 videos, 20 classes, about 3.4k ground-truth
segments, 200 predictions per video (42.6k), made of jittered copies of the ground truth (several
per segment, like the near-duplicates a detector emits) and random segments with lower scores.
Both evaluators run pinned to one core with one BLAS/OpenMP thread. The reference is our own
straightforward loop (`tadmodels.evaluation.reference`), not ActivityNet's pandas evaluator, which is not installed here.
Reported: the median in-memory time of each, their ratio, the JSON load time separately, and
the largest difference between the two results (they must agree to 1e-12).
"""
from __future__ import annotations

import os

# Before numpy is imported: its thread pools read these once.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tadmodels.evaluation import (  # noqa: E402
    ANET_TIOUS,
    THUMOS14_TIOUS,
    load_ground_truth,
    load_predictions,
    mean_average_precision,
)
from tadmodels.evaluation.reference import reference_average_precision  # noqa: E402

N_VIDEOS, N_CLASSES, GT_PER_VIDEO, PREDICTIONS_PER_VIDEO = 213, 20, 16, 200


def synthetic_thumos(seed: int) -> tuple[dict, dict]:
    """An annotation file and a results file, as JSON-ready dicts, of THUMOS14 test size."""
    rng = np.random.default_rng(seed)
    classes = [f"action_{c:02d}" for c in range(N_CLASSES)]
    database, results = {}, {}
    for v in range(N_VIDEOS):
        video_id = f"video_test_{v:07d}"
        duration = float(rng.uniform(60, 600))
        # Most THUMOS14 videos show one or two actions, repeated many times.
        own = rng.choice(N_CLASSES, size=rng.integers(1, 3), replace=False)
        n_gt = max(1, int(rng.poisson(GT_PER_VIDEO)))
        lengths = rng.lognormal(np.log(4.0), 0.6, n_gt).clip(0.5, 40)
        starts = rng.uniform(0, duration - lengths)
        gt_labels = rng.choice(own, n_gt)
        database[video_id] = {
            "subset": "test", "duration": duration, "fps": 30.0,
            "annotations": [{"label": classes[c], "label_id": int(c), "segment": [float(s), float(s + n)]}
                            for s, n, c in zip(starts, lengths, gt_labels)],
        }
        # Jittered copies: up to 6 per segment, boundaries moved by up to 30% of its length.
        copies = rng.integers(1, 7, n_gt)
        source = np.repeat(np.arange(n_gt), copies)[:PREDICTIONS_PER_VIDEO]
        jitter = rng.normal(0, 0.15, (len(source), 2)) * lengths[source, None]
        near_starts = starts[source] + jitter[:, 0]
        near_ends = np.maximum(starts[source] + lengths[source] + jitter[:, 1], near_starts + 0.1)
        near_scores = rng.beta(4, 2, len(source))
        # Random segments fill the rest, mostly of the video's own classes, with lower scores.
        n_random = PREDICTIONS_PER_VIDEO - len(source)
        random_lengths = rng.lognormal(np.log(4.0), 0.8, n_random).clip(0.3, 60)
        random_starts = rng.uniform(0, duration, n_random)
        random_labels = np.where(rng.random(n_random) < 0.7, rng.choice(own, n_random), rng.integers(0, N_CLASSES, n_random))
        predictions = list(zip(gt_labels[source], near_starts, near_ends, near_scores)) + list(zip(
            random_labels, random_starts, random_starts + random_lengths, rng.beta(2, 5, n_random)))
        order = rng.permutation(len(predictions))  # no help from the file order
        results[video_id] = [{"label": classes[predictions[i][0]], "score": float(predictions[i][3]),
                              "segment": [float(predictions[i][1]), float(predictions[i][2])]} for i in order]
    return {"database": database}, {"results": results}


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of the vectorized evaluator (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})

    gt_json, pred_json = synthetic_thumos(args.seed)
    with tempfile.TemporaryDirectory() as directory:
        gt_path, pred_path = Path(directory, "gt.json"), Path(directory, "pred.json")
        gt_path.write_text(json.dumps(gt_json))
        pred_path.write_text(json.dumps(pred_json))
        load_s = median_seconds(lambda: (load_ground_truth(gt_path, "test"), load_predictions(pred_path)), 3)
        gt, pred = load_ground_truth(gt_path, "test"), load_predictions(pred_path)
    print(f"input: {len(gt.videos)} videos, {len(set(gt.labels.tolist()))} classes, "
          f"{len(gt)} ground-truth segments, {len(pred)} predictions")
    print(f"JSON load (both files, median of 3): {load_s:.3f} s")
    print(f"{'thresholds':<22}{'vectorized s':>14}{'reference s':>14}{'ratio':>9}{'max |diff|':>12}{'avg mAP':>10}")
    for name, tious in (("THUMOS14 0.3:0.1:0.7", THUMOS14_TIOUS), ("ActivityNet 0.5:0.95", ANET_TIOUS)):
        fast_s = median_seconds(lambda: mean_average_precision(gt, pred, tious), args.repeats)
        result = mean_average_precision(gt, pred, tious)
        start = time.perf_counter()
        expected = reference_average_precision(gt, pred, tious)
        reference_s = time.perf_counter() - start
        difference = max(abs(a - b) for c in expected for a, b in zip(result.per_class[c], expected[c]))
        assert difference <= 1e-12, f"the evaluators disagree by {difference}"
        print(f"{name:<22}{fast_s:>14.4f}{reference_s:>14.3f}{reference_s / fast_s:>8.1f}x"
              f"{difference:>12.1e}{result.average_mAP:>10.4f}")
    print("target: vectorized in-memory time <= 0.25 s with the THUMOS14 thresholds")


if __name__ == "__main__":
    main()
