"""Our mAP against ActionFormer's evaluator and against our plain loop on THUMOS14-size synthetic
cases, how fast it is beside them, and how long the `tadprune eval` process takes.

    .venv/bin/python benchmarks/eval_speed.py [--reference ACTIONFORMER_CHECKOUT] [--repeats 5] [--seed 0]
    .venv/bin/python benchmarks/eval_speed.py --cli ROOT [ROOT ...] [--cli-runs 15]

Cases (seeded): 213 test videos, 20 classes, about 3.4k ground-truth segments, 200 predictions per
video (42.6k; jittered copies of the ground truth and random segments with lower scores), scores
continuous so that no two are equal (asserted: ActionFormer's order for equal scores is numpy's
unstable sort, which no other evaluator can reproduce). Each case adds what one rule is about:

- `repeated GT`: 40 copies of ground-truth segments in their own video (20 exact, 20 moved by
  under 1 ms at each end), which ActionFormer's `remove_duplicate_annotations` removes, 40 segments
  shorter than 1 ms, which it removes too, and 10 copies moved by 1.5-3 ms at one end, which it keeps;
- `absent videos`: predictions (200 each) for 5 videos the annotation file does not have;
- `other subset`: 20 validation videos in the annotation file, with predictions;
- `all`: all of the above.

With `--reference`, ActionFormer's `ANETdetection` (libs/utils/metrics.py of the given checkout,
loaded as a module from that file, so that its package's compiled NMS is not needed) evaluates each
case in this process, `num_workers=1`, with the prediction labels mapped through its
`activity_index` as its `evaluate` does; what is timed and compared is its
`wrapper_compute_average_precision`, the mAP part of `evaluate` (which also computes top-k
recalls). ActionFormer counts predictions for videos of another subset as false positives, where
we ignore them: it is given the case's predictions without those videos, and on `other subset`
also with them, to show the size of that deliberate difference. Its code calls `np.float`, gone
since numpy 1.24; the alias is restored (`np.float = float`, what it was) before it runs.

Timing: one core (`sched_setaffinity`), one BLAS/OpenMP thread; per case, our in-memory
`mean_average_precision` runs `--repeats` times before and `--repeats` times after each reference
run (interleaved), and the ratio is the reference's time over our median. JSON loading is not timed.

`--cli ROOT ...` instead times the process `python -m search.cli eval --gt GT --pred PRED --subset
test --json` on the `all` case with each ROOT as PYTHONPATH and working directory (e.g. this
checkout and an export of an older commit), and on a file pair of one annotation and one
prediction (what the process costs whatever the files: start-up, imports, the CLI), the roots and
the two sizes interleaved, `--cli-runs` rounds; reported: min and median wall time and CPU time of
each, then the minimum time of each stage of the evaluation in this process (this checkout's code).
"""
from __future__ import annotations

import os
import resource

# Before numpy is imported: its thread pools read these once.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402

from common import markdown_table  # noqa: E402
from tadmodels.evaluation import THUMOS14_TIOUS, load_ground_truth, load_predictions, mean_average_precision  # noqa: E402
from tadmodels.evaluation.reference import reference_average_precision  # noqa: E402

N_VIDEOS, N_CLASSES, GT_PER_VIDEO, PREDICTIONS_PER_VIDEO = 213, 20, 16, 200
CLASSES = [f"action_{c:02d}" for c in range(N_CLASSES)]


@dataclass(frozen=True)
class Case:
    name: str
    repeated: bool = False       # repeated and sub-millisecond ground truth
    absent_videos: int = 0       # videos with predictions and no entry in the annotation file
    other_subset_videos: int = 0  # validation videos, annotated and with predictions


CASES = (Case("repeated GT", repeated=True), Case("absent videos", absent_videos=5),
         Case("other subset", other_subset_videos=20),
         Case("all", repeated=True, absent_videos=5, other_subset_videos=20))


