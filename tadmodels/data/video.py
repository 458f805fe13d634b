"""Video files in, uint8 frames out (`kind: videos`): decoding with PyAV, resizing and cropping as
OpenTAD's end-to-end pipelines do, an on-disk cache of the result, and writing H.264 files.

What OpenTAD's end-to-end THUMOS14 pipeline does (PBD's `e2e_thumos_videomae_s_768x1_160*` configs
on `e2e_train_trunc_test_sw_256x224x224`), and what is done here:
- Sampling: decord reads every native frame and `LoadFrames` keeps every `snippet_stride`-th
  (feature_stride 4 x sample_stride 1) from frame 0: 7.5 fps from THUMOS14's 30. Here the rate is
  the spec's `fps`: for each k = 0, 1, ... the frame whose timestamp is nearest k / fps is taken,
  while k / fps lies inside the video (at 30 fps native and fps 7.5 that is frames 0, 4, 8, ...,
  the same ones). ActivityNet's `LoadFrames(method="resize")` takes 768 frames at the centres of
  768 equal bins; with fps = 768 / duration here they are taken at the bins' starts, half a bin
  earlier.
- Test-time spatial pipeline: `Resize(scale=(-1, 160))` (shorter side to 160, longer side
  `int(side * scale + 0.5)`, cv2 bilinear) then `CenterCrop(160)` (offset `(size - 160) // 2`).
  Here: `torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)`
  on uint8, which samples as cv2's INTER_LINEAR does (half-pixel centres, two taps, no
  antialiasing), both in fixed point; values may differ from cv2's by one grey level.
- Training augmentation (short side 182, RandomResizedCrop, flip, ImgAug, ColorJitter) is not
  applied (see `VideoDecoding`).
- Sliding windows at test time are `tadmodels.inference`'s business, on the decoded frames.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from .config import DataConfig, VideoDecoding
from .formats import DataFormatError, VideoRecord

VIDEO_EXTENSIONS = ("mp4", "mkv", "avi", "webm")
# Frames are resized in groups of this many: bounded memory for long videos at native size.
RESIZE_GROUP = 64
# Timestamps this close (seconds) count as equal: k / fps and a frame's pts rarely agree to the bit.
TIME_EPSILON = 1e-6
# Part of every cache key: bump it when the decoded frames of the same settings change.
CACHE_FORMAT = 1
# H.264 constant rate factor of written videos. On the demo frames (32 px, colour squares, noise of
# std 32) CRF 18 with yuv420p costs 16 grey levels per pixel (mostly the per-pixel chroma noise that
# 4:2:0 averages away) but 2 per 4 x 4 block mean, so the squares keep their colours
# (benchmarks/RESULTS.md, "Videos in").
WRITE_CRF = 18


class VideoDecodeError(DataFormatError):
    """A video file that cannot be turned into frames; the message names the file and why."""


def find_video(directory: Path, video_id: str) -> Path:
    """`<directory>/<video_id>.<ext>` for the one extension of `VIDEO_EXTENSIONS` present."""
    found = [directory / f"{video_id}.{ext}" for ext in VIDEO_EXTENSIONS if (directory / f"{video_id}.{ext}").is_file()]
    if not found:
        raise VideoDecodeError(f"video {video_id}: no file {directory / video_id}.{{{','.join(VIDEO_EXTENSIONS)}}}")
    if len(found) > 1:
        raise VideoDecodeError(f"video {video_id}: several files could be it: {[str(p) for p in found]}; keep one")
    return found[0]


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side scaled to `short_side`, as mmcv's `rescale_size`
    rounds (`int(x * scale + 0.5)`)."""
    scale = short_side / min(width, height)
    return int(width * scale + 0.5), int(height * scale + 0.5)


def resize_and_crop(frames: np.ndarray, short_side: int, crop: int) -> np.ndarray:
    """uint8 `[N, H, W, 3]` -> uint8 `[N, crop, crop, 3]`: shorter side to `short_side` (bilinear),
    then the centre crop."""
    height, width = frames.shape[1:3]
    new_width, new_height = resized_size(width, height, short_side)
    # [N, H, W, 3] memory seen as [N, 3, H, W] is torch's channels_last layout, for which bilinear
    # interpolation has a uint8 kernel (27x the float path's speed here, within one grey level of it).
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)
    if (new_height, new_width) != (height, width):
        pixels = F.interpolate(pixels, size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=False)
    top, left = (new_height - crop) // 2, (new_width - crop) // 2
    return pixels[:, :, top:top + crop, left:left + crop].permute(0, 2, 3, 1).contiguous().numpy()


