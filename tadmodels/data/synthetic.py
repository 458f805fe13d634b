"""Deterministic synthetic TAD datasets, written in exactly the formats real data uses.

Each preset writes `annotations.json`, one `.npy` per video under `frames/` or `features/` (or
one H.264 `.mp4` per video under `videos/`), and `dataset.json` (the facts a `DataConfig` needs). The same preset and seed give byte-identical files,
and `max_videos` gives a prefix of the same dataset, because every video draws from its own
generator derived from (seed, subset, index).

The classes are built so that no single time step reveals them, which is what makes temporal
context matter (and dropping blocks cost something). Both flavours use the same rule: class (a, b)
shows "a" in the first half of the action and "b" in the second, and (b, a) is another class.
- frames: a square of colour a, then colour b, moving in a random direction on a dark noisy
  background; distractors outside actions are static squares of one colour. One frame shows one
  colour, which both orders (and the distractors) share; only the order across frames tells.
- features: prototype a, then prototype b, plus noise; the background emits noise and short
  bursts of single prototypes. A single vector can say "prototype a", never which class.
(Motion direction alone made a harder frames task: a tiny ViT trained from scratch on a CPU for
minutes did not learn it, while it learns colour order, and the pretrained backbones of real data
carry such appearance cues.)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .config import DataConfig, SyntheticSource, VideoDecoding
from .formats import VideoRecord, seconds_to_grid, write_annotations
from .video import write_video

# Directions a frames-flavour square may move in, as (dx, dy) in pixels, and the colours of the
# squares: class (a, b) uses the ordered pair of colours, as features use prototypes.
DIRECTIONS: tuple[tuple[int, int], ...] = ((1, 0), (-1, 0), (0, 1), (0, -1))
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("white", (230, 230, 230)), ("red", (230, 50, 50)), ("green", (50, 220, 50)),
    ("blue", (60, 90, 240)), ("yellow", (230, 220, 40)),
)


@dataclass(frozen=True)
class LogNormal:
    """A log-normal distribution of durations in seconds, truncated to [low, high] by rejection
    (clipping would pile probability onto the bounds)."""

    median: float
    sigma: float
    low: float
    high: float

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        values = np.empty(0)
        while len(values) < size:
            draws = self.median * np.exp(self.sigma * rng.standard_normal(2 * size + 4))
            values = np.concatenate([values, draws[(draws >= self.low) & (draws <= self.high)]])
        return values[:size]


@dataclass(frozen=True)
class SyntheticPreset:
    """Every knob of one synthetic dataset.

    `fps`, `feature_stride` and `clip_length` are what a `DataConfig` for this dataset should say
    (`data_config` builds one). For features they describe how the `[T, C]` arrays were laid out
    (position i covers frames [i * stride, i * stride + clip)); for frames, the grid of the tiny
    end-to-end ViT the preset is designed for (tubelet 2: stride 2, clip 2). `videos` renders the
    frames flavour and writes each video as an H.264 file, which the loaders decode.
    """

    name: str
    kind: Literal["frames", "features", "videos"]
    num_classes: int
    # (subset, number of videos), in generation order: training, test, and optionally held-out
    # videos. A subset added last leaves the others' videos as they were (one generator per video).
    subsets: tuple[tuple[str, int], ...]
    fps: float
    feature_stride: int
    clip_length: int
    video_seconds: LogNormal
    instance_seconds: LogNormal
    instances_per_minute: float           # Poisson rate of actions per minute of video ...
    min_instances: int                    # ... clamped to this range (and to what fits)
    max_instances: int | None
    min_gap_s: float                      # between actions, distractors and the video's ends
    distractors_per_minute: float         # Poisson rate per minute of background
    # frames flavour
    frame_size: int = 32
    # A square at least as wide as a ViT patch (8 px for the tiny preset) always covers one patch
    # whole: with 6 px squares straddling patches, a tiny ViT trained from scratch for minutes
    # found the action but not its colours (about 0.3 mAP against 1.0 at 12 px).
    square_size: int = 12
    travel_px: int = 12                   # how far a square moves during an action
    background: float = 24.0
    frame_noise: float = 6.0              # std of per-pixel Gaussian noise, in grey levels
    # features flavour
    channels: int = 64
    # Gaussian noise with this expected norm relative to a (unit-norm) prototype: per-channel std
    # feature_noise / sqrt(channels), so one time step tells its prototype apart equally well at
    # any width while the detector's input projection must still learn to ignore most of the energy.
    feature_noise: float = 2.0

    def __post_init__(self) -> None:
        if self.num_classes % 2:
            raise ValueError(f"preset {self.name}: classes come as (a, b), (b, a) pairs; {self.num_classes} is odd")
        if self.renders_frames and self.num_prototypes > len(PALETTE):
            raise ValueError(f"preset {self.name}: {self.num_classes} classes need {self.num_prototypes} colours, "
                             f"the palette has {len(PALETTE)}")
        if self.renders_frames and self.travel_px + self.square_size > self.frame_size:
            raise ValueError(f"preset {self.name}: a square cannot travel {self.travel_px} px in {self.frame_size} px")
        needed = self.min_instances * self.instance_seconds.high + (self.min_instances + 1) * self.min_gap_s
        if needed > self.video_seconds.low:
            raise ValueError(f"preset {self.name}: {self.min_instances} instances need {needed} s "
                             f"but videos can be {self.video_seconds.low} s")

    @property
    def renders_frames(self) -> bool:
        """Frames (stored as `.npy` or written as videos) rather than features."""
        return self.kind != "features"

    @property
    def num_prototypes(self) -> int:
        """The fewest prototypes (features) or colours (frames) whose ordered pairs give every class."""
        return next(k for k in range(2, self.num_classes + 2) if k * (k - 1) >= self.num_classes)

    @property
    def class_pairs(self) -> list[tuple[int, int]]:
        """Class id -> (first-half prototype or colour, second-half one); (a, b) and (b, a) are
        neighbouring classes."""
        k = self.num_prototypes
        pairs = [pair for a in range(k) for b in range(a + 1, k) for pair in ((a, b), (b, a))]
        return pairs[:self.num_classes]

    @property
    def label_names(self) -> list[str]:
        if self.kind == "features":
            return [f"p{a}_then_p{b}" for a, b in self.class_pairs]
        return [f"{PALETTE[a][0]}_then_{PALETTE[b][0]}" for a, b in self.class_pairs]

    def data_config(self, root: Path, seed: int = 0) -> DataConfig:
        """The `DataConfig` that reads this dataset from `root` (and regenerates it when missing)."""
        # Videos are decoded at the size they were written: no resize, the whole frame as the crop.
        video = VideoDecoding(short_side=self.frame_size, crop=self.frame_size) if self.kind == "videos" else None
        return DataConfig(root=root, kind=self.kind, fps=self.fps, feature_stride=self.feature_stride,
                          clip_length=self.clip_length, train_subset=self.subsets[0][0],
                          test_subset=self.subsets[1][0],
                          heldout_subset=self.subsets[2][0] if len(self.subsets) > 2 else None,
                          labels=self.label_names, video=video,
                          synthetic=SyntheticSource(preset=self.name, seed=seed))


# 48 test videos (about 100 actions) resolve mAP differences of about half a point; with 16 the
# compressed demo models all tied at 1.00.
_DEMO_TIMELINE = dict(
    num_classes=4, subsets=(("validation", 32), ("test", 48)), fps=8.0,
    video_seconds=LogNormal(median=17.0, sigma=0.25, low=12.0, high=24.0),
    instance_seconds=LogNormal(median=3.2, sigma=0.3, low=2.0, high=5.0),
    instances_per_minute=7.0, min_instances=1, max_instances=3, min_gap_s=1.0, distractors_per_minute=10.0,
)
# THUMOS14: 200 validation / 213 test videos, 20 classes, durations with a median near 3 minutes,
# about 15 instances per video (3,358 over the 213 test videos) of mostly 1-10 s (median ~4 s).
# A truncated log-normal with sigma 0.6 has a mean near 215 s, so 4.5 per minute gives ~15 per video (fewer where they do not fit).
_THUMOS_TIMELINE = dict(
    num_classes=20, subsets=(("validation", 200), ("test", 213)),
    video_seconds=LogNormal(median=180.0, sigma=0.6, low=30.0, high=900.0),
    instance_seconds=LogNormal(median=4.0, sigma=0.55, low=1.0, high=16.0),
    instances_per_minute=4.5, min_instances=1, max_instances=None, min_gap_s=1.0, distractors_per_minute=3.0,
)

# Noisier than the default, so that depth matters: the base model still reaches ~0.99 in its
# 3 minutes, and dropping its first 1 / 2 blocks without alignment cost 0.2 / 2.4 points of
# mAP at 6 grey levels, 17 / 53 points at 32.
_DEMO_FRAMES = dict(feature_stride=2, clip_length=2, frame_noise=32.0, **_DEMO_TIMELINE)

PRESETS: dict[str, SyntheticPreset] = {
    preset.name: preset for preset in (
        SyntheticPreset(name="demo", kind="frames", **_DEMO_FRAMES),
        # The same videos (same seed, same frames before encoding) as H.264 files.
        SyntheticPreset(name="demo-videos", kind="videos", **_DEMO_FRAMES),
        # Less noise than thumos-like-features: 32 training videos are too few to learn to ignore more.
        SyntheticPreset(name="demo-features", kind="features", feature_stride=1, clip_length=1, channels=64,
                        feature_noise=1.6, **_DEMO_TIMELINE),
        # Search benchmark (studies/bench.yaml): so noisy that one step says little and the detector's
        # blocks must pool over time, so its base model is far from saturated (mAP near 0.68) and
        # its blocks differ in importance (benchmarks/RESULTS.md, "The bench task"). Its base model
        # fits its training videos (mAP 1.0), so a search decides on 32 held-out videos, never on
        # the test videos it is reported on.
        SyntheticPreset(name="bench", kind="features", feature_stride=1, clip_length=1, channels=64,
                        feature_noise=5.5, **{**_DEMO_TIMELINE, "num_classes": 6,
                                              "subsets": (*_DEMO_TIMELINE["subsets"], ("heldout", 32))}),
        SyntheticPreset(name="thumos-like", kind="frames", fps=10.0, feature_stride=2, clip_length=2,
                        **_THUMOS_TIMELINE),
        # THUMOS14 I3D convention: 2048 channels, 16-frame clips every 4 frames at 30 fps.
        SyntheticPreset(name="thumos-like-features", kind="features", fps=30.0, feature_stride=4, clip_length=16,
                        channels=2048, **_THUMOS_TIMELINE),
    )
}


@dataclass(frozen=True)
class Timeline:
    """What happens when in one video, in whole frames: actions and distractors, each a
    half-open frame interval [start, end), all disjoint and at least `min_gap_s` apart."""

    num_frames: int
    fps: float
    actions: np.ndarray      # int64 [N, 2] frame intervals, in time order
    labels: np.ndarray       # int64 [N] class ids
    distractors: np.ndarray  # int64 [M, 2] frame intervals, in time order

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    @property
    def segments(self) -> np.ndarray:
        """Actions in seconds, float64 [N, 2]: frame k spans [k / fps, (k + 1) / fps)."""
        return self.actions / self.fps


def preset_named(name: str) -> SyntheticPreset:
    """The registered preset `name`; the error lists the ones there are."""
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; the presets are {sorted(PRESETS)}")
    return PRESETS[name]


def make_timeline(preset: SyntheticPreset, rng: np.random.Generator) -> Timeline:
    """Draw one video's length, its actions (count, lengths, classes, places) and its
    distractors, without rendering anything."""
    fps = preset.fps
    num_frames = max(1, round(float(preset.video_seconds.sample(rng, 1)[0]) * fps))
    gap = math.ceil(preset.min_gap_s * fps)
    count = int(rng.poisson(preset.instances_per_minute * num_frames / fps / 60))
    count = max(preset.min_instances, count if preset.max_instances is None else min(count, preset.max_instances))
    lengths = _frame_lengths(preset, rng, count)
    actions = _place(rng, 0, num_frames, lengths, gap)
    labels = rng.integers(0, preset.num_classes, size=len(actions))
    # Distractors go into the background between actions (and the video's ends), kept `gap` away
    # from actions so that they never touch an action's boundary.
    bounds = [0, *actions.reshape(-1).tolist(), num_frames]
    distractors = []
    for free_start, free_end in zip(bounds[::2], bounds[1::2]):
        count = int(rng.poisson(preset.distractors_per_minute * (free_end - free_start) / fps / 60))
        distractors.append(_place(rng, free_start, free_end, _frame_lengths(preset, rng, count), gap))
    return Timeline(num_frames, fps, actions, labels.astype(np.int64), np.concatenate(distractors).reshape(-1, 2))


def _frame_lengths(preset: SyntheticPreset, rng: np.random.Generator, count: int) -> np.ndarray:
    seconds = preset.instance_seconds.sample(rng, count)
    return np.maximum(2, np.round(seconds * preset.fps)).astype(np.int64)


def _place(rng: np.random.Generator, start: int, end: int, lengths: np.ndarray, gap: int) -> np.ndarray:
    """Lay intervals of `lengths` frames into [start, end) in order, at random, at least `gap`
    frames from each other and from both ends; the last lengths are left out while they do not fit."""
    span = end - start
    count = len(lengths)
    while count and int(lengths[:count].sum()) + (count + 1) * gap > span:
        count -= 1
    lengths = lengths[:count]
    slack = span - int(lengths.sum()) - (count + 1) * gap
    # Sorted uniform cuts of the slack: the slack before each interval, spread at random.
    cuts = np.sort(rng.integers(0, slack + 1, size=count))
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    starts = start + cuts + gap * np.arange(1, count + 1) + before
    return np.stack([starts, starts + lengths], axis=1).astype(np.int64).reshape(-1, 2)


def render(preset: SyntheticPreset, timeline: Timeline, rng: np.random.Generator,
           prototypes: np.ndarray | None = None) -> np.ndarray:
    """The array one video's `.npy` holds: uint8 frames [T, H, W, 3] (what a video file is
    encoded from) or float32 features [T, C] (`prototypes` from `make_prototypes` for the features
    flavour)."""
    if preset.renders_frames:
        return _render_frames(preset, timeline, rng)
    if prototypes is None:
        raise ValueError(f"preset {preset.name}: rendering features needs the prototypes")
    return _render_features(preset, timeline, rng, prototypes)


def _render_frames(preset: SyntheticPreset, timeline: Timeline, rng: np.random.Generator) -> np.ndarray:
    size, square, travel = preset.frame_size, preset.square_size, preset.travel_px
    canvas = np.full((timeline.num_frames, size, size, 3), preset.background, dtype=np.float32)
    pairs = preset.class_pairs
    for (start, end), label in zip(timeline.actions.tolist(), timeline.labels.tolist()):
        first, second = (PALETTE[c][1] for c in pairs[label])
        dx, dy = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
        # The start is drawn so that the whole path stays inside the frame.
        x0, y0 = (_path_start(rng, size, square, travel, d) for d in (dx, dy))
        progress = np.linspace(0.0, 1.0, end - start)
        xs = np.round(x0 + dx * travel * progress).astype(int)
        ys = np.round(y0 + dy * travel * progress).astype(int)
        middle = (start + end) // 2
        for frame, x, y in zip(range(start, end), xs, ys):
            canvas[frame, y:y + square, x:x + square] = first if frame < middle else second
    for start, end in timeline.distractors.tolist():
        colour = PALETTE[int(rng.integers(preset.num_prototypes))][1]
        x, y = rng.integers(0, size - square + 1, size=2)
        canvas[start:end, y:y + square, x:x + square] = colour
    canvas += preset.frame_noise * rng.standard_normal(canvas.shape, dtype=np.float32)
    return np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)


def _path_start(rng: np.random.Generator, size: int, square: int, travel: int, direction: int) -> int:
    """Start coordinate on one axis of a square that moves `direction * travel` pixels."""
    low = travel if direction < 0 else 0
    high = size - square - (travel if direction > 0 else 0)
    return int(rng.integers(low, high + 1))


def make_prototypes(preset: SyntheticPreset, rng: np.random.Generator) -> np.ndarray:
    """Random unit-norm prototype vectors, float64 [K, C]."""
    vectors = rng.standard_normal((preset.num_prototypes, preset.channels))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def feature_length(preset: SyntheticPreset, num_frames: int) -> int:
    """Feature positions of a video: clips of `clip_length` frames every `feature_stride` frames
    that fit inside it (at least one)."""
    return max(1, (num_frames - preset.clip_length) // preset.feature_stride + 1)


def _render_features(preset: SyntheticPreset, timeline: Timeline, rng: np.random.Generator,
                     prototypes: np.ndarray) -> np.ndarray:
    length = feature_length(preset, timeline.num_frames)
    std = preset.feature_noise / math.sqrt(preset.channels)
    features = std * rng.standard_normal((length, preset.channels), dtype=np.float32)
    pairs = preset.class_pairs
    for (start, end), label in zip(_grid_spans(preset, timeline.actions, length), timeline.labels.tolist()):
        a, b = pairs[label]
        positions = np.arange(start, end + 1)
        # First half a, second half b; a position exactly in the middle gets half of each, so that
        # (a, b) and (b, a) emit the same mixture of vectors and differ only in their order.
        middle = (start + end) / 2
        weight = np.where(positions < middle, 1.0, np.where(positions > middle, 0.0, 0.5))[:, None]
        features[start:end + 1] += weight * prototypes[a] + (1 - weight) * prototypes[b]
    for start, end in _grid_spans(preset, timeline.distractors, length):
        features[start:end + 1] += prototypes[int(rng.integers(len(prototypes)))]
    return features


def _grid_spans(preset: SyntheticPreset, intervals: np.ndarray, length: int) -> list[tuple[int, int]]:
    """Frame intervals -> inclusive ranges of the feature positions (of `length`) whose centres lie
    inside them, by the same `seconds_to_grid` convention the loaders use to place the annotations."""
    grid = seconds_to_grid(intervals / preset.fps, preset.fps, preset.feature_stride, preset.clip_length)
    return [(max(0, math.ceil(start)), min(length - 1, math.floor(end))) for start, end in grid.reshape(-1, 2).tolist()]


def _generator(seed: int, *key: int) -> np.random.Generator:
    """An independent generator per (seed, key): what one video draws does not depend on how many
    videos come before it or are generated at all."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def render_video(spec: SyntheticPreset, seed: int, subset_index: int, index: int,
                 prototypes: np.ndarray | None = None) -> tuple[Timeline, np.ndarray]:
    """Video `index` of the `subset_index`-th subset: its timeline and the array written for it
    (`render`). Its own generators make it the same whatever else is generated, and a preset that
    differs only in noise gives the same actions and squares (the noise is drawn last)."""
    timeline = make_timeline(spec, _generator(seed, 1, subset_index, index, 0))
    return timeline, render(spec, timeline, _generator(seed, 1, subset_index, index, 1), prototypes)


