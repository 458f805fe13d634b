"""Synthetic datasets: determinism, readability by the format loaders, the presets' statistics,
and that no single time step reveals the class."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tadmodels.data import PRESETS, DataConfig, generate, load_annotations, load_video_array, make_timeline, render
from tadmodels.data.synthetic import PALETTE, Timeline, feature_length, make_prototypes


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("demo", tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("demo-features", tmp_path_factory.mktemp("demo-features"))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("preset", ["demo", "demo-features"])
def test_same_seed_same_bytes(tmp_path: Path, preset: str) -> None:
    first = files(generate(preset, tmp_path / "a", seed=3, max_videos=4))
    assert files(generate(preset, tmp_path / "b", seed=3, max_videos=4)) == first
    other = files(generate(preset, tmp_path / "c", seed=4, max_videos=4))
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first if name.endswith(".npy"))
    assert other["annotations.json"] != first["annotations.json"]


def test_max_videos_gives_a_prefix(tmp_path: Path) -> None:
    small = files(generate("demo-features", tmp_path / "small", max_videos=2))
    large = files(generate("demo-features", tmp_path / "large", max_videos=5))
    arrays = [name for name in small if name.endswith(".npy")]
    assert len(arrays) == 4  # two per subset
    assert all(small[name] == large[name] for name in arrays)
    small_db = json.loads(small["annotations.json"])["database"]
    large_db = json.loads(large["annotations.json"])["database"]
    assert all(large_db[video_id] == entry for video_id, entry in small_db.items())


@pytest.mark.parametrize("name", ["demo", "demo-features"])
def test_generated_dataset_reads_back(request: pytest.FixtureRequest, name: str) -> None:
    root: Path = request.getfixturevalue(name.replace("-", "_"))
    preset = PRESETS[name]
    facts = json.loads((root / "dataset.json").read_text())
    assert (facts["preset"], facts["kind"], facts["fps"]) == (name, preset.kind, preset.fps)
    assert facts["subsets"] == dict(preset.subsets)
    config = DataConfig.model_validate({**facts["data_config"], "root": root})
    assert config == preset.data_config(root)
    annotations = load_annotations(config.annotations_path, config.labels)
    assert annotations.label_names == preset.label_names == facts["label_names"]
    assert len(set(preset.label_names)) == preset.num_classes
    for subset, count in preset.subsets:
        assert len(annotations.subset(subset)) == count
    for video in annotations.videos.values():
        array = load_video_array(config, video)
        frames = round(video.duration * preset.fps)
        if preset.kind == "frames":
            assert array.shape == (frames, preset.frame_size, preset.frame_size, 3)
        else:
            assert array.shape == (feature_length(preset, frames), preset.channels)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_timelines_follow_the_preset(name: str) -> None:
    preset = PRESETS[name]
    gap = preset.min_gap_s * preset.fps
    for seed in range(30):
        timeline = make_timeline(preset, np.random.default_rng(seed))
        low, high = preset.video_seconds.low, preset.video_seconds.high
        assert low - 0.5 / preset.fps <= timeline.duration <= high + 0.5 / preset.fps
        assert preset.min_instances <= len(timeline.labels) <= (preset.max_instances or 10**6)
        assert np.all((timeline.labels >= 0) & (timeline.labels < preset.num_classes))
        lengths = np.diff(timeline.segments, axis=1)
        assert np.all(lengths >= preset.instance_seconds.low - 0.5 / preset.fps)
        assert np.all(lengths <= preset.instance_seconds.high + 0.5 / preset.fps)
        # Actions and distractors together: in order, apart by the gap, inside the video.
        intervals = np.concatenate([timeline.actions, timeline.distractors])
        intervals = intervals[np.argsort(intervals[:, 0])]
        bounds = np.concatenate([[0], intervals.reshape(-1), [timeline.num_frames]])
        assert np.all(np.diff(bounds)[::2] >= gap) and np.all(np.diff(bounds)[1::2] > 0)


def test_thumos_like_statistics() -> None:
    preset = PRESETS["thumos-like-features"]
    timelines = [make_timeline(preset, np.random.default_rng(seed)) for seed in range(413)]
    durations = np.array([t.duration for t in timelines])
    counts = np.array([len(t.labels) for t in timelines])
    lengths = np.concatenate([np.diff(t.segments, axis=1)[:, 0] for t in timelines])
    assert 150 <= np.median(durations) <= 210
    assert 13 <= counts.mean() <= 18
    assert 3.5 <= np.median(lengths) <= 4.5
    assert np.mean((lengths >= 1) & (lengths <= 10)) > 0.9
    assert len(np.unique(np.concatenate([t.labels for t in timelines]))) == 20


def test_demo_and_demo_features_share_timelines(demo: Path, demo_features: Path) -> None:
    frames = load_annotations(demo / "annotations.json")
    features = load_annotations(demo_features / "annotations.json")
    for video_id, video in frames.videos.items():
        np.testing.assert_array_equal(video.segments, features.videos[video_id].segments)
        np.testing.assert_array_equal(video.labels, features.videos[video_id].labels)


def one_action_timeline(label: int, fps: float) -> Timeline:
    """96 frames: one action of 40 frames (an even count, so its halves are equal) and a distractor."""
    return Timeline(num_frames=96, fps=fps, actions=np.array([[20, 60]]), labels=np.array([label]),
                    distractors=np.array([[75, 90]]))


INSIDE = slice(20, 60)


def test_features_one_step_does_not_reveal_the_order() -> None:
    preset = dataclasses.replace(PRESETS["demo-features"], feature_noise=0.0)
    prototypes = make_prototypes(preset, np.random.default_rng(0))
    for label in range(0, preset.num_classes, 2):
        forward, backward = (render(preset, one_action_timeline(c, preset.fps), np.random.default_rng(0), prototypes)
                             for c in (label, label + 1))
        # The same vectors in the opposite order: equal means, different first halves.
        np.testing.assert_allclose(forward[INSIDE].mean(0), backward[INSIDE].mean(0), atol=1e-6)
        np.testing.assert_allclose(forward[INSIDE], backward[INSIDE][::-1], atol=1e-6)
        assert np.linalg.norm(forward[20:40].mean(0) - backward[20:40].mean(0)) > 1.0
        assert np.abs(forward[:20]).max() == 0  # background is noise only, here none


def in_action_steps(preset_name: str, root: Path, half: bool = False) -> dict[int, np.ndarray]:
    """Every time step inside an action of each class (only the first halves with `half`)."""
    preset = PRESETS[preset_name]
    config = preset.data_config(root)
    annotations = load_annotations(config.annotations_path, config.labels)
    steps: dict[int, list[np.ndarray]] = {label: [] for label in range(preset.num_classes)}
    for video in annotations.videos.values():
        array = np.asarray(load_video_array(config, video))
        for (start, end), label in zip(np.round(video.segments * preset.fps).astype(int), video.labels):
            steps[label].append(array[start:(start + end) // 2 if half else end])
    return {label: np.concatenate(arrays) for label, arrays in steps.items()}


def test_features_dataset_mean_vector_is_order_free(demo_features: Path) -> None:
    steps = in_action_steps("demo-features", demo_features)
    first_half = in_action_steps("demo-features", demo_features, half=True)
    for label in range(0, len(steps), 2):
        assert np.linalg.norm(steps[label].mean(0) - steps[label + 1].mean(0)) < 0.2
        assert np.linalg.norm(first_half[label].mean(0) - first_half[label + 1].mean(0)) > 1.0


def bright(frame: np.ndarray) -> np.ndarray:
    return frame.max(axis=-1) > 128


def test_frames_one_frame_does_not_reveal_the_order() -> None:
    preset = dataclasses.replace(PRESETS["demo"], frame_noise=0.0)
    area = preset.square_size ** 2
    for label in range(0, preset.num_classes, 2):
        forward, backward = (render(preset, one_action_timeline(c, preset.fps), np.random.default_rng(1))
                             for c in (label, label + 1))
        first, second = (PALETTE[c][1] for c in preset.class_pairs[label])
        # Class (a, b) shows colour a, then b; (b, a) the same frames' colours in the other order.
        assert tuple(forward[20][bright(forward[20])][0]) == first
        assert tuple(forward[59][bright(forward[59])][0]) == second
        histograms = [sorted(tuple(np.bincount(f.reshape(-1), minlength=256)) for f in frames[INSIDE])
                      for frames in (forward, backward)]
        assert histograms[0] == histograms[1]
        assert all(bright(frame).sum() == area for frame in forward[INSIDE])
        # Distractors: the same square, one colour, standing still.
        assert np.array_equal(forward[75], forward[89]) and bright(forward[75]).sum() == area
        assert not bright(forward[:20]).any()


def test_frames_dataset_histograms_are_order_free(demo: Path) -> None:
    steps = in_action_steps("demo", demo)
    histograms = [np.bincount(frames.reshape(-1), minlength=256) / frames.size for frames in steps.values()]
    for label in range(0, len(histograms), 2):
        assert np.abs(histograms[label] - histograms[label + 1]).sum() < 0.03


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="demo-features"):
        generate("nope", tmp_path)


def test_presets_document_the_grid() -> None:
    thumos = PRESETS["thumos-like-features"]
    assert (thumos.channels, thumos.fps, thumos.feature_stride, thumos.clip_length) == (2048, 30.0, 4, 16)
    assert dict(thumos.subsets) == {"validation": 200, "test": 213} and thumos.num_classes == 20
    assert (PRESETS["demo-features"].feature_stride, PRESETS["demo-features"].clip_length) == (1, 1)
    assert PRESETS["thumos-like"].num_classes == 20 and len(set(PRESETS["thumos-like"].label_names)) == 20


def test_bench_generates_its_held_out_videos_last_and_names_them(tmp_path: Path) -> None:
    preset = PRESETS["bench"]
    assert [name for name, _ in preset.subsets] == ["validation", "test", "heldout"]
    root = generate("bench", tmp_path / "bench", max_videos=2)
    config = DataConfig.model_validate({**json.loads((root / "dataset.json").read_text())["data_config"], "root": root})
    assert (config.train_subset, config.test_subset, config.heldout_subset) == ("validation", "test", "heldout")
    annotations = load_annotations(config.annotations_path, config.labels)
    assert [v.video_id for v in annotations.subset("heldout")] == ["video_heldout_0000001", "video_heldout_0000002"]
    # Generated last from generators of their own: the training and test videos are those a
    # preset without held-out videos writes.
    PRESETS["bench-two-subsets"] = dataclasses.replace(preset, name="bench-two-subsets", subsets=preset.subsets[:2])
    try:
        before = files(generate("bench-two-subsets", tmp_path / "two", max_videos=2))
    finally:
        del PRESETS["bench-two-subsets"]
    after = files(root)
    assert all(after[name] == data for name, data in before.items() if name.endswith(".npy")) and len(before) == 6
    assert json.loads(after["annotations.json"])["database"].items() >= json.loads(before["annotations.json"])["database"].items()


@pytest.mark.parametrize("heldout", ["validation", "TEST"])
def test_a_held_out_subset_is_neither_the_training_nor_the_test_one(heldout: str) -> None:
    with pytest.raises(ValueError, match=f"heldout_subset: '{heldout}' is also data.(train|test)_subset"):
        DataConfig(root=Path("x"), kind="features", heldout_subset=heldout)
