"""The on-disk formats: annotation round trips, label maps, every kind of bad input, the grid."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tadmodels.data import (
    DataConfig,
    DataFormatError,
    VideoRecord,
    grid_to_seconds,
    load_annotations,
    load_video_array,
    seconds_to_grid,
    write_annotations,
    write_predictions,
)

LABELS = ["jump", "run", "throw"]


def videos() -> list[VideoRecord]:
    return [
        VideoRecord("v1", "validation", 20.0, 30.0, np.array([[1.0, 3.5], [10.0, 12.25]]), np.array([2, 0])),
        VideoRecord("v2", "test", 8.5, 25.0, np.array([[0.0, 8.5]]), np.array([1])),
        VideoRecord("v3", "test", 5.0, 30.0, np.zeros((0, 2)), np.zeros(0)),
    ]


def database(**overrides: Any) -> dict[str, Any]:
    """A valid one-video database whose video entry takes `overrides`."""
    entry = {"subset": "test", "duration": 10.0, "fps": 10.0,
             "annotations": [{"label": "run", "label_id": 1, "segment": [1.0, 2.0]},
                             {"label": "jump", "label_id": 0, "segment": [3.0, 4.0]}]}
    return {"database": {"vid_7": {**entry, **overrides}}}


def write_json(path: Path, content: Any) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_annotations_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "annotations.json"
    write_annotations(path, videos(), LABELS)
    loaded = load_annotations(path)
    assert loaded.label_names == LABELS
    assert list(loaded.videos) == ["v1", "v2", "v3"]
    for original in videos():
        video = loaded.videos[original.video_id]
        assert (video.subset, video.duration, video.fps) == (original.subset, original.duration, original.fps)
        np.testing.assert_array_equal(video.segments, original.segments)
        np.testing.assert_array_equal(video.labels, original.labels)
        assert video.segments.dtype == np.float64 and video.segments.shape == (len(original.labels), 2)
        assert video.labels.dtype == np.int64
    assert [v.video_id for v in loaded.subset("test")] == ["v2", "v3"]


def test_video_record_arrays_are_read_only() -> None:
    video = videos()[0]
    with pytest.raises(ValueError):
        video.segments[0, 0] = 5.0


def test_given_label_map_wins_over_file_ids(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a.json", database())
    loaded = load_annotations(path, label_names=["run", "jump", "throw"])
    assert loaded.label_names == ["run", "jump", "throw"]
    np.testing.assert_array_equal(loaded.videos["vid_7"].labels, [0, 1])


def test_label_map_from_file_without_ids_is_sorted(tmp_path: Path) -> None:
    content = database(annotations=[{"label": "run", "segment": [1.0, 2.0]}, {"label": "jump", "segment": [3.0, 4.0]}])
    loaded = load_annotations(write_json(tmp_path / "a.json", content))
    assert loaded.label_names == ["jump", "run"]
    np.testing.assert_array_equal(loaded.videos["vid_7"].labels, [1, 0])


def assert_names(error: pytest.ExceptionInfo[DataFormatError], *parts: str) -> None:
    message = str(error.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize("annotations, expected", [
    ([{"label": "run", "label_id": 1, "segment": [1, 2]}, {"label": "jump", "label_id": 1, "segment": [3, 4]}],
     "label_id 1"),
    ([{"label": "run", "label_id": 2, "segment": [1, 2]}, {"label": "jump", "label_id": 0, "segment": [3, 4]}],
     "cover 0..2"),
    ([{"label": "run", "label_id": 1, "segment": [1, 2]}, {"label": "jump", "segment": [3, 4]}], "no label_id"),
    ([{"label": "run", "label_id": -1, "segment": [1, 2]}], "non-negative integer"),
])
def test_inconsistent_label_ids_are_rejected(tmp_path: Path, annotations: list, expected: str) -> None:
    path = write_json(tmp_path / "a.json", database(annotations=annotations))
    with pytest.raises(DataFormatError) as error:
        load_annotations(path)
    assert_names(error, str(path), expected)


def test_label_missing_from_given_map(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a.json", database())
    with pytest.raises(DataFormatError) as error:
        load_annotations(path, label_names=["jump", "throw", "swim", "dive", "row", "ski"])
    assert_names(error, "vid_7", str(path), "'run'", "'jump'", "6 labels")


@pytest.mark.parametrize("overrides, expected", [
    ({"fps": -30.0}, "fps must be a positive number"),
    ({"fps": "thirty"}, "fps must be a positive number"),
    ({"duration": 0}, "duration must be a positive number"),
    ({"subset": 3}, "subset must be a string"),
    ({"annotations": {"label": "run"}}, "must be a list"),
    ({"annotations": [{"label": "run", "label_id": 0, "segment": [2.0, 2.0]}]}, "must end after it starts"),
    ({"annotations": [{"label": "run", "label_id": 0, "segment": [5.0, 10.2]}]}, "outside the video [0, 10.0]"),
    ({"annotations": [{"label": "run", "label_id": 0, "segment": [-0.5, 1.0]}]}, "outside the video"),
    ({"annotations": [{"label": "run", "label_id": 0, "segment": [1.0]}]}, "must be [start_s, end_s]"),
    ({"annotations": [{"label": "run", "label_id": 0}]}, "missing keys ['segment']"),
])
def test_bad_video_entries(tmp_path: Path, overrides: dict, expected: str) -> None:
    path = write_json(tmp_path / "a.json", database(**overrides))
    with pytest.raises(DataFormatError) as error:
        load_annotations(path)
    assert_names(error, "vid_7", str(path), expected)


def test_missing_video_keys(tmp_path: Path) -> None:
    content = database()
    del content["database"]["vid_7"]["fps"]
    path = write_json(tmp_path / "a.json", content)
    with pytest.raises(DataFormatError) as error:
        load_annotations(path)
    assert_names(error, "vid_7", str(path), "missing keys ['fps']")


def test_segments_may_overhang_by_one_frame(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a.json", database(annotations=[{"label": "run", "label_id": 0,
                                                                   "segment": [-0.09, 10.09]}]))
    np.testing.assert_array_equal(load_annotations(path).videos["vid_7"].segments, [[-0.09, 10.09]])


@pytest.mark.parametrize("text, expected", [
    ("{not json", "not a readable annotation JSON"),
    ('{"videos": {}}', '"database"'),
    ('{"database": {"a": {}, "a": {}}}', "duplicate key 'a'"),
])
def test_bad_annotation_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "a.json"
    path.write_text(text)
    with pytest.raises(DataFormatError) as error:
        load_annotations(path)
    assert_names(error, str(path), expected)


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as error:
        load_annotations(tmp_path / "nope.json")
    assert_names(error, str(tmp_path / "nope.json"), "does not exist")


def test_unknown_subset_lists_the_subsets(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_annotations(path, videos(), LABELS)
    with pytest.raises(DataFormatError) as error:
        load_annotations(path).subset("training")
    assert_names(error, str(path), "'training'", "['test', 'validation']")
    # ActionFormer compares subset names case-insensitively (its THUMOS14 file says "Validation").
    annotations = load_annotations(path)
    assert [v.video_id for v in annotations.subset("Validation")] == [v.video_id for v in annotations.subset("validation")]


# Each case writes a bad array for a video of 4 s at 8 fps (32 frames).
VIDEO = VideoRecord("clip_3", "test", 4.0, 8.0, np.zeros((0, 2)), np.zeros(0))


def save(array: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.save(path, array)


def truncate(path: Path) -> None:
    np.save(path, np.zeros((32, 8), np.float32))
    path.write_bytes(path.read_bytes()[:-100])


def npz(path: Path) -> None:
    with path.open("wb") as file:
        np.savez(file, features=np.zeros((32, 8), np.float32))


@pytest.mark.parametrize("kind, write, expected", [
    ("features", lambda path: None, "does not exist"),
    ("features", truncate, "truncated or not a .npy"),
    ("features", lambda path: path.write_bytes(b"garbage" * 20), "truncated or not a .npy"),
    ("features", npz, "not a single .npy array"),
    ("features", save(np.array([{"a": 1}], dtype=object)), "truncated or not a .npy"),
    ("features", save(np.zeros((32, 8), np.float64)), "float64 [32, 8]; expected non-empty float32 features [T, C]"),
    ("features", save(np.zeros((32,), np.float32)), "expected non-empty float32 features [T, C]"),
    ("features", save(np.zeros((0, 8), np.float32)), "expected non-empty float32 features [T, C]"),
    ("frames", save(np.zeros((32, 16, 16), np.uint8)), "expected non-empty uint8 RGB frames [T, H, W, 3]"),
    ("frames", save(np.zeros((32, 16, 16, 4), np.uint8)), "uint8 [32, 16, 16, 4]"),
    ("frames", save(np.zeros((32, 16, 16, 3), np.float32)), "expected non-empty uint8 RGB frames"),
    ("frames", save(np.zeros((20, 16, 16, 3), np.uint8)), "has 20 frames; expected duration 4.0 s x 8.0 fps"),
])
def test_bad_video_arrays(tmp_path: Path, kind: str, write: Callable[[Path], None], expected: str) -> None:
    config = DataConfig(root=tmp_path, kind=kind)
    config.inputs_path.mkdir()
    path = config.inputs_path / "clip_3.npy"
    write(path)
    with pytest.raises(DataFormatError) as error:
        load_video_array(config, VIDEO)
    assert_names(error, "clip_3", str(path), expected)


@pytest.mark.parametrize("frames", [29, 32, 35])
def test_frame_count_within_tolerance(tmp_path: Path, frames: int) -> None:
    config = DataConfig(root=tmp_path, kind="frames")
    config.inputs_path.mkdir()
    np.save(config.inputs_path / "clip_3.npy", np.zeros((frames, 16, 16, 3), np.uint8))
    array = load_video_array(config, VIDEO)
    assert array.shape == (frames, 16, 16, 3) and isinstance(array, np.memmap)


def test_config_fps_overrides_the_annotations(tmp_path: Path) -> None:
    config = DataConfig(root=tmp_path, kind="frames", fps=4.0)
    config.inputs_path.mkdir()
    np.save(config.inputs_path / "clip_3.npy", np.zeros((16, 16, 16, 3), np.uint8))
    assert load_video_array(config, VIDEO).shape[0] == 16


def test_features_load(tmp_path: Path) -> None:
    config = DataConfig(root=tmp_path, kind="features", inputs_dir="i3d")
    config.inputs_path.mkdir()
    features = np.arange(32 * 8, dtype=np.float32).reshape(32, 8)
    np.save(config.inputs_path / "clip_3.npy", features)
    np.testing.assert_array_equal(load_video_array(config, VIDEO), features)


def test_thumos_grid_convention() -> None:
    # THUMOS14 I3D: 16-frame clips every 4 frames at 30 fps; 1 s = 30 / 4 - 16 / 8 = 5.5 positions.
    assert seconds_to_grid(1.0, fps=30, stride=4, clip=16) == pytest.approx(5.5)
    assert grid_to_seconds(5.5, fps=30, stride=4, clip=16) == pytest.approx(1.0)
    # A position sits at the centre of its clip: position 0 covers frames [0, 16), centre 8 / 30 s.
    assert seconds_to_grid(8 / 30, fps=30, stride=4, clip=16) == pytest.approx(0.0)


def test_grid_round_trip() -> None:
    seconds = np.random.default_rng(0).uniform(0, 300, size=(50, 2))
    for fps, stride, clip in [(30, 4, 16), (8, 1, 1), (10, 2, 2), (25, 8, 16)]:
        grid = seconds_to_grid(seconds, fps, stride, clip)
        assert grid.shape == seconds.shape
        np.testing.assert_allclose(grid_to_seconds(grid, fps, stride, clip), seconds)


def test_write_predictions(tmp_path: Path) -> None:
    path = tmp_path / "out" / "predictions.json"
    write_predictions(path, {"v1": [{"label": "run", "score": np.float32(0.75), "segment": np.array([1.0, 2.5])}],
                             "v2": []})
    assert json.loads(path.read_text()) == {
        "results": {"v1": [{"label": "run", "score": 0.75, "segment": [1.0, 2.5]}], "v2": []}}


def test_write_annotations_rejects_unknown_label_ids(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError) as error:
        write_annotations(tmp_path / "a.json", videos(), LABELS[:2])
    assert_names(error, "v1", "a.json", "[2]")


def test_a_batch_moves_what_a_forward_and_its_loss_read() -> None:
    import torch

    from tadmodels.data.dataset import Batch, Sample

    sample = Sample(video=None, inputs=torch.zeros(4, 3), length=4, segments=torch.zeros(1, 2),
                    labels=torch.zeros(1, dtype=torch.long), offset=0)
    batch = Batch([sample], torch.zeros(1, 4, 3), torch.ones(1, 4, dtype=torch.bool)).to(torch.device("meta"))
    assert {t.device.type for t in [batch.inputs, batch.mask, *batch.segments, *batch.labels]} == {"meta"}
    assert sample.segments.device.type == "cpu"  # the dataset's own samples stay where they were
