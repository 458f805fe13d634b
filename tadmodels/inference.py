"""Running a model over a dataset: detections in seconds, in the ActivityNet results format, and mAP."""
from __future__ import annotations

import torch

from .data.dataset import Batch, Sample, TADDataset, collate
from .data.formats import grid_to_seconds
from .evaluation import MapResult, Segments, mean_average_precision
from .models import Detections, InferenceConfig, TADModel

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


@torch.inference_mode()
def predict(model: TADModel, dataset: TADDataset, config: InferenceConfig | None = None) -> Results:
    """Whole videos, one at a time: `{video_id: [{"label", "score", "segment"}]}`. `config`
    defaults to the detector's own test settings."""
    model.eval()
    results: Results = {}
    for index in range(len(dataset)):
        sample = dataset[index]
        batch = single_batch(model, dataset, sample).to(model.device)
        detections = model.detector.detect(model(batch.inputs, batch.mask), config)[0]
        results[sample.video.video_id] = to_results(detections, sample, dataset)
    return results


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
