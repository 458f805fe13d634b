"""Datasets on disk: their config, the formats (annotations, features, frames, predictions) and
synthetic datasets written in those formats."""
from .config import DataConfig, SyntheticSource
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

__all__ = [
    "Annotations", "DataConfig", "DataFormatError", "PRESETS", "SyntheticPreset", "SyntheticSource", "Timeline",
    "VideoRecord", "generate", "grid_to_seconds", "load_annotations", "load_video_array", "make_timeline",
    "preset_named", "render", "seconds_to_grid", "video_array_path", "write_annotations", "write_predictions",
]