def synthetic_case(case: Case, seed: int) -> tuple[dict, dict]:
    """An annotation file and a results file, as JSON-ready dicts."""
    rng = np.random.default_rng(seed)
    database, results = {}, {}
    videos = [(f"video_test_{v:07d}", "test") for v in range(N_VIDEOS)]
    videos += [(f"video_validation_{v:07d}", "validation") for v in range(case.other_subset_videos)]
    for video_id, subset in videos:
        annotations, results[video_id] = annotated_video(rng)
        database[video_id] = {"subset": subset, "duration": 600.0, "fps": 30.0, "annotations": annotations}
    for v in range(case.absent_videos):
        results[f"video_absent_{v:07d}"] = random_predictions(rng, PREDICTIONS_PER_VIDEO, rng.choice(N_CLASSES, 2),
                                                              duration=600.0)
    if case.repeated:
        add_repeats(rng, database)
    scores = [p["score"] for predictions in results.values() for p in predictions]
    assert len(set(scores)) == len(scores), "two predictions with the same score"
    # ActionFormer leaves a prediction label without ground truth unmapped, so its raw id would
    # count for the class at that index: with every class annotated, ids and indices are one.
    test_labels = {a["label"] for v in database.values() if v["subset"] == "test" for a in v["annotations"]}
    assert test_labels == set(CLASSES), "a class without test ground truth"
    return {"database": database}, {"results": results}


