"""Reading and writing the on-disk formats of DESIGN.md "Data formats", with validation.

- Annotations: `{"database": {video_id: {"subset", "duration", "fps", "annotations":
  [{"label", "label_id", "segment": [start_s, end_s]}]}}}` (ActivityNet / ActionFormer THUMOS14 JSON).
- Inputs: `<root>/<video_id>.npy`, float32 `[T, C]` features or uint8 `[T, H, W, 3]` frames, or
  `<root>/<video_id>.{mp4,mkv,avi,webm}` videos decoded to such frames (`video.py`).
- Predictions: ActivityNet results JSON `{"results": {video_id: [{"label", "score", "segment"}]}}`.

Real datasets arrive with truncated downloads, stray labels and segments past the end of the video;
every check here fails with a `DataFormatError` that names the video, the file and what was
expected, so such a problem is found before training rather than as a shape error deep inside it.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .config import DataConfig

# Segments may stick out of [0, duration] by this many frames: annotation tools and container
# durations disagree by about a frame at the ends of a video.
SEGMENT_TOLERANCE_FRAMES = 1.0
# A frames array may differ from duration * fps by this many frames, or this fraction of them if
# that is more (decoders drop or repeat a frame or two at the ends); more means a truncated video.
FRAME_COUNT_TOLERANCE = 3
FRAME_COUNT_TOLERANCE_FRACTION = 0.01


class DataFormatError(ValueError):
    """A dataset file that does not hold what the formats promise; the message names the video id
    (where there is one), the file and what was expected."""


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class VideoRecord:
    """One annotated video. Arrays are converted on construction and made read-only."""

    video_id: str
    subset: str
    duration: float
    fps: float
    segments: np.ndarray  # float64 [N, 2], seconds
    labels: np.ndarray    # int64 [N], ids into the label map

    def __post_init__(self) -> None:
        segments = np.array(self.segments, dtype=np.float64).reshape(-1, 2)
        labels = np.array(self.labels, dtype=np.int64).reshape(-1)
        if len(segments) != len(labels):
            raise ValueError(f"video {self.video_id}: {len(segments)} segments but {len(labels)} labels")
        segments.flags.writeable = False
        labels.flags.writeable = False
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "duration", float(self.duration))
        object.__setattr__(self, "fps", float(self.fps))


@dataclass(frozen=True)
class Annotations:
    """All videos of an annotation file and the label map (`label_names[id] = name`)."""

    videos: dict[str, VideoRecord]
    label_names: list[str]
    source: Path | None = field(default=None, compare=False)  # the file read, for error messages

    def subset(self, name: str) -> list[VideoRecord]:
        """The videos of one subset, in file order; names compared case-insensitively as ActionFormer
        does (its THUMOS14 file says "Validation" and "Test", its configs "validation" and "test")."""
        videos = [v for v in self.videos.values() if v.subset.lower() == name.lower()]
        if not videos:
            known = sorted({v.subset for v in self.videos.values()})
            raise DataFormatError(f"{self.source or 'annotations'}: no videos in subset {name!r}; "
                                  f"the subsets are {known}")
        return videos


def load_annotations(path: str | Path, label_names: list[str] | None = None) -> Annotations:
    """Read and validate an annotation file.

    With `label_names`, that list is the label map and every label in the file must be in it (the
    file's `label_id`s are then ignored, so a config can fix the order). Without, the map comes
    from the file's `label_id`/`label` pairs, which must agree with each other and cover 0..K-1;
    a file with no `label_id` at all (the original ActivityNet files) gets its names in sorted order.
    """
    path = Path(path)
    database = _read_database(path)
    names = list(label_names) if label_names is not None else _label_map_from_file(path, database)
    ids = {name: i for i, name in enumerate(names)}
    videos = {}
    for video_id, entry in database.items():
        videos[video_id] = _parse_video(path, video_id, entry, ids)
    return Annotations(videos, names, source=path)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.load would silently keep the last of two entries with the same video id.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _read_database(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(), object_pairs_hook=_reject_duplicate_keys)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: annotation file does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataFormatError(f"{path}: not a readable annotation JSON file: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("database"), dict):
        raise DataFormatError(f"{path}: expected an object with a \"database\" object mapping video ids to videos")
    return raw["database"]


def _annotation_list(path: Path, video_id: str, entry: Any) -> list[dict[str, Any]]:
    if not isinstance(entry, dict):
        raise DataFormatError(f"video {video_id} in {path}: expected an object with subset, duration, fps, annotations")
    missing = [key for key in ("subset", "duration", "fps", "annotations") if key not in entry]
    if missing:
        raise DataFormatError(f"video {video_id} in {path}: missing keys {missing}")
    annotations = entry["annotations"]
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise DataFormatError(f"video {video_id} in {path}: \"annotations\" must be a list of objects")
    for index, annotation in enumerate(annotations):
        missing = [key for key in ("label", "segment") if key not in annotation]
        if missing:
            raise DataFormatError(f"video {video_id} in {path}: annotation {index} is missing keys {missing}")
    return annotations


def _label_map_from_file(path: Path, database: dict[str, Any]) -> list[str]:
    pairs = [(video_id, a) for video_id, entry in database.items() for a in _annotation_list(path, video_id, entry)]
    with_id = [(video_id, a) for video_id, a in pairs if "label_id" in a]
    if not with_id:
        return sorted({str(a["label"]) for _, a in pairs})
    if len(with_id) != len(pairs):
        video_id = next(v for v, a in pairs if "label_id" not in a)
        raise DataFormatError(f"video {video_id} in {path}: an annotation has no label_id while others have; "
                              "give every annotation a label_id, or set data.labels")
    names: dict[int, str] = {}
    for video_id, annotation in with_id:
        label, label_id = str(annotation["label"]), annotation["label_id"]
        if not isinstance(label_id, int) or isinstance(label_id, bool) or label_id < 0:
            raise DataFormatError(f"video {video_id} in {path}: label_id {label_id!r} of {label!r} "
                                  "is not a non-negative integer")
        known = names.setdefault(label_id, label)
        if known != label:
            raise DataFormatError(f"video {video_id} in {path}: label_id {label_id} is {label!r} here "
                                  f"but {known!r} elsewhere in the file")
    by_name: dict[str, int] = {}
    for label_id, label in sorted(names.items()):
        if label in by_name:
            raise DataFormatError(f"{path}: label {label!r} has two ids, {by_name[label]} and {label_id}")
        by_name[label] = label_id
    absent = sorted(set(range(max(names) + 1)) - set(names))
    if absent:
        raise DataFormatError(f"{path}: label ids must cover 0..{max(names)} but no annotation has ids {absent[:10]}; "
                              "set data.labels to give the full label map")
    return [names[i] for i in range(len(names))]


def _positive_number(path: Path, video_id: str, entry: dict[str, Any], key: str) -> float:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DataFormatError(f"video {video_id} in {path}: {key} must be a positive number, got {value!r}")
    return float(value)


def _parse_video(path: Path, video_id: str, entry: Any, ids: dict[str, int]) -> VideoRecord:
    annotations = _annotation_list(path, video_id, entry)
    subset = entry["subset"]
    if not isinstance(subset, str):
        raise DataFormatError(f"video {video_id} in {path}: subset must be a string, got {subset!r}")
    duration = _positive_number(path, video_id, entry, "duration")
    fps = _positive_number(path, video_id, entry, "fps")
    tolerance = SEGMENT_TOLERANCE_FRAMES / fps
    segments, labels = [], []
    for annotation in annotations:
        label = str(annotation["label"])
        if label not in ids:
            some = ", ".join(repr(name) for name in list(ids)[:5]) + (", ..." if len(ids) > 5 else "")
            raise DataFormatError(f"video {video_id} in {path}: label {label!r} is not in the label map "
                                  f"({len(ids)} labels: {some})")
        segment = annotation["segment"]
        if (not isinstance(segment, list) or len(segment) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in segment)):
            raise DataFormatError(f"video {video_id} in {path}: segment of {label!r} must be [start_s, end_s], "
                                  f"got {segment!r}")
        start, end = float(segment[0]), float(segment[1])
        if end <= start:
            raise DataFormatError(f"video {video_id} in {path}: segment [{start}, {end}] of {label!r} "
                                  "must end after it starts")
        if start < -tolerance or end > duration + tolerance:
            raise DataFormatError(f"video {video_id} in {path}: segment [{start}, {end}] of {label!r} lies outside "
                                  f"the video [0, {duration}] (tolerance {SEGMENT_TOLERANCE_FRAMES:g} frame)")
        segments.append((start, end))
        labels.append(ids[label])
    return VideoRecord(video_id, subset, duration, fps, np.array(segments).reshape(-1, 2), np.array(labels))


def video_array_path(config: DataConfig, video_id: str) -> Path:
    """Where the features or frames of one video live (`kind: videos`: see `video.find_video`)."""
    return config.inputs_path / f"{video_id}.npy"


def load_video_array(config: DataConfig, video: VideoRecord) -> np.ndarray:
    """The inputs of one video, checked against the formats: float32 `[T, C]` features or uint8
    `[T, H, W, 3]` frames memory-mapped from `.npy`, or frames decoded from a video file
    (`kind: videos`, `tadmodels.data.video`). Frame counts must match duration * fps: a truncated
    video otherwise trains silently on its first part."""
    if config.kind == "videos":
        from .video import load_video_frames  # the video module builds on this one

        frames, path = load_video_frames(config, video)
        _check_frame_count(f"video {video.video_id}: {path}", len(frames), config, video)
        return frames
    path = video_array_path(config, video.video_id)
    where = f"video {video.video_id}: {path}"
    if not path.is_file():
        raise DataFormatError(f"{where} does not exist; expected the video's {config.kind} as a .npy file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataFormatError(f"{where} is truncated or not a .npy array: {error}") from None
    if not isinstance(array, np.ndarray):
        raise DataFormatError(f"{where} is not a single .npy array (an .npz archive?)")
    if config.kind == "features":
        if array.dtype != np.float32 or array.ndim != 2 or 0 in array.shape:
            raise DataFormatError(f"{where} holds {array.dtype} {list(array.shape)}; "
                                  "expected non-empty float32 features [T, C]")
        return array
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise DataFormatError(f"{where} holds {array.dtype} {list(array.shape)}; "
                              "expected non-empty uint8 RGB frames [T, H, W, 3]")
    _check_frame_count(where, array.shape[0], config, video)
    return array


def _check_frame_count(where: str, count: int, config: DataConfig, video: VideoRecord) -> None:
    fps = config.fps or video.fps
    expected = video.duration * fps
    tolerance = max(FRAME_COUNT_TOLERANCE, FRAME_COUNT_TOLERANCE_FRACTION * expected)
    if abs(count - expected) > tolerance:
        raise DataFormatError(f"{where} has {count} frames; expected duration {video.duration} s x "
                              f"{fps} fps = {expected:.1f} (tolerance {tolerance:.1f}): truncated video or wrong fps?")


def seconds_to_grid(seconds: ArrayLike, fps: float, stride: int, clip: int) -> np.ndarray:
    """Times in seconds -> positions on the feature grid, where position i covers frames
    [i * stride, i * stride + clip) and sits at its centre (ActionFormer's THUMOS14 convention):
    grid = seconds * fps / stride - 0.5 * clip / stride."""
    return np.asarray(seconds, dtype=np.float64) * fps / stride - 0.5 * clip / stride


def grid_to_seconds(grid: ArrayLike, fps: float, stride: int, clip: int) -> np.ndarray:
    """The inverse of `seconds_to_grid`."""
    return (np.asarray(grid, dtype=np.float64) + 0.5 * clip / stride) * stride / fps


def write_annotations(path: str | Path, videos: Sequence[VideoRecord], label_names: Sequence[str]) -> None:
    """Write videos in the annotation format (label ids index `label_names`); `load_annotations`
    reads the file back to the same records and label map."""
    database: dict[str, Any] = {}
    for video in videos:
        if video.video_id in database:
            raise DataFormatError(f"video {video.video_id}: written twice to {path}")
        bad = [int(i) for i in video.labels if not 0 <= i < len(label_names)]
        if bad:
            raise DataFormatError(f"video {video.video_id}: label ids {bad} are outside the "
                                  f"{len(label_names)} labels written to {path}")
        database[video.video_id] = {
            "subset": video.subset,
            "duration": video.duration,
            "fps": video.fps,
            "annotations": [{"label": label_names[label], "label_id": int(label), "segment": [float(s), float(e)]}
                            for (s, e), label in zip(video.segments, video.labels)],
        }
    _write_json(Path(path), {"database": database})


def write_predictions(path: str | Path, results: dict[str, list[dict[str, Any]]]) -> None:
    """Write detections in the ActivityNet results format, `{"results": {video_id: [{"label",
    "score", "segment"}]}}`; numpy scalars become plain JSON numbers."""
    plain = {
        video_id: [{"label": str(p["label"]), "score": float(p["score"]),
                    "segment": [float(p["segment"][0]), float(p["segment"][1])]} for p in predictions]
        for video_id, predictions in results.items()
    }
    _write_json(Path(path), {"results": plain})


def _write_json(path: Path, content: dict[str, Any]) -> None:
    """Written under a temporary name and renamed: a crash never leaves half a file at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=1) + "\n")
    temporary.replace(path)
