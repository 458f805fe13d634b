"""Datasets on disk: their config, the formats (annotations, features, frames, videos, predictions)
and synthetic datasets written in those formats."""
from .config import DataConfig, SyntheticSource, VideoDecoding
from .formats import (
    Annotations,
    DataFormatError,
    VideoRecord,
    grid_to_seconds,
    load_annotations,
    load_video_array,
    seconds_to_grid,
    video_array_path,
    write_annotations,
    write_predictions,
)
from .synthetic import PRESETS, SyntheticPreset, Timeline, generate, make_timeline, preset_named, render
from .video import VideoDecodeError, decode_video, write_video

__all__ = [
    "Annotations", "DataConfig", "DataFormatError", "PRESETS", "SyntheticPreset", "SyntheticSource", "Timeline",
    "VideoDecodeError", "VideoDecoding", "VideoRecord", "decode_video", "generate", "grid_to_seconds",
    "load_annotations", "load_video_array", "make_timeline", "preset_named", "render", "seconds_to_grid",
    "video_array_path", "write_annotations", "write_predictions", "write_video",
]