def annotated_video(rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """One video's annotations and predictions: most THUMOS14 videos show one or two actions,
    repeated many times; a detector emits several near copies of each and weaker random segments."""
    duration = float(rng.uniform(60, 600))
    own = rng.choice(N_CLASSES, size=rng.integers(1, 3), replace=False)
    n_gt = max(1, int(rng.poisson(GT_PER_VIDEO)))
    lengths = rng.lognormal(np.log(4.0), 0.6, n_gt).clip(0.5, 40)
    starts = rng.uniform(0, duration - lengths)
    gt_labels = rng.choice(own, n_gt)
    annotations = [{"label": CLASSES[c], "label_id": int(c), "segment": [float(s), float(s + n)]}
                   for s, n, c in zip(starts, lengths, gt_labels)]
    # Jittered copies: up to 6 per segment, boundaries moved by up to 30% of its length.
    copies = rng.integers(1, 7, n_gt)
    source = np.repeat(np.arange(n_gt), copies)[:PREDICTIONS_PER_VIDEO]
    jitter = rng.normal(0, 0.15, (len(source), 2)) * lengths[source, None]
    near_starts = starts[source] + jitter[:, 0]
    near_ends = np.maximum(starts[source] + lengths[source] + jitter[:, 1], near_starts + 0.1)
    near = [{"label": CLASSES[c], "score": float(p), "segment": [float(s), float(e)]}
            for c, s, e, p in zip(gt_labels[source], near_starts, near_ends, rng.beta(4, 2, len(source)))]
    predictions = near + random_predictions(rng, PREDICTIONS_PER_VIDEO - len(source), own, duration)
    return annotations, [predictions[i] for i in rng.permutation(len(predictions))]  # no help from file order


def random_predictions(rng: np.random.Generator, count: int, own: np.ndarray, duration: float) -> list[dict]:
    """Random segments, mostly of the video's own classes, with low scores."""
    lengths = rng.lognormal(np.log(4.0), 0.8, count).clip(0.3, 60)
    starts = rng.uniform(0, duration, count)
    labels = np.where(rng.random(count) < 0.7, rng.choice(own, count), rng.integers(0, N_CLASSES, count))
    return [{"label": CLASSES[c], "score": float(p), "segment": [float(s), float(s + n)]}
            for c, s, n, p in zip(labels, starts, lengths, rng.beta(2, 5, count))]


def add_repeats(rng: np.random.Generator, database: dict) -> None:
    """40 repeats (20 exact, 20 within 1 ms at both ends), 10 near copies 1.5-3 ms off at one end
    (not repeats), and 40 segments shorter than 1 ms, each inserted at a random place in the
    annotation list of a random test video."""
    video_ids = [v for v, entry in database.items() if entry["subset"] == "test"]

    def insert(video_id: str, annotation: dict) -> None:
        annotations = database[video_id]["annotations"]
        annotations.insert(int(rng.integers(len(annotations) + 1)), annotation)

    for kind in ["exact"] * 20 + ["within"] * 20 + ["outside"] * 10:
        video_id = video_ids[rng.integers(len(video_ids))]
        annotations = database[video_id]["annotations"]
        original = annotations[rng.integers(len(annotations))]
        shift = {"exact": np.zeros(2), "within": rng.uniform(-9e-4, 9e-4, 2),
                 "outside": np.array([0.0, rng.choice([-1, 1]) * rng.uniform(1.5e-3, 3e-3)])}[kind]
        start, end = (float(x) for x in np.asarray(original["segment"]) + shift)
        insert(video_id, {**original, "segment": [start, end]})
    for _ in range(40):
        video_id = video_ids[rng.integers(len(video_ids))]
        label = database[video_id]["annotations"][0]
        start = float(rng.uniform(0, 500))
        insert(video_id, {**label, "segment": [start, start + float(rng.uniform(0, 9e-4))]})


def load_actionformer(checkout: Path) -> ModuleType:
    """ActionFormer's libs/utils/metrics.py as a module, from its own file."""
    np.float = float  # removed in numpy 1.24; ActionFormer's compute_average_precision_detection uses it
    path = checkout / "libs" / "utils" / "metrics.py"
    spec = importlib.util.spec_from_file_location("actionformer_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def actionformer_map(metrics: ModuleType, gt_path: Path, results: dict, skip_videos: set[str]) -> Callable[[], np.ndarray]:
    """A call that runs ActionFormer's mAP on `results` (minus `skip_videos`), returning mAP per tIoU."""
    import pandas as pd

    evaluator = metrics.ANETdetection(str(gt_path), "test", tiou_thresholds=np.array(THUMOS14_TIOUS), num_workers=1)
    label_ids = {name: c for c, name in enumerate(CLASSES)}  # the label_id the annotation file gives each name
    rows = [(video_id, label_ids[p["label"]], p["segment"][0], p["segment"][1], p["score"])
            for video_id, predictions in results.items() if video_id not in skip_videos for p in predictions]
    frame = pd.DataFrame(rows, columns=["video-id", "label", "t-start", "t-end", "score"])
    frame["label"] = frame["label"].replace(evaluator.activity_index)  # as its evaluate() does
    return lambda: evaluator.wrapper_compute_average_precision(frame).mean(axis=1)


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def compare(args: argparse.Namespace, directory: Path) -> None:
    metrics = load_actionformer(args.reference) if args.reference else None
    rows = []
    for case in CASES:
        gt_json, pred_json = synthetic_case(case, args.seed)
        gt_path, pred_path = directory / f"{case.name}.gt.json", directory / f"{case.name}.pred.json"
        gt_path.write_text(json.dumps(gt_json))
        pred_path.write_text(json.dumps(pred_json))
        gt, pred = load_ground_truth(gt_path, "test"), load_predictions(pred_path)
        ours = mean_average_precision(gt, pred, THUMOS14_TIOUS)
        loop = reference_average_precision(gt, pred, THUMOS14_TIOUS)
        loop_diff = max(abs(a - b) for name, aps in loop.items() for a, b in zip(ours.per_class[name], aps))
        n_annotations = sum(len(v["annotations"]) for v in gt_json["database"].values() if v["subset"] == "test")
        row = [case.name, f"{n_annotations} / {len(pred)}", f"{ours.average_mAP:.6f}", f"{loop_diff:.1e}"]
        if metrics is not None:
            other_subset = {v for v, entry in gt_json["database"].items() if entry["subset"] != "test"}
            ours_s, reference_s, reference_map = [], [], None
            for _ in range(args.reference_runs):
                ours_s += [timed(lambda: mean_average_precision(gt, pred, THUMOS14_TIOUS))[0]
                           for _ in range(args.repeats)]
                seconds, reference_map = timed(actionformer_map(metrics, gt_path, pred_json["results"], other_subset))
                reference_s.append(seconds)
                ours_s += [timed(lambda: mean_average_precision(gt, pred, THUMOS14_TIOUS))[0]
                           for _ in range(args.repeats)]
            difference = max(np.abs(np.asarray(ours.per_tiou) - reference_map).max(),
                             abs(ours.average_mAP - reference_map.mean()))
            with_other = ""
            if case.other_subset_videos and not case.repeated:  # the deliberate difference, once
                counted = actionformer_map(metrics, gt_path, pred_json["results"], set())()
                with_other = f" ({abs(ours.average_mAP - counted.mean()):.1e} with them as false positives)"
            print(f"{case.name}: ActionFormer mAP per tIoU {reference_map.tolist()}, ours {list(ours.per_tiou)}")
            row += [f"{reference_map.mean():.6f}", f"{difference:.1e}{with_other}",
                    f"{statistics.median(ours_s):.4f}", f"{statistics.median(reference_s):.1f}",
                    f"{statistics.median(reference_s) / statistics.median(ours_s):.0f}x"]
        rows.append(row)
    header = ["case", "GT segments / predictions", "our avg mAP", "max |AP diff| vs our loop"]
    if metrics is not None:
        header += ["ActionFormer avg mAP", "max |mAP diff| vs ActionFormer", "ours s (median)",
                   "ActionFormer s", "ratio"]
    print(markdown_table(header, rows))


def time_cli(args: argparse.Namespace, directory: Path) -> None:
    files = write_cli_files(directory, args.seed)
    seconds: dict[tuple[Path, str], list[float]] = {(root, size): [] for root in args.cli for size in files}
    cpu_seconds = {key: [] for key in seconds}  # less sensitive to other load
    outputs = {}
    for _ in range(args.cli_runs):
        for root in args.cli:
            for size, (gt_path, pred_path) in files.items():
                command = [sys.executable, "-m", "search.cli", "eval", "--gt", str(gt_path), "--pred", str(pred_path),
                           "--subset", "test", "--json"]
                environment = {**os.environ, "PYTHONPATH": str(root)}
                before, start = children_cpu_seconds(), time.perf_counter()
                done = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, check=True)
                seconds[root, size].append(time.perf_counter() - start)
                cpu_seconds[root, size].append(children_cpu_seconds() - before)
                outputs[root, size] = done.stdout.splitlines()[-1]
    rows = [[str(root), size, f"{min(s):.3f}", f"{statistics.median(s):.3f}", f"{min(cpu_seconds[root, size]):.3f}",
             f"{statistics.median(cpu_seconds[root, size]):.3f}", outputs[root, size]]
            for (root, size), s in seconds.items()]
    print(markdown_table(["PYTHONPATH", "case", "min s", "median s", "CPU min s", "CPU median s", "--json line"], rows))
    print(f"In this process (PYTHONPATH {os.environ.get('PYTHONPATH', '')!r}), THUMOS14 size, min of {args.cli_runs} "
          f"runs: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in stage_seconds(*files["THUMOS14"], args.cli_runs)))


def write_cli_files(directory: Path, seed: int) -> dict[str, tuple[Path, Path]]:
    """(annotation file, results file) of the `all` case and of one annotation with one prediction.
    Their dicts are dropped on return: the millions of objects they hold would slow the garbage
    collector's passes in the in-process stage timings."""
    tiny_gt = {"database": {"v": {"subset": "test", "annotations": [{"label": "a", "segment": [1.0, 2.0]}]}}}
    tiny_pred = {"results": {"v": [{"label": "a", "score": 0.5, "segment": [1.0, 2.0]}]}}
    files = {}
    for size, (gt, pred) in [("THUMOS14", synthetic_case(CASES[-1], seed)), ("1 prediction", (tiny_gt, tiny_pred))]:
        files[size] = directory / f"{size}.gt.json", directory / f"{size}.pred.json"
        for path, content in zip(files[size], (gt, pred)):
            path.write_text(json.dumps(content))
    return files


def stage_seconds(gt_path: Path, pred_path: Path, runs: int) -> list[tuple[str, float]]:
    """Where the size-dependent time of the evaluation goes: the minimum over `runs` of each stage."""
    gt, pred = load_ground_truth(gt_path, "test"), load_predictions(pred_path)
    stages = {"json.loads of the results file (collector running)": lambda: json.loads(pred_path.read_text()),
              "load_predictions (with its decoding)": lambda: load_predictions(pred_path),
              "load_ground_truth": lambda: load_ground_truth(gt_path, "test"),
              "mean_average_precision": lambda: mean_average_precision(gt, pred, THUMOS14_TIOUS)}
    return [(name, min(timed(stage)[0] for _ in range(runs))) for name, stage in stages.items()]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, help="a checkout of happyharrycn/actionformer_release")
    parser.add_argument("--repeats", type=int, default=5, help="our runs before and after each reference run")
    parser.add_argument("--reference-runs", type=int, default=1, help="ActionFormer runs per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli", type=Path, nargs="+", help="time the eval process with these roots instead")
    parser.add_argument("--cli-runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        if args.cli:
            time_cli(args, Path(directory))
            return
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})
        compare(args, Path(directory))


if __name__ == "__main__":
    main()
