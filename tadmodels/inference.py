"""Running a model over a dataset: detections in seconds, in the ActivityNet results format, and mAP.

Long videos run in sliding windows as OpenTAD tests THUMOS14 (`SlidingWindowDataset`,
`window_overlap_ratio=0.5` at test): windows of `data.inference_window` grid positions every
`int(window * (1 - overlap))`, the last one moved back to end with the video. OpenTAD keeps each
window's top-scoring candidates without NMS, maps them to seconds and runs one NMS per video over all
windows' (`test_engine.gather_ddp_results`); here each window goes through the detector's own
post-processing (`detector.detect`, which ends in its NMS, Soft-NMS as released) and the video's
windows are merged by the same NMS over their union, so a detection that two windows found is kept once. A video
that fits one window is run whole, as without windows (OpenTAD runs such a video twice when its
length is an exact multiple of the window stride; here once).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader

from .data.dataset import Batch, Sample, TADDataset, collate
from .data.formats import grid_to_seconds
from .evaluation import MapResult, Segments, mean_average_precision
from .models import Detections, InferenceConfig, TADModel
from .models.actionformer.postprocess import batched_nms

Results = dict[str, list[dict]]


def single_batch(model: TADModel, dataset: TADDataset, sample: Sample) -> Batch:
    """One whole video, padded to a length the model accepts."""
    return collate([sample], dataset.geometry, frames=model.backbone is not None)


def to_results(detections: Detections, sample: Sample, dataset: TADDataset) -> list[dict]:
    """Grid-unit detections of one video -> `[{"label", "score", "segment"}]` in seconds, clipped to the video."""
    video = sample.video
    seconds = grid_to_seconds(detections.segments.cpu().numpy() + sample.offset, dataset.fps(video),
                              dataset.geometry.stride, dataset.geometry.clip).clip(0, video.duration)
    names = dataset.annotations.label_names
    return [{"label": names[label], "score": float(score), "segment": [float(start), float(end)]}
            for (start, end), score, label in zip(seconds, detections.scores.tolist(), detections.labels.tolist())]


def window_starts(length: int, window: int | None, overlap: float) -> list[int]:
    """Grid offsets of the inference windows over `length` positions (module docstring); one
    window at 0 when `window` is None or the video fits."""
    if window is None or length <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    return [*range(0, length - window, stride), length - window]


def merge_windows(parts: list[Detections], config: InferenceConfig) -> Detections:
    """One video's detections from its windows (in video grid units) -> the detector's NMS over their union."""
    if len(parts) == 1:
        return parts[0]
    union = Detections(torch.cat([p.segments for p in parts]), torch.cat([p.scores for p in parts]),
                       torch.cat([p.labels for p in parts]))
    return batched_nms(union, config)


def _as_is(sample: Sample) -> Sample:
    return sample


def _windows(dataset: TADDataset) -> Iterator[tuple[Sample, list[Sample]]]:
    """Each video (read in `data.num_workers` workers) with its inference windows."""
    loader = DataLoader(dataset, batch_size=None, num_workers=dataset.config.num_workers, collate_fn=_as_is)
    window, overlap = dataset.config.inference_window, dataset.config.inference_overlap
    for sample in loader:
        starts = window_starts(sample.length, window, overlap)
        yield sample, [sample] if len(starts) == 1 else [dataset.span(sample, start, window) for start in starts]


@torch.inference_mode()
def predict(model: TADModel, dataset: TADDataset, config: InferenceConfig | None = None, batch_size: int = 1,
            show_progress: bool = False) -> Results:
    """Detections of every video, `{video_id: [{"label", "score", "segment"}]}` in dataset order.
    Windows (of one video or several) run `batch_size` at a time; a batch holds windows that pad to
    the same length alone, because the detector (as released) does not re-mask every padded
    position, so more padding would change a window's detections. `config` defaults to the
    detector's own test settings."""
    config = config or model.detector.config.test
    model.eval()
    frames = model.backbone is not None
    videos: dict[str, Sample] = {}
    found: dict[str, list[Detections]] = {}
    waiting: dict[str, int] = {}
    queues: dict[int, list[Sample]] = {}  # windows waiting for a batch, by padded length
    results: Results = {}
    columns = (TextColumn("predict"), BarColumn(), TextColumn("{task.completed}/{task.total} videos"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task("predict", total=len(dataset))

        def run(pieces: list[Sample]) -> None:
            batch = collate(pieces, dataset.geometry, frames=frames).to(model.device)
            for piece, detections in zip(pieces, model.detector.detect(model(batch.inputs, batch.mask), config)):
                video_id = piece.video.video_id
                found[video_id].append(_shifted(detections, piece.offset))
                waiting[video_id] -= 1
                if not waiting[video_id]:
                    results[video_id] = to_results(merge_windows(found.pop(video_id), config), videos.pop(video_id), dataset)
                    progress.advance(task)

        def run_waiting() -> None:
            for queue in queues.values():
                if queue:
                    run(queue)
                    queue.clear()

        for sample, windows in _windows(dataset):
            video_id = sample.video.video_id
            videos[video_id], found[video_id], waiting[video_id] = sample, [], len(windows)
            for window in windows:
                queue = queues.setdefault(dataset.geometry.padded(window.length), [])
                queue.append(window)
                if len(queue) == batch_size:
                    run(queue)
                    queue.clear()
            if len(videos) > 2 * batch_size:  # videos of rarer lengths wait holding their frames: bound them
                run_waiting()
        run_waiting()
    return {video.video_id: results[video.video_id] for video in dataset.videos}


def _shifted(detections: Detections, offset: int) -> Detections:
    """Window grid units -> the whole video's (the video's sample starts at offset 0)."""
    return Detections(detections.segments + offset, detections.scores, detections.labels)


def ground_truth_segments(dataset: TADDataset) -> Segments:
    names = dataset.annotations.label_names
    rows = [(v.video_id, names[label], start, end) for v in dataset.videos for (start, end), label in zip(v.segments, v.labels)]
    return Segments.from_rows(rows)


def score_results(dataset: TADDataset, results: Results, tious: list[float]) -> MapResult:
    rows = [(vid, p["label"], p["segment"][0], p["segment"][1], p["score"]) for vid, preds in results.items() for p in preds]
    return mean_average_precision(ground_truth_segments(dataset), Segments.from_rows(rows), tuple(tious))


def evaluate_model(model: TADModel, dataset: TADDataset, tious: list[float],
                   config: InferenceConfig | None = None) -> MapResult:
    return score_results(dataset, predict(model, dataset, config), tious)