def _timed_frames(container: av.container.InputContainer,
                  stream: av.video.stream.VideoStream) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames with their time in seconds from the first one (frame counts at the stream's
    rate where a container gives no timestamps)."""
    rate = float(stream.average_rate or stream.guessed_rate or 0) or None
    first = None
    for index, frame in enumerate(container.decode(stream)):
        if frame.time is not None:
            time = frame.time
        elif rate is not None:
            time = index / rate
        else:
            raise VideoDecodeError("frames have no timestamps and the stream no frame rate")
        first = time if first is None else first
        yield time - first, frame


def sample_frames(timed: Iterator[tuple[float, av.VideoFrame]], fps: float,
                  frame_period: float | None) -> Iterator[av.VideoFrame]:
    """For k = 0, 1, ...: the frame whose time is nearest k / fps (ties to the earlier), for every
    k / fps before the end of the last frame (its time plus `frame_period`, else the last gap)."""
    k = 0
    previous: tuple[float, av.VideoFrame] | None = None
    last_gap = None
    for time, frame in timed:
        while k / fps <= time + TIME_EPSILON:
            target = k / fps
            after = time - target  # how far this frame lies past the target
            if previous is not None and after > TIME_EPSILON and target - previous[0] <= after + TIME_EPSILON:
                yield previous[1]
            else:
                yield frame
            k += 1
        if previous is not None:
            last_gap = time - previous[0]
        previous = (time, frame)
    if previous is None:
        return
    end = previous[0] + (frame_period or last_gap or 0.0)
    while k / fps < end - TIME_EPSILON:
        yield previous[1]
        k += 1


def decode_video(path: Path, fps: float, short_side: int, crop: int) -> np.ndarray:
    """uint8 `[T, crop, crop, 3]` RGB frames of a video file at `fps` (module docstring), or a
    `VideoDecodeError` that names the file and what went wrong."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise VideoDecodeError(f"{path}: unreadable as a video: {error}") from None
    with container:
        if not container.streams.video:
            kinds = [s.type for s in container.streams] or ["none"]
            raise VideoDecodeError(f"{path}: no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        period = float(1 / stream.average_rate) if stream.average_rate else None
        groups: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        converted: tuple[av.VideoFrame, np.ndarray] | None = None  # a frame taken twice is converted once
        count = 0
        try:
            for frame in sample_frames(_timed_frames(container, stream), fps, period):
                if converted is None or converted[0] is not frame:
                    converted = (frame, frame.to_ndarray(format="rgb24"))
                # Frames of one size are resized together; a size change mid-stream starts a group.
                if pending and pending[0].shape != converted[1].shape:
                    groups.append(resize_and_crop(np.stack(pending), short_side, crop))
                    pending = []
                pending.append(converted[1])
                count += 1
                if len(pending) == RESIZE_GROUP:
                    groups.append(resize_and_crop(np.stack(pending), short_side, crop))
                    pending = []
        except av.FFmpegError as error:
            raise VideoDecodeError(f"{path}: decoding failed after {count} frames: {error}") from None
        except VideoDecodeError as error:
            raise VideoDecodeError(f"{path}: {error}") from None
    if pending:
        groups.append(resize_and_crop(np.stack(pending), short_side, crop))
    if not groups:
        raise VideoDecodeError(f"{path}: no frame could be decoded (empty or truncated video)")
    return np.concatenate(groups)


class FrameCache:
    """Decoded frames on disk, one uint8 `.npy` per video and decoding: the key hashes the video
    file's path, size and modification time with the decode settings, so a changed file or
    setting never reuses stale frames. Entries are written to a temporary file and renamed, so a
    reader sees a whole entry or none; one that does not read back as the frames promised is
    deleted and decoded again."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def entry(self, video_id: str, path: Path, fps: float, settings: VideoDecoding) -> Path:
        stat = path.stat()
        key = json.dumps([CACHE_FORMAT, str(path.resolve()), stat.st_size, stat.st_mtime_ns, fps,
                          settings.short_side, settings.crop])
        return self.directory / f"{video_id}.{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"

    def read(self, entry: Path, crop: int) -> np.ndarray | None:
        """The cached frames, or None when the entry is missing or broken (then it is removed)."""
        if not entry.is_file():
            return None
        try:
            frames = np.load(entry, mmap_mode="r", allow_pickle=False)
            if (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
                    and frames.shape[0] > 0 and frames.shape[1:] == (crop, crop, 3)):
                return frames
        except (OSError, ValueError, EOFError):
            pass
        entry.unlink(missing_ok=True)
        return None

    def write(self, entry: Path, frames: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{entry.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.save(file, frames, allow_pickle=False)
            os.replace(temporary, entry)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def load_video_frames(config: DataConfig, video: VideoRecord) -> tuple[np.ndarray, Path]:
    """The frames of one video of a `kind: videos` dataset, from the cache or decoded (and then
    cached), with the video file they come from."""
    settings = config.video or VideoDecoding()
    path = find_video(config.inputs_path, video.video_id)
    fps = config.fps or video.fps
    cache = FrameCache(settings.cache_dir) if settings.cache_dir is not None else None
    entry = cache.entry(video.video_id, path, fps, settings) if cache is not None else None
    frames = cache.read(entry, settings.crop) if cache is not None else None
    if frames is None:
        frames = decode_video(path, fps, settings.short_side, settings.crop)
        if cache is not None:
            cache.write(entry, frames)
    return frames, path


def write_video(path: Path, frames: np.ndarray, fps: float, crf: int = WRITE_CRF) -> None:
    """uint8 RGB `[T, H, W, 3]` (H and W even) -> an H.264 (libx264, yuv420p) file at `fps`;
    one encoder thread, so the same frames give the same bytes on any machine."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"{path}: expected uint8 [T, H, W, 3] frames with even H and W, got "
                         f"{frames.dtype} {list(frames.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf)}
        for index, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
