"""Videos in: PyAV decoding at the spec's fps, OpenTAD's resize and centre crop, the frame cache,
errors that name the file, the demo-videos preset, and DataLoader workers."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

from tadmodels.data import (
    DataConfig,
    DataFormatError,
    VideoDecodeError,
    VideoDecoding,
    VideoRecord,
    decode_video,
    generate,
    load_annotations,
    load_video_array,
    write_annotations,
    write_video,
)
from tadmodels.data.video import FrameCache, resize_and_crop, resized_size
from tadmodels.spec import ExperimentSpec


def grey_ramp(count: int, size: tuple[int, int] = (32, 48)) -> np.ndarray:
    """Flat grey frames whose level tells the frame index (6 levels apart, survives H.264)."""
    levels = 10 + 6 * np.arange(count)
    return np.broadcast_to(levels[:, None, None, None], (count, *size, 3)).astype(np.uint8)


def frame_indices(frames: np.ndarray) -> list[int]:
    return [round((float(f.mean()) - 10) / 6) for f in frames]


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames at 30 fps (1.333 s), frame i of grey level 10 + 6 i."""
    path = tmp_path_factory.mktemp("ramp") / "ramp.mp4"
    write_video(path, grey_ramp(40), 30.0)
    return path


@pytest.mark.parametrize("fps, expected", [
    (30.0, list(range(40))),
    (7.5, list(range(0, 40, 4))),                                 # OpenTAD's every 4th frame from frame 0
    (12.0, [math.floor(k * 2.5) for k in range(16)]),            # nearest frame, ties to the earlier
    (60.0, [k // 2 for k in range(80)]),                        # upsampling repeats frames (ties earlier)
])
def test_decoding_takes_the_frame_nearest_each_tick(ramp_video: Path, fps: float, expected: list[int]) -> None:
    frames = decode_video(ramp_video, fps, short_side=32, crop=32)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (32, 32, 3)
    assert frame_indices(frames) == expected


def test_resize_follows_mmcv_sizes_and_centre_crop() -> None:
    assert resized_size(320, 180, 160) == (284, 160)     # THUMOS14's 320 x 180 -> 284 x 160
    assert resized_size(180, 320, 160) == (160, 284)
    assert resized_size(1280, 720, 160) == (284, 160)
    assert resized_size(171, 128, 160) == (214, 160)     # 213.75 rounds up
    # A column ramp: after the resize, the crop keeps columns 62..221 of 284 ((284 - 160) // 2 = 62).
    frames = np.broadcast_to(np.arange(320, dtype=np.float64)[None, None, :, None] * 255 / 319,
                             (1, 180, 320, 3)).round().astype(np.uint8)
    out = resize_and_crop(frames, 160, 160)
    reference = cv2_linear(frames[0, :, :, 0].astype(np.float64), 160, 284)[:, 62:222]
    assert out.shape == (1, 160, 160, 3)
    assert np.abs(out[0, :, :, 0].astype(np.float64) - reference).max() <= 1.0


def cv2_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize INTER_LINEAR's sampling in float: source = (dst + 0.5) * scale - 0.5, clamped to
    the image, two taps per axis."""
    def taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = ((np.arange(out_size) + 0.5) * in_size / out_size - 0.5).clip(0, in_size - 1)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, in_size - 1), source - low

    y0, y1, wy = taps(height, image.shape[0])
    x0, x1, wx = taps(width, image.shape[1])
    rows = image[y0] * (1 - wy)[:, None] + image[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def videos_root(tmp_path: Path, frames: np.ndarray, fps: float = 8.0, extension: str = "mp4",
                duration: float | None = None, cache: Path | None = None) -> tuple[DataConfig, VideoRecord]:
    """A one-video `kind: videos` dataset holding `frames`."""
    (tmp_path / "videos").mkdir(parents=True, exist_ok=True)
    write_video(tmp_path / "videos" / f"v.{extension}", frames, fps)
    video = VideoRecord("v", "test", duration or len(frames) / fps, fps, np.zeros((0, 2)), np.zeros(0))
    write_annotations(tmp_path / "annotations.json", [video], ["a"])
    size = frames.shape[1]
    config = DataConfig(root=tmp_path, kind="videos", video=VideoDecoding(short_side=size, crop=size, cache_dir=cache))
    return config, video


def test_cache_reuses_rebuilds_and_keys_by_settings(tmp_path: Path) -> None:
    config, video = videos_root(tmp_path, grey_ramp(24, (32, 32)), cache=tmp_path / "cache")
    decoded = load_video_array(config, video)
    entries = sorted((tmp_path / "cache").glob("*.npy"))
    assert len(entries) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    cached = load_video_array(config, video)
    assert isinstance(cached, np.memmap) and Path(cached.filename) == entries[0]  # read from the cache
    np.testing.assert_array_equal(cached, decoded)
    entries[0].write_bytes(entries[0].read_bytes()[:200])                          # a broken entry ...
    np.testing.assert_array_equal(load_video_array(config, video), decoded)       # ... is decoded again
    np.testing.assert_array_equal(np.load(entries[0]), decoded)
    smaller = config.model_copy(update={"video": config.video.model_copy(update={"short_side": 16, "crop": 16})})
    assert load_video_array(smaller, video).shape[1:] == (16, 16, 3)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2                    # other settings, other entry
    os.utime(tmp_path / "videos" / "v.mp4", ns=(1, 1))                            # a changed file is not reused
    load_video_array(config, video)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3


def test_bad_videos_are_named_with_the_reason(tmp_path: Path) -> None:
    config, video = videos_root(tmp_path / "ok", grey_ramp(24, (32, 32)))
    with pytest.raises(DataFormatError, match=r"video w: no file .*w\.\{mp4,mkv,avi,webm\}"):
        load_video_array(config, VideoRecord("w", "test", 3.0, 8.0, np.zeros((0, 2)), np.zeros(0)))

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoDecodeError, match=f"{garbage}: unreadable as a video"):
        decode_video(garbage, 8.0, 32, 32)

    sound = tmp_path / "sound.mkv"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(VideoDecodeError, match=f"{sound}: no video stream \\(streams: audio\\)"):
        decode_video(sound, 8.0, 32, 32)

    # A download cut short: a Matroska file keeps its first frames readable, and the count says so.
    config, video = videos_root(tmp_path / "cut", grey_ramp(40, (32, 32)), extension="mkv")
    path = tmp_path / "cut" / "videos" / "v.mkv"
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(DataFormatError, match=rf"video v: {path} has \d+ frames; expected .* = 40.0 .*truncated"):
        load_video_array(config, video)

    write_video(tmp_path / "ok" / "videos" / "v.mkv", grey_ramp(2, (32, 32)), 8.0)  # the same id twice
    with pytest.raises(DataFormatError, match="several files could be it"):
        load_video_array(config.model_copy(update={"root": tmp_path / "ok"}), video)


def test_video_settings_are_checked_against_the_kind_and_the_model(tmp_path: Path) -> None:
    assert DataConfig(root=tmp_path, kind="videos").video == VideoDecoding(short_side=160, crop=160)
    with pytest.raises(ValueError, match="video: decoding settings apply to kind videos, not frames"):
        DataConfig(root=tmp_path, kind="frames", video=VideoDecoding())
    with pytest.raises(ValueError, match="crop 200 is larger than short_side 160"):
        VideoDecoding(crop=200)
    model = {"backbone": {"type": "videomae", "preset": "tiny"}, "detector": {"num_classes": 4}}
    ExperimentSpec.model_validate({"name": "x", "data": {"root": tmp_path, "kind": "videos",
                                                         "video": {"short_side": 40, "crop": 32}}, "model": model})
    with pytest.raises(ValueError, match=r"data.video.crop is 160 but the backbone reads 32 x 32"):
        ExperimentSpec.model_validate({"name": "x", "data": {"root": tmp_path, "kind": "videos"}, "model": model})
    with pytest.raises(ValueError, match="frames and videos need model.backbone"):
        ExperimentSpec.model_validate({"name": "x", "data": {"root": tmp_path, "kind": "videos"},
                                       "model": {"input_dim": 8, "detector": {"num_classes": 4}}})


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair")
    return generate("demo", root / "frames", max_videos=3), generate("demo-videos", root / "videos", max_videos=3)


def block_means(frames: np.ndarray) -> np.ndarray:
    count, height, width, _ = frames.shape
    return frames.astype(np.float64).reshape(count, height // 4, 4, width // 4, 4, 3).mean(axis=(2, 4))


def test_demo_videos_hold_the_demo_frames(demo_pair: tuple[Path, Path]) -> None:
    frames_root, videos_root_ = demo_pair
    assert (videos_root_ / "annotations.json").read_bytes() == (frames_root / "annotations.json").read_bytes()
    facts = json.loads((videos_root_ / "dataset.json").read_text())
    config = DataConfig.model_validate({**facts["data_config"], "root": videos_root_})
    frames_config = DataConfig.model_validate({**json.loads((frames_root / "dataset.json").read_text())["data_config"],
                                               "root": frames_root})
    annotations = load_annotations(config.annotations_path, config.labels)
    for video in annotations.videos.values():
        original = np.asarray(load_video_array(frames_config, video))
        decoded = load_video_array(config, video)
        assert decoded.shape == original.shape
        # Per pixel the noise (std 32) loses its chroma to 4:2:0; the squares keep their colours.
        assert np.abs(decoded.astype(np.float64) - original).mean() < 20
        assert np.abs(block_means(decoded) - block_means(original)).mean() < 3


def test_demo_videos_same_seed_same_bytes(tmp_path: Path, demo_pair: tuple[Path, Path]) -> None:
    again = generate("demo-videos", tmp_path / "again", max_videos=3)
    for path in sorted((demo_pair[1] / "videos").iterdir()):
        assert (again / "videos" / path.name).read_bytes() == path.read_bytes()


def test_loader_workers_decode_deterministically(tiny_setting: Path, demo_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """Training batches read by 2 worker processes: the same twice, and crops that change between epochs."""
    from search.spec import load_study_spec
    from tadmodels.training import Experiment

    spec = load_study_spec(tiny_setting)
    data = spec.data_at(demo_pair[1]).model_copy(update={"num_workers": 2, "max_seq_len": 16})
    experiment = Experiment.from_spec(spec.with_data(data))

    def epochs() -> list[list[tuple[str, int]]]:
        loader = experiment.loader("validation")
        return [[(s.video.video_id, s.offset) for batch in loader for s in batch.samples] for _ in range(2)]

    first = epochs()
    assert first == epochs()
    assert first[0] != first[1]
    assert sorted(first[0]) != sorted(first[1])  # not only the order: the crops differ
