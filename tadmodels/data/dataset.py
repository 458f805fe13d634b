"""Videos as training samples: inputs on the feature grid, segments in grid units, padded batches."""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from .config import DataConfig
from .formats import Annotations, VideoRecord, load_video_array, seconds_to_grid


@dataclass(frozen=True)
class GridGeometry:
    """How a video's time axis maps onto feature positions: position i covers frames
    [i * stride, i * stride + clip). Precomputed features take it from the dataset config,
    end-to-end models from the backbone's temporal stride."""

    stride: int
    clip: int
    multiple: int  # padded grid lengths are multiples of this (the model's largest stride)

    def padded(self, length: int) -> int:
        """The grid length a sample of `length` positions is padded to on its own."""
        return -(-length // self.multiple) * self.multiple


@dataclass
class Sample:
    video: VideoRecord
    inputs: Tensor      # [T, C] float features or [T * stride, H, W, 3] uint8 frames (stored or decoded)
    length: int         # valid grid positions
    segments: Tensor    # [N, 2] grid units, relative to `offset`
    labels: Tensor      # [N]
    offset: int         # grid position of inputs[0] in the whole video


@dataclass
class Batch:
    samples: list[Sample]
    inputs: Tensor      # padded to a common grid length
    mask: Tensor        # [B, T] bool

    @property
    def segments(self) -> list[Tensor]:
        return [s.segments for s in self.samples]

    @property
    def labels(self) -> list[Tensor]:
        return [s.labels for s in self.samples]

    def to(self, device: torch.device) -> "Batch":
        """The batch with what a forward pass and its loss read (inputs, mask, targets) on `device`."""
        samples = [replace(s, segments=s.segments.to(device), labels=s.labels.to(device)) for s in self.samples]
        return Batch(samples, self.inputs.to(device), self.mask.to(device))


class TADDataset(Dataset[Sample]):
    """One subset of a dataset. With `window` set, each access takes a random crop of that many
    grid positions (training); without, the whole video (inference)."""

    def __init__(self, config: DataConfig, annotations: Annotations, subset: str, geometry: GridGeometry,
                 window: int | None = None, seed: int = 0) -> None:
        self.config = config
        self.annotations = annotations
        self.videos = annotations.subset(subset)
        self.geometry = geometry
        self.window = window
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.videos)

    def head(self, count: int) -> "TADDataset":
        """The same dataset restricted to its first `count` videos."""
        subset = copy.copy(self)
        subset.videos = self.videos[:count]
        return subset

    def fps(self, video: VideoRecord) -> float:
        return self.config.fps or video.fps

    @property
    def frames_per_position(self) -> int:
        """Input steps per grid position: the backbone's temporal stride for frames, 1 for features."""
        return self.geometry.stride if self.config.end_to_end else 1

    def __getitem__(self, index: int) -> Sample:
        video = self.videos[index]
        array = load_video_array(self.config, video)
        length = -(-array.shape[0] // self.frames_per_position)
        offset = 0
        if self.window is not None and length > self.window:
            offset = int(self.rng.integers(0, length - self.window + 1))
            length = self.window
        step = self.frames_per_position
        inputs = torch.from_numpy(np.array(array[offset * step:(offset + length) * step]))
        grid = seconds_to_grid(video.segments, self.fps(video), self.geometry.stride, self.geometry.clip) - offset
        segments, labels = _clip_segments(grid, video.labels, length)
        return Sample(video, inputs, length, torch.from_numpy(segments).float(), torch.from_numpy(labels).long(), offset)

    def span(self, sample: Sample, start: int, length: int) -> Sample:
        """Grid positions [start, start + length) of a sample (cut at its end); the inputs are a view."""
        step = self.frames_per_position
        length = min(length, sample.length - start)
        segments, labels = _clip_segments(sample.segments.numpy() - start, sample.labels.numpy(), length)
        return Sample(sample.video, sample.inputs[start * step:(start + length) * step], length,
                      torch.from_numpy(segments).float(), torch.from_numpy(labels).long(), sample.offset + start)


def seed_worker(worker_id: int) -> None:
    """`worker_init_fn` of DataLoaders over a `TADDataset`: each worker draws its random crops from
    its own seed (torch's per-worker seed, new each epoch and fixed by the loader's generator)
    instead of the copy of the parent's generator every worker would otherwise repeat."""
    info = get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)


def _clip_segments(segments: np.ndarray, labels: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut segments to [0, length] and drop those left with no extent (crops cut actions)."""
    clipped = segments.reshape(-1, 2).clip(0, length)
    keep = clipped[:, 1] - clipped[:, 0] > 0
    return clipped[keep], labels[keep]


def collate(samples: list[Sample], geometry: GridGeometry, frames: bool, min_length: int = 0) -> Batch:
    """Zero-pad every sample to one grid length: the longest (at least `min_length`), rounded up
    to the model's multiple. Frames are padded in frames, `stride` per grid position."""
    padded = geometry.padded(max([s.length for s in samples] + [min_length]))
    per_position = geometry.stride if frames else 1
    first = samples[0].inputs
    inputs = first.new_zeros((len(samples), padded * per_position, *first.shape[1:]))
    mask = torch.zeros(len(samples), padded, dtype=torch.bool)
    for i, sample in enumerate(samples):
        inputs[i, :sample.inputs.shape[0]] = sample.inputs
        mask[i, :sample.length] = True
    return Batch(samples, inputs, mask)