def generate(preset: str, out: Path, seed: int = 0, max_videos: int | None = None) -> Path:
    """Write preset `preset` to `out`: `annotations.json`, `frames/` or `features/` with one `.npy`
    per video (or `videos/` with one `.mp4`), and `dataset.json`. `max_videos` keeps the first videos of each subset, the same
    ones the full dataset has. Returns `out`."""
    spec = preset_named(preset)
    out = Path(out)
    inputs = out / spec.kind
    inputs.mkdir(parents=True, exist_ok=True)
    prototypes = make_prototypes(spec, _generator(seed, 0)) if spec.kind == "features" else None
    records = []
    for subset_index, (subset, count) in enumerate(spec.subsets):
        for index in range(count if max_videos is None else min(count, max_videos)):
            video_id = f"video_{subset}_{index + 1:07d}"
            timeline, array = render_video(spec, seed, subset_index, index, prototypes)
            if spec.kind == "videos":
                write_video(inputs / f"{video_id}.mp4", array, spec.fps)
            else:
                np.save(inputs / f"{video_id}.npy", array, allow_pickle=False)
            records.append(VideoRecord(video_id, subset, timeline.duration, spec.fps, timeline.segments, timeline.labels))
    facts = {
        "preset": spec.name, "seed": seed, "kind": spec.kind, "fps": spec.fps,
        "feature_stride": spec.feature_stride, "clip_length": spec.clip_length, "label_names": spec.label_names,
        "subsets": {subset: sum(r.subset == subset for r in records) for subset, _ in spec.subsets},
        **({"frame_size": [spec.frame_size, spec.frame_size]} if spec.renders_frames else {"channels": spec.channels}),
        # Without `root` (the directory holding this file), so the bytes do not depend on where it is.
        "data_config": spec.data_config(out, seed).model_dump(mode="json", exclude_defaults=True, exclude={"root"}),
    }
    (out / "dataset.json").write_text(json.dumps(facts, indent=1) + "\n")
    # The annotations go last: their presence is what marks a dataset as complete (the trainer
    # regenerates a synthetic dataset whose annotations are missing).
    write_annotations(out / "annotations.json", records, spec.label_names)
    return out
